"""Generator systems (Lightning) and their networks; ``load_generator`` loads any of them.

Import from the submodules (``fastsim.models.wgan_gp``, ``fastsim.models.io``): this package
file imports nothing heavy, so ``import fastsim.models`` stays cheap.
"""
