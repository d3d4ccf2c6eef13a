"""Physics metrics as pure functions: numpy arrays in, numbers and arrays out.

- :mod:`fastsim.metrics.compare`: χ²/ndf, separation power, Wasserstein, mean/width ratios.
- :mod:`fastsim.metrics.response`: energy response and resolution per incident energy.
- :mod:`fastsim.metrics.shapes`: high-level shower features (centres of energy, widths, sparsity).
- :mod:`fastsim.metrics.classifier`: the CaloChallenge two-sample classifier test (imports torch).

Nothing heavy is imported here; import the submodule you need.
"""
