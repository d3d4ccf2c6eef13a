"""Loss terms as pure functions of tensors (and, for the penalty, a critic callable).

WGAN: Arjovsky et al. 2017 (weight clipping), Gulrajani et al. 2017 (two-sided gradient
penalty), Petzka et al. 2018 (one-sided penalty). VAE: Kingma & Welling 2014; importance-weighted
log-likelihood estimate of Burda et al. 2016.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

_LOG_2PI = math.log(2.0 * math.pi)


# --------------------------------------------------------------------------- WGAN


def critic_loss(h_real: Tensor, h_fake: Tensor) -> Tensor:
    """``mean h(G(z)) - mean h(x)``: the critic minimises minus its Wasserstein estimate.

    Shapes: h_real (n,), h_fake (m,) -> scalar.
    """
    return h_fake.mean() - h_real.mean()


def generator_loss(h_fake: Tensor) -> Tensor:
    """``-mean h(G(z))``. Shape (n,) -> scalar."""
    return -h_fake.mean()


def gradient_penalty(
    critic: Callable[[Tensor, Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    cond: Tensor,
    t: Tensor,
    one_sided: bool = False,
) -> tuple[Tensor, Tensor]:
    """Gradient penalty on ``x̂ = t·x + (1−t)·G(z)`` (without the λ factor).

    The gradient is taken with respect to the voxel input only; the condition is held fixed,
    because the Lipschitz constraint of the Kantorovich dual is on x at fixed condition.

    Args:
        critic: ``h(x, cond) -> (n,)``.
        real: real events (n, V).
        fake: generated events (n, V), detached from the generator.
        cond: conditions (n, C).
        t: interpolation weights (n, 1), U(0, 1) per event.
        one_sided: ``max(0, ‖∇h‖ − 1)²`` instead of ``(‖∇h‖ − 1)²``.

    Returns:
        (penalty, mean gradient norm): scalars; the penalty keeps its graph (create_graph) so
        that it can be back-propagated into the critic's weights.
    """
    x_hat = (t * real + (1.0 - t) * fake).detach().requires_grad_(True)
    h = critic(x_hat, cond)
    (grad,) = torch.autograd.grad(h.sum(), x_hat, create_graph=True)
    # the small constant keeps the backward of sqrt finite where a gradient is exactly zero
    norm = torch.sqrt(grad.pow(2).sum(dim=1) + 1e-12)
    excess = norm - 1.0
    if one_sided:
        excess = torch.clamp(excess, min=0.0)
    return excess.pow(2).mean(), norm.detach().mean()


@torch.no_grad()
def clip_weights_(module: nn.Module, clip_value: float) -> None:
    """Clamp every parameter of ``module`` into [−c, c] in place (WGAN weight clipping)."""
    for p in module.parameters():
        p.clamp_(-clip_value, clip_value)


# --------------------------------------------------------------------------- VAE


def gaussian_log_prob(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; μ, diag exp(logvar)) summed over the last axis. (..., d) -> (...)."""
    return -0.5 * (_LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar)).sum(dim=-1)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last axis. (..., d) -> (...)."""
    return -0.5 * (_LOG_2PI + z.pow(2)).sum(dim=-1)


def kl_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(μ, diag σ²) ‖ N(0, I)) per event, analytic. (n, d) -> (n,)."""
    return 0.5 * (mu.pow(2) + torch.exp(logvar) - 1.0 - logvar).sum(dim=-1)


def zero_inflated_lognormal_log_prob(
    x: Tensor, zero_logit: Tensor, mu: Tensor, log_sigma: Tensor, zero_threshold: float = 0.0
) -> Tensor:
    """Log-density of voxel values under a zero-inflated log-normal, summed over voxels.

    Voxel energy fractions are non-negative, most voxels of a shower are exactly empty, and the
    non-empty ones span many orders of magnitude. The model per voxel is the mixture
    ``π δ(x) + (1 − π) LogNormal(x; μ, σ)`` with ``π = sigmoid(zero_logit)``: a point mass at 0
    for empty voxels and a log-normal (a Gaussian in log x, with its Jacobian ``1/x``) for the
    others. It is a normalised density with respect to (counting measure at 0) + (Lebesgue on
    x > 0), so the log-likelihoods (in nats) compare between models of the same data, and it
    puts no mass on negative energies. A Gaussian on raw fractions would waste mass below 0 and
    could not describe both the empty voxels and the heavy tail.

    Args:
        x: targets (..., V), non-negative; values ``<= zero_threshold`` count as empty.
        zero_logit, mu, log_sigma: decoder outputs broadcastable to x.
        zero_threshold: largest value treated as an empty voxel.

    Returns:
        log p(x) summed over the voxel axis, shape (...).
    """
    empty = x <= zero_threshold
    # log of a dummy 1 where empty: keeps log(0) (and its NaN gradient) out of the graph
    log_x = torch.log(torch.where(empty, torch.ones_like(x), x))
    log_p_empty = nn.functional.logsigmoid(zero_logit)
    log_p_filled = nn.functional.logsigmoid(-zero_logit)
    log_normal = -0.5 * (((log_x - mu) * torch.exp(-log_sigma)).pow(2) + _LOG_2PI) - log_sigma - log_x
    return torch.where(empty, log_p_empty, log_p_filled + log_normal).sum(dim=-1)
