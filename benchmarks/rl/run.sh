#!/usr/bin/env bash
# Residual RL benchmark: a PPO specialist per robot on the imitation base (robot recipes in configs/robot/), then,
# on diffdrive, PPO from scratch (no base) and a SAC residual on the comparison budget. Each run writes rl.json,
# learning_curve.png and final_eval/ (200 episodes, seeds from 0) under $OUT/<name>. Two chains of runs share the
# machine (each run steps its envs in this process and one worker: about one core each).
#   bash benchmarks/rl/run.sh <base checkpoint or artifact> [total_steps] [comparison_steps]
set -euo pipefail
BASE=${1:?usage: run.sh <base checkpoint dir or artifact> [total_steps] [comparison_steps]}
STEPS=${2:-500000}
COMPARE=${3:-300000}
OUT=${OUT:-runs/rl}
COMMON=(eval_every=25000 eval_episodes=50 final_eval_episodes=200 progress=false)
run() { alloy rl "$@" "${COMMON[@]}"; }
(run robot=diffdrive base="$BASE" total_steps=$STEPS hydra.run.dir=$OUT/ppo_diffdrive
 run robot=skidsteer base="$BASE" total_steps=$STEPS hydra.run.dir=$OUT/ppo_skidsteer
 run robot=diffdrive base=none total_steps=$COMPARE hydra.run.dir=$OUT/scratch_diffdrive) &
(run robot=ackermann base="$BASE" total_steps=$STEPS hydra.run.dir=$OUT/ppo_ackermann
 run robot=diffdrive base="$BASE" algo=sac total_steps=$COMPARE hydra.run.dir=$OUT/sac_diffdrive) &
wait
