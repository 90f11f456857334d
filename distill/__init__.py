"""Distillation: specialists into a generalist, and diffusion step distillation."""
