"""Packaging details pyproject.toml cannot express: the top-level ``configs/`` folder is shipped
inside the package as ``fastsim/configs`` (without moving it in the repository), so an installed
fastsim has its configs (``fastsim config``, ``fastsim fit --config wgan_gp``, ``fastsim demo``)."""

from setuptools import find_namespace_packages, setup

setup(
    packages=[*find_namespace_packages(include=["fastsim", "fastsim.*"]), "fastsim.configs"],
    package_dir={"fastsim.configs": "configs"},
)
