"""Physics metrics as pure functions: numpy arrays in, numbers and arrays out.

- :mod:`fastsim.metrics.compare`: χ²/ndf, separation power, Wasserstein, mean/width ratios.
- :mod:`fastsim.metrics.response`: energy response and resolution per incident energy.
- :mod:`fastsim.metrics.shapes`: high-level shower features (centres of energy, widths, sparsity).
- :mod:`fastsim.metrics.classifier`: the two-sample classifier test, fastsim's quick settings and
  the official CaloChallenge ones (imports torch).
- :mod:`fastsim.metrics.calochallenge`: the official evaluation's readout threshold, classifier
  inputs and histogram binnings.
- :mod:`fastsim.metrics.fpd`: Fréchet and kernel physics distances (JetNet definitions).

Nothing heavy is imported here; import the submodule you need.
"""
