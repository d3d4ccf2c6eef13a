"""Data: CaloChallenge HDF5 I/O, ROOT readers, invertible transforms, training tensors.

Submodules are imported explicitly (``from fastsim.data.hdf5 import ShowerWriter``); this package
imports nothing at load time so that ``import fastsim.data`` stays free of torch.
"""
