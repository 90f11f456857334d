"""Package discovery: the code packages, plus configs/ and sim_assets/ shipped as data packages."""

from setuptools import find_packages, setup

CODE = find_packages(include=["alloy", "alloy.*", "envs", "envs.*", "policies", "policies.*",
                              "training", "training.*", "distill", "distill.*"])
DATA = {"alloy._configs": "configs", "envs._sim_assets": "sim_assets"}

setup(packages=CODE + list(DATA), package_dir=DATA)
