"""Residual RL: a specialist per robot learned by stable-baselines3 on top of a frozen imitation base.

`training.rl.train.ResidualRL` runs one `alloy rl` job; `training.rl.vec_env.ResidualVecEnv` is the SB3 view of
alloy's vector envs with the base inside; `training.rl.algos` builds SB3's PPO/SAC as residual learners and saves
their state without pickling. The trained specialist is a `policies.residual.ResidualPolicy` checkpoint.
"""
