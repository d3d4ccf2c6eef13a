"""VAE networks: a Gaussian encoder q(z|x,c) and a decoder for p(x|z,c) (plain ``nn.Module``s).

The decoder outputs the parameters of a zero-inflated log-normal per voxel (see
:func:`fastsim.models.losses.zero_inflated_lognormal_log_prob`): the logit of the probability that
the voxel is empty, and the mean and log standard deviation of log(x) for a non-empty voxel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fastsim.models.components.mlp import MLP

#: bounds on the decoder's log σ of log(x): below e^-7 the density spikes and the ELBO becomes
#: numerically meaningless; at e^1 one σ already spans a factor 15 in energy, and the mean
#: exp(μ + σ²/2) used for generation stays finite (factor ≤ e^3.7 over the median).
LOG_SIGMA_MIN, LOG_SIGMA_MAX = -7.0, 1.0
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
        # start from a physical shower: every voxel holds ~1/V of the incident energy, so that
        # E_tot/E_inc starts near 1 instead of ~V (log x ~ 0) and the first steps are not spent
        # pulling every voxel down by orders of magnitude
        last = self.net[-2]
        with torch.no_grad():
            last.bias[n_voxels : 2 * n_voxels].fill_(-math.log(n_voxels))

    def forward(self, z: Tensor, cond: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        zero_logit, mu, log_sigma = self.net(torch.cat([z, cond], dim=1)).chunk(3, dim=1)
        return zero_logit, mu, log_sigma.clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)


class EnergyHead(nn.Module):
    """``p(u | z, c) = N(μ_u, σ_u²)`` for the shower's standardised total energy ``u``
    (:class:`fastsim.models.components.features.EnergyFeatures`).

    Shapes: z (n, latent_dim), cond (n, C) -> (mu (n,), log_sigma (n,)).
    """

    def __init__(self, latent_dim: int, n_conditions: int, hidden: Sequence[int], act: str = "silu") -> None:
        super().__init__()
        self.net = MLP(latent_dim + n_conditions, hidden, 2, act=act, out_act="none")

    def forward(self, z: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        mu, log_sigma = self.net(torch.cat([z, cond], dim=1)).unbind(1)
        return mu, log_sigma.clamp(LOG_SIGMA_MIN, 3.0)


def decode_mean(zero_logit: Tensor, mu: Tensor, log_sigma: Tensor) -> Tensor:
    """The decoder's conditional expectation ``E[x | z, c] = (1 − π) exp(μ + σ²/2)`` per voxel.

    Generation is a deterministic function of the latent noise (so that ``generate`` and the
    exported ONNX graph, whose only random input is the latent noise, agree). The expectation keeps
    the energy scale unbiased; it does not reproduce per-voxel fluctuations or exact zeros.
    Shapes (n, V) -> (n, V), >= 0.
    """
    return torch.sigmoid(-zero_logit) * torch.exp(mu + 0.5 * torch.exp(2.0 * log_sigma))


def decode_median(zero_logit: Tensor, mu: Tensor, log_sigma: Tensor | None = None) -> Tensor:
    """A "most likely" shower: 0 where P(empty) > ½, else the log-normal median ``exp(μ)``.

    Keeps empty voxels empty, but biases the energy wherever a voxel is often but not mostly empty
    (and by the median/mean ratio ``exp(−σ²/2)``). Shapes (n, V) -> (n, V), >= 0.
    """
    return torch.where(zero_logit > 0, torch.zeros_like(mu), torch.exp(mu))


def decode_sample(
    zero_logit: Tensor, mu: Tensor, log_sigma: Tensor, eps_zero: Tensor, eps_value: Tensor
) -> Tensor:
    """A draw from p(x | z, c) given standard-normal noise: the voxel is empty when
    ``Φ(eps_zero) < π`` (probability π), else ``exp(μ + σ·eps_value)``.

    Written with ``erf`` so that the ONNX graph carries it. Values are capped at 1 (a voxel
    cannot hold more than the incident energy: the log-normal's far tail would otherwise give
    showers many times E_inc). Shapes: all (n, V) -> (n, V), >= 0.
    """
    p_empty = torch.sigmoid(zero_logit)
    u = 0.5 * (1.0 + torch.erf(eps_zero * (1.0 / math.sqrt(2.0))))
    value = torch.exp(mu + torch.exp(log_sigma) * eps_value).clamp(max=1.0)
    return torch.where(u < p_empty, torch.zeros_like(value), value)


def decode_sample_zeros(zero_logit: Tensor, mu: Tensor, log_sigma: Tensor, eps_zero: Tensor) -> Tensor:
    """The zero mask drawn from p(x | z, c), the values of the filled voxels at their mean: a voxel is
    empty when ``Φ(eps_zero) < π``, else ``exp(μ + σ²/2)`` (capped at 1).

    Sparse like a Geant4 shower (each voxel empty with its own probability π) without the
    log-normal's per-voxel spread. Without the energy head, drawing that spread doubled the
    resolution; with it the shape is renormalised to the head's E_tot and the drawn spread is
    what matches Geant4 after the readout threshold (``decode="sample"``, docs/results.md).
    Shapes: all (n, V) -> (n, V), >= 0.
    """
    p_empty = torch.sigmoid(zero_logit)
    u = 0.5 * (1.0 + torch.erf(eps_zero * (1.0 / math.sqrt(2.0))))
    value = torch.exp(mu + 0.5 * torch.exp(2.0 * log_sigma)).clamp(max=1.0)
    return torch.where(u < p_empty, torch.zeros_like(value), value)


#: ShowerVAE's deterministic ``decode`` options ("sample" draws from the likelihood, see decode_sample)
DECODERS = {"mean": decode_mean, "median": decode_median}
