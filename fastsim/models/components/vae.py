"""VAE networks: a Gaussian encoder q(z|x,c) and a decoder for p(x|z,c) (plain ``nn.Module``s).

The decoder outputs the parameters of a zero-inflated log-normal per voxel (see
:func:`fastsim.models.losses.zero_inflated_lognormal_log_prob`): the logit of the probability that
the voxel is empty, and the mean and log standard deviation of log(x) for a non-empty voxel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fastsim.models.components.mlp import MLP

#: bounds on the decoder's log σ of log(x): below e^-7 the density spikes and the ELBO becomes
#: numerically meaningless; above e^3 a voxel spans 20 orders of magnitude.
LOG_SIGMA_MIN, LOG_SIGMA_MAX = -7.0, 3.0
#: bound on the encoder's log variance, for the same reason (exp overflow in early training).
LOGVAR_MIN, LOGVAR_MAX = -16.0, 8.0


class Encoder(nn.Module):
    """``q(z | x, c) = N(μ, diag σ²)``.

    Shapes: x (n, V), cond (n, C) -> (mu (n, latent_dim), logvar (n, latent_dim)).
    """

    def __init__(
        self, n_voxels: int, n_conditions: int, latent_dim: int, hidden: Sequence[int], act: str = "silu"
    ) -> None:
        super().__init__()
        self.net = MLP(n_voxels + n_conditions, hidden, 2 * latent_dim, act=act, out_act="none")

    def forward(self, x: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.net(torch.cat([x, cond], dim=1)).chunk(2, dim=1)
        return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)


class Decoder(nn.Module):
    """``p(x | z, c)``: per-voxel zero-inflated log-normal parameters.

    Shapes: z (n, latent_dim), cond (n, C) -> (zero_logit, mu, log_sigma), each (n, V), where
    ``sigmoid(zero_logit)`` is P(voxel empty) and ``log x ~ N(mu, exp(log_sigma)²)`` otherwise.
    """

    def __init__(
        self, latent_dim: int, n_conditions: int, n_voxels: int, hidden: Sequence[int], act: str = "silu"
    ) -> None:
        super().__init__()
        self.net = MLP(latent_dim + n_conditions, hidden, 3 * n_voxels, act=act, out_act="none")

    def forward(self, z: Tensor, cond: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        zero_logit, mu, log_sigma = self.net(torch.cat([z, cond], dim=1)).chunk(3, dim=1)
        return zero_logit, mu, log_sigma.clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)


def decode_median(zero_logit: Tensor, mu: Tensor) -> Tensor:
    """A deterministic shower from decoder outputs: the most likely of empty/non-empty per voxel,
    and the median ``exp(mu)`` of the log-normal for non-empty voxels.

    Deterministic so that ``generate`` and the exported ONNX graph are the same function of the
    latent noise; the median (not the mean ``exp(mu + σ²/2)``) keeps a wide σ from inflating the
    energy. Shapes (n, V) -> (n, V), >= 0.
    """
    return torch.where(zero_logit > 0, torch.zeros_like(mu), torch.exp(mu))
