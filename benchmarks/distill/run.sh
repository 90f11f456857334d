#!/usr/bin/env bash
# Distillation benchmark: the residual specialists (benchmarks/rl/run.sh) and the base into one generalist, DAgger
# and offline on the same budget of episodes and training steps, a Gaussian MLP student (KL) and a DiT student.
#   bash benchmarks/distill/run.sh <base> <rl runs dir>      (writes runs/distill/<name>/report.md)
#   RUNS="dagger_mlp offline_mlp" PARALLEL=1 bash benchmarks/distill/run.sh ...   (a subset, side by side)
#   ROUNDS=6 EPISODES_PER_ROUND=16 STEPS_PER_ROUND=1500 bash benchmarks/distill/run.sh ...   (a smaller budget)
#   COMPARE=false bash benchmarks/distill/run.sh ...   (no run evaluates the base and specialists beside its student)
set -euo pipefail
BASE=${1:?usage: run.sh <base checkpoint or artifact> <rl runs dir>}
RL=${2:?usage: run.sh <base> <rl runs dir>}
OUT=${OUT:-runs/distill}
EPISODES=${EPISODES:-200}
mkdir -p "$OUT"
SPECIALISTS="[\"alloy/Nav-Holonomic-v0=$BASE\",\"$RL/ppo_diffdrive/checkpoints/best\",\"$RL/ppo_ackermann/checkpoints/best\",\"$RL/ppo_skidsteer/checkpoints/best\"]"
VARIANTS='[{name:diffdrive_long_slow,env:"alloy/Nav-Diffdrive-v0",kwargs:{wheel_base:0.35,max_speed:0.65},in_range:true},{name:ackermann_light,env:"alloy/Nav-Ackermann-v0",kwargs:{mass:4.5,steering_limit:0.45},in_range:true},{name:skidsteer_heavy,env:"alloy/Nav-Skidsteer-v0",kwargs:{mass:38.0},in_range:true},{name:diffdrive_slow,env:"alloy/Nav-Diffdrive-v0",kwargs:{max_speed:0.4},in_range:false},{name:skidsteer_very_heavy,env:"alloy/Nav-Skidsteer-v0",kwargs:{mass:55.0},in_range:false}]'
THREADS=${THREADS:-$([ "${PARALLEL:-0}" = 1 ] && echo 1 || echo 0)}  # side by side: one torch thread each
COMMON=(threads=$THREADS rounds=${ROUNDS:-8} episodes_per_round=${EPISODES_PER_ROUND:-24} steps_per_round=${STEPS_PER_ROUND:-2000} eval_episodes=$EPISODES "variants=$VARIANTS" progress=false trainer.progress=false ${COMPARE:+compare=$COMPARE})
declare -A ARGS=(
  [dagger_mlp]="student=gaussian_mlp method=dagger compare=true"
  [offline_mlp]="student=gaussian_mlp method=offline compare=false"
  [dagger_dit]="student=dit_stream method=dagger compare=false"
)
# RUNS picks and orders the runs; PARALLEL=1 runs them side by side (one core each)
for name in ${RUNS:-dagger_mlp offline_mlp dagger_dit}; do
  # shellcheck disable=SC2086
  cmd=(alloy distill "specialists=$SPECIALISTS" ${ARGS[$name]} "${COMMON[@]}" hydra.run.dir=$OUT/$name)
  if [ "${PARALLEL:-0}" = 1 ]; then "${cmd[@]}" > "$OUT/$name.log" 2>&1 & else "${cmd[@]}"; fi
done
wait
