"""alloy: diffusion-transformer policies for robot imitation learning and policy distillation."""

__version__ = "0.1.0"
