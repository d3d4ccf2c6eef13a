"""log p(x) of showers under a VAE, three ways: the ELBO, importance sampling with q(z|x), and plain
Monte Carlo from the prior p(z).

For K samples per shower, with log-weights ``w_k``:

- **ELBO** ``(1/K) Σ_k [log p(x|z_k) + log p(z_k) − log q(z_k|x)]``, ``z_k ~ q(z|x)``: a lower
  bound of log p(x) whatever K (K only lowers the estimator's variance).
- **Importance sampling** ``log (1/K) Σ_k exp(w_k)`` with the same ``z_k ~ q(z|x)`` (the IWAE
  bound): a lower bound that rises towards log p(x) as K grows, never below the ELBO.
- **Prior Monte Carlo** ``log (1/K) Σ_k p(x|z_k)``, ``z_k ~ p(z)``: consistent too, but the prior
  almost never proposes a z that explains a given shower in a latent space of any size, so for
  affordable K it sits far below the other two — the reason the proposal q is needed.

Each value is the mean over showers (nats per shower) with its standard error. The model needs
``encode(x, cond) -> (mu, logvar)``, ``log_likelihood(x, z, cond)`` and ``log_weights(x, cond, k, rng)``
(:class:`fastsim.models.vae.ShowerVAE`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class LogLikelihoodEstimate:
    """One estimator at one K: mean over showers of log p(x) (nats) and its standard error."""

    method: str
    k: int
    mean: float
    sem: float


def _summary(method: str, k: int, values: Tensor) -> LogLikelihoodEstimate:
    v = values.double()
    n = v.numel()
    sem = float(v.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
    return LogLikelihoodEstimate(method, k, float(v.mean()), sem)


@torch.no_grad()
def log_likelihood_estimates(
    model: torch.nn.Module,
    x: Tensor,
    cond: Tensor,
    ks: Sequence[int] = (1, 10, 100, 1000),
    seed: int = 0,
    batch_samples: int = 100,
) -> list[LogLikelihoodEstimate]:
    """ELBO, importance-sampled and prior Monte-Carlo estimates of log p(x) for every K in ``ks``.

    Args:
        model: a VAE (see the module docstring), in eval mode.
        x: (n, V) model-space showers (the training tensors' ``x``).
        cond: (n, C) conditions.
        ks: numbers of samples per shower.
        seed: seeds every draw (one generator; the estimates for different K use different draws).
        batch_samples: samples drawn at a time (memory: batch_samples × n × V floats).

    Returns:
        one :class:`LogLikelihoodEstimate` per (method, K), methods ``elbo``, ``importance``, ``prior``.
    """
    rng = torch.Generator(device=x.device).manual_seed(int(seed))
    out: list[LogLikelihoodEstimate] = []
    for k in ks:
        if k < 1:
            raise ValueError(f"K must be >= 1, got {k}")
        lw_q, lw_p = [], []
        for start in range(0, k, batch_samples):
            m = min(batch_samples, k - start)
            lw_q.append(model.log_weights(x, cond, m, rng))
            z = torch.randn((m, x.shape[0], model.latent_dim), generator=rng, device=x.device, dtype=x.dtype)
            lw_p.append(model.log_likelihood(x, z, cond))
        q = torch.cat(lw_q, dim=0)
        p = torch.cat(lw_p, dim=0)
        out.append(_summary("elbo", k, q.mean(dim=0)))
        out.append(_summary("importance", k, torch.logsumexp(q, dim=0) - math.log(k)))
        out.append(_summary("prior", k, torch.logsumexp(p, dim=0) - math.log(k)))
    return out
