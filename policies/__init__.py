"""Diffusion policies: denoisers x diffusion processes x action schemes, behind one Policy API."""
