#!/usr/bin/env bash
# Residual RL benchmark: a PPO specialist per robot on the imitation base, then (diffdrive) PPO from scratch and a
# SAC residual on the same budget. Each run writes rl.json, learning_curve.png and final_eval/ under runs/rl/<name>.
#   bash benchmarks/rl/run.sh <base checkpoint> [total_steps]
set -euo pipefail
BASE=${1:?usage: run.sh <base checkpoint dir> [total_steps]}
STEPS=${2:-300000}
OUT=${OUT:-runs/rl}
for robot in diffdrive ackermann skidsteer; do
  alloy rl robot=$robot base="$BASE" total_steps=$STEPS eval_every=25000 eval_episodes=50 progress=false \
    hydra.run.dir=$OUT/ppo_$robot
done
alloy rl robot=diffdrive base=none total_steps=$STEPS eval_every=25000 eval_episodes=50 progress=false \
  hydra.run.dir=$OUT/scratch_diffdrive
alloy rl robot=diffdrive base="$BASE" algo=sac total_steps=$STEPS eval_every=25000 eval_episodes=50 progress=false \
  hydra.run.dir=$OUT/sac_diffdrive
