"""Benchmarks that measure more than one package at once, so they can live only above all of them.

`alloy.benchmarks.inference` trains, distils and times every action scheme (it needs `training` and `distill`).
A benchmark of one package lives in that package (`envs/nav/bench.py`, `training/data_bench.py`, ...); the
command modules `alloy/commands/bench_<what>.py` are thin wrappers either way.
"""
