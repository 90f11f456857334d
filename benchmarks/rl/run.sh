#!/usr/bin/env bash
# Residual RL benchmark: a PPO specialist per robot on the imitation base (robot recipes in configs/robot/), then,
# on diffdrive, PPO from scratch (no base) and a SAC residual on the comparison budget. Each run writes rl.json,
# learning_curve.png and final_eval/ (200 episodes, seeds from 0) under $OUT/<name>. Three chains of runs share the
# machine, one per robot (each run steps its envs in this process and one worker).
#   bash benchmarks/rl/run.sh <base checkpoint or artifact> [total_steps] [comparison_steps]
#   STEPS_DIFFDRIVE=500000 bash benchmarks/rl/run.sh ...   (one robot's budget; COMPARE=0 skips the comparisons)
set -euo pipefail
BASE=${1:?usage: run.sh <base checkpoint dir or artifact> [total_steps] [comparison_steps]}
STEPS=${2:-1000000}
COMPARE=${3:-300000}
OUT=${OUT:-runs/rl}
COMMON=(eval_every=${EVAL_EVERY:-25000} eval_episodes=50 final_eval_episodes=200 progress=false)
run() { alloy rl "$@" "${COMMON[@]}"; }
(run robot=diffdrive base="$BASE" total_steps="${STEPS_DIFFDRIVE:-$STEPS}" hydra.run.dir="$OUT/ppo_diffdrive"
 if [ "$COMPARE" != 0 ]; then
   run robot=diffdrive base=none total_steps="$COMPARE" hydra.run.dir="$OUT/scratch_diffdrive"
 fi) &
(run robot=ackermann base="$BASE" total_steps="${STEPS_ACKERMANN:-$STEPS}" hydra.run.dir="$OUT/ppo_ackermann") &
(run robot=skidsteer base="$BASE" total_steps="${STEPS_SKIDSTEER:-$STEPS}" hydra.run.dir="$OUT/ppo_skidsteer"
 if [ "$COMPARE" != 0 ]; then
   run robot=diffdrive base="$BASE" algo=sac total_steps="$COMPARE" hydra.run.dir="$OUT/sac_diffdrive"
 fi) &
wait
