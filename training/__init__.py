"""Training: datasets, imitation learning, rollout evaluation, checkpoints."""
