#!/usr/bin/env bash
# GPU smoke benchmark for the diffusion-policy core (under 5 minutes on one modern GPU):
#   1. collects 10 scripted demonstrations for each of 3 Meta-World tasks into a throwaway data directory,
#   2. trains DiT, MDT, MoDE (EDM) and the MLP baseline with bf16 autocast on CUDA,
#   3. evaluates each final EMA checkpoint (10 episodes per task) and times act() per chunk for several samplers,
#   4. prints one table and writes everything to $OUT (default: a fresh temp dir).
# Usage: benchmarks/gpu_smoke.sh            # on a CUDA machine
#        benchmarks/gpu_smoke.sh --cpu      # dry check of the same steps on CPU (tiny step counts)
#        SMOKE_DATA=dir benchmarks/gpu_smoke.sh   # reuse demonstrations collected elsewhere (an ALLOY_DATA_DIR with
#                                                 # metaworld/<task>/expert-v0 for the three tasks) instead of collecting
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

DEVICE=cuda; STEPS=${STEPS:-1500}; EPISODES=${EPISODES:-10}; BATCH=${BATCH:-256}; WORKERS=${WORKERS:-8}
if [ "${1:-}" = "--cpu" ]; then DEVICE=cpu; STEPS=20; EPISODES=2; BATCH=32; WORKERS=2; fi
if [ "$DEVICE" = cuda ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: no CUDA device visible to torch; run with --cpu for a dry check" >&2; exit 2
fi
OUT=${OUT:-$(mktemp -d -t alloy-gpu-smoke-XXXX)}
mkdir -p "$OUT"
export ALLOY_DATA_DIR="$OUT/data" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export MUJOCO_GL=${MUJOCO_GL:-$( [ "$DEVICE" = cuda ] && echo egl || echo osmesa )}
TASKS="reach-v3 drawer-close-v3 button-press-topdown-v3"
START=$(date +%s)
echo "alloy gpu smoke: device=$DEVICE steps=$STEPS batch=$BATCH episodes=$EPISODES out=$OUT"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"

# 1. data (a script file, not stdin: the collection workers are spawned processes that re-import it)
cat > "$OUT/collect_demos.py" <<'PYEOF'
import sys, time
from training.collect import collect, select_targets

if __name__ == "__main__":
    t0 = time.perf_counter()
    targets = select_targets("metaworld_mt50", tasks=sys.argv[2:], name="expert")
    res = collect(targets, episodes=10, seed=0, workers=int(sys.argv[1]), progress=False)
    print(f"collected {sum(r.kept for r in res)} demos ({sum(r.steps for r in res)} steps) in {time.perf_counter() - t0:.1f} s")
PYEOF
if [ -n "${SMOKE_DATA:-}" ]; then
    cp -r "$SMOKE_DATA" "$ALLOY_DATA_DIR" && echo "reusing the demonstrations in $SMOKE_DATA"
else
    PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PY" "$OUT/collect_demos.py" "$WORKERS" $TASKS
fi

# 2-3. train + evaluate each denoiser (evaluation runs at the last step and selects checkpoints/best)
COMMON=("dataset=metaworld/*/expert-v0" "device=$DEVICE" "trainer.max_steps=$STEPS" "trainer.batch_size=$BATCH"
        "trainer.lr=3e-4" "trainer.warmup_steps=100" "trainer.eval_every=$STEPS" "trainer.eval_episodes=$EPISODES"
        "trainer.eval_num_envs=$WORKERS" "trainer.num_workers=2" "trainer.log_every=100" "trainer.progress=false"
        "policy.pred_horizon=4" "scheme.action_horizon=2" "policy.d_model=128" "policy.n_layers=4" "policy.n_enc_layers=2")
for run in "dit diffusion=ddim" "mdt diffusion=edm" "mode diffusion=edm" "mlp diffusion=regression"; do
    set -- $run
    echo "--- train $1 ($2)"
    "$PY" -m alloy.cli train "${COMMON[@]}" "policy=$1" "$2" "hydra.run.dir=$OUT/runs/$1" 2>&1 | grep -v "^\[" | tail -2
done

# 3b. act() latency per chunk (GPU-synchronised) for several samplers on the MoDE checkpoint
"$PY" - "$OUT" "$DEVICE" <<'PYEOF'
import json, sys, time, dataclasses
import numpy as np, torch
from policies import Policy
from policies.policy import read_checkpoint
out, device = sys.argv[1], sys.argv[2]
spec, tensors = read_checkpoint(f"{out}/runs/mode/checkpoints/last")
rows = {}
for name, diff in [("edm-10 euler", dict(name="edm", num_inference_steps=10)),
                   ("edm-5 dpm_solver_2", dict(name="edm", num_inference_steps=5, sampler="dpm_solver_2")),
                   ("edm-3 euler", dict(name="edm", num_inference_steps=3))]:
    s = dataclasses.replace(spec, diffusion=dataclasses.replace(spec.diffusion, **{k: v for k, v in diff.items() if k != "name"}))
    p = Policy(s); p.load_state_dict(tensors); p.to(device).eval()
    obs = {k: np.zeros((16, d[0]), np.float32) for k, d in p.obs_spec.items()}
    obs["task"][:, 0] = 1
    times = []
    for i in range(30):
        p.reset()
        if device == "cuda": torch.cuda.synchronize()
        t = time.perf_counter(); p.act(obs)
        if device == "cuda": torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    rows[name] = float(np.median(times[5:]) * 1e3)
json.dump(rows, open(f"{out}/act_latency_ms.json", "w"), indent=2)
PYEOF

# 4. the table
"$PY" - "$OUT" "$(( $(date +%s) - START ))" <<'PYEOF'
import json, sys
out, total = sys.argv[1], sys.argv[2]
print(f"\n{'policy':<6} {'steps':>6} {'train s':>8} {'samples/s':>10} {'success':>8}")
for net in ("dit", "mdt", "mode", "mlp"):
    m = json.load(open(f"{out}/runs/{net}/metrics.json"))
    best = m["best"].get("success_rate")
    print(f"{net:<6} {m['step']:>6} {m['train_wall_s']:>8.1f} {m['samples_per_s']:>10.0f} {best if best is None else f'{best:.3f}':>8}")
print("\nMoDE act() per chunk, 16 envs (median ms):")
for k, v in json.load(open(f"{out}/act_latency_ms.json")).items():
    print(f"  {k:<20} {v:8.2f}")
print(f"\ntotal wall time {total} s; everything is under {out}")
PYEOF
