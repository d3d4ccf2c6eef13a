"""WGAN networks: a conditional generator and a conditional critic (plain ``nn.Module``s).

Defaults follow FastCaloGAN (ATLAS, Comput. Softw. Big Sci. 6 (2022) 7, arXiv:2109.02551): the
generator has hidden layers of 50, 100 and 200 nodes with swish activations and a ReLU output
(energy fractions are non-negative); the critic has three hidden layers as wide as the voxel
count, ReLU, a linear output and no batch normalisation (batch norm would make the critic's
output for one event depend on the others, which breaks the per-event gradient penalty).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fastsim.models.components.mlp import MLP


class Generator(nn.Module):
    """``G(z, c)``: noise and conditions to model-space voxels.

    Args:
        latent_dim: noise dimension.
        n_conditions: condition columns (column 0 the scaled incident energy).
        n_voxels: output voxels V.
        hidden: hidden widths.
        act: hidden activation.
        out_act: output activation; a non-negative one ("relu", "softplus") for energy fractions.

    Shapes: z (n, latent_dim), cond (n, n_conditions) -> (n, V).
    """

    def __init__(
        self,
        latent_dim: int,
        n_conditions: int,
        n_voxels: int,
        hidden: Sequence[int] = (50, 100, 200),
        act: str = "swish",
        out_act: str = "relu",
    ) -> None:
        super().__init__()
        self.net = MLP(latent_dim + n_conditions, hidden, n_voxels, act=act, out_act=out_act)

    def forward(self, z: Tensor, cond: Tensor) -> Tensor:
        return self.net(torch.cat([z, cond], dim=1))

    def last_linear(self) -> nn.Linear:
        """The output layer (before the output activation)."""
        return [m for m in self.net if isinstance(m, nn.Linear)][-1]


class Critic(nn.Module):
    """``h(x, c)``: the WGAN critic, an unbounded real score per event.

    Args:
        n_voxels: input voxels V.
        n_conditions: condition columns.
        hidden: hidden widths (FastCaloGAN: three layers of V nodes).
        act: hidden activation.

    Shapes: x (n, V), cond (n, n_conditions) -> (n,).
    """

    def __init__(self, n_voxels: int, n_conditions: int, hidden: Sequence[int], act: str = "relu") -> None:
        super().__init__()
        self.net = MLP(n_voxels + n_conditions, hidden, 1, act=act, out_act="none")

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        return self.net(torch.cat([x, cond], dim=1)).squeeze(1)
