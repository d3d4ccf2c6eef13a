"""Training: ``fastsim fit`` (LightningCLI) and its callbacks (χ² model selection, divergence guard)."""
