"""fastsim: fast calorimeter shower simulation with PyTorch Lightning.

Importing the package is cheap on purpose: torch and lightning are imported by the
submodules that need them, never here.
"""

from fastsim.errors import FastsimError, InputFileError
from fastsim.geometry import Geometry

__version__ = "0.1.0"

__all__ = ["FastsimError", "Geometry", "InputFileError", "__version__"]
