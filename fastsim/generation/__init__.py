"""Generation: ``fastsim generate`` (streamed, atomic CaloChallenge HDF5) and ``fastsim export`` (ONNX).

Importing this package does not import torch or lightning; the functions do when called.

- :mod:`fastsim.generation.energies`: which incident energies to generate (pure, seeded).
- :mod:`fastsim.generation.batches`: device choice, per-batch seeds, one batch, the ranks' shares.
- :mod:`fastsim.generation.runinfo`: provenance and timing attributes, :class:`GenerateResult`.
- :mod:`fastsim.generation.generate`: :func:`generate_showers` (one device) and
  :func:`generate_showers_distributed` (several devices, Lightning predict loop).
- :mod:`fastsim.generation.writer`: the predict-loop shard writer (shards are merged by
  :func:`fastsim.data.shards.merge_shards`).
- :mod:`fastsim.generation.export`: :func:`export_onnx`.
"""

from fastsim.generation.energies import (
    ArrayEnergies,
    DiscreteEnergies,
    EnergyPlan,
    LogUniformEnergies,
)
from fastsim.generation.generate import GenerateResult, generate_showers, generate_showers_distributed

__all__ = [
    "ArrayEnergies",
    "DiscreteEnergies",
    "EnergyPlan",
    "GenerateResult",
    "LogUniformEnergies",
    "generate_showers",
    "generate_showers_distributed",
]
