"""Diagnostic: how far a hand-written residual on the frozen base gets on a robot that cannot strafe.

The base commands a holonomic velocity (vx, vy, yaw rate); a robot that cannot strafe drops vy. The analytic
correction turns the robot to face the direction the base wants to translate in and drives forward along it:
command = (|v_base| max(cos th, 0), 0, clip(K th)), th = atan2(vy, vx) of the base's command. If this simple map
succeeds where PPO's residual does not, the information is in the residual's inputs and the RL recipe is at fault.

    python benchmarks/rl/analytic_residual.py <base checkpoint or artifact> [--env alloy/Nav-Skidsteer-v0]
        [--gain 1.5 3] [--episodes 30] [--seed 1000] [--out analytic_residual.json]
"""

from __future__ import annotations

import argparse
import json
import math

import gymnasium as gym
import numpy as np

import envs  # noqa: F401 - registers the nav envs
from policies.interface import observation_for
from training.evaluation import load_policy


def run(base, env_id: str, gain: float, episodes: int, seed: int) -> dict:
    env = gym.make(env_id)
    counts = {"success": 0, "collision": 0, "timeout": 0}
    try:
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed + ep)
            base.reset()
            while True:
                a = np.asarray(base.act(observation_for(base, {k: v[None] for k, v in obs.items()})))[0]
                th, speed = math.atan2(a[1], a[0]), math.hypot(a[0], a[1])
                cmd = np.array([speed * max(math.cos(th), 0.0), 0.0, np.clip(gain * th, -1.0, 1.0)], np.float32)
                obs, _, terminated, truncated, info = env.step(cmd)
                if terminated or truncated:
                    key = "success" if info["is_success"] else "collision" if info["collision"] else "timeout"
                    counts[key] += 1
                    break
    finally:
        env.close()
    return {"env": env_id, "gain": gain, "episodes": episodes, "seed": seed, **counts,
            "success_rate": counts["success"] / episodes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base")
    ap.add_argument("--env", default="alloy/Nav-Skidsteer-v0")
    ap.add_argument("--gain", type=float, nargs="+", default=[1.5, 3.0])
    ap.add_argument("--episodes", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--out", default="analytic_residual.json")
    args = ap.parse_args()
    base = load_policy(args.base, "cpu")
    rows = [run(base, args.env, g, args.episodes, args.seed) for g in args.gain]
    for r in rows:
        print(f"{r['env']} gain {r['gain']}: {r['success_rate']:.0%} success ({r['collision']} collisions, "
              f"{r['timeout']} timeouts of {r['episodes']})")
    with open(args.out, "w") as f:
        json.dump({"base": args.base, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
