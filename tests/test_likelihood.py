"""log p(x) three ways (fastsim.models.likelihood): analytic linear-Gaussian case and a real ShowerVAE."""

from __future__ import annotations

import math

import pytest
import torch
from test_models import make, tiny_batches

from fastsim.geometry import Geometry
from fastsim.models.likelihood import log_likelihood_estimates
from fastsim.models.losses import gaussian_log_prob, standard_normal_log_prob
from fastsim.models.vae import ShowerVAE


class LinearGaussian(torch.nn.Module):
    """z ~ N(0, 1) (latent_dim 1), x | z ~ N(z, s²) in d dimensions with the same z: log p(x) is exact.

    The proposal q(z|x) is the exact posterior shifted by ``shift`` posterior widths (0: exact).
    """

    latent_dim = 1

    def __init__(self, s: float, d: int, shift: float) -> None:
        super().__init__()
        self.s, self.d, self.shift = s, d, shift

    def encode(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        prec = 1 + self.d / self.s**2
        var = 1 / prec
        mu = x.sum(1, keepdim=True) / self.s**2 * var
        return mu + self.shift * math.sqrt(var), torch.full_like(mu, math.log(var))

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return gaussian_log_prob(x.expand(*z.shape[:-1], x.shape[-1]), z.expand(*z.shape[:-1], x.shape[-1]),
                                 torch.full((), 2 * math.log(self.s)))

    def log_weights(self, x, cond, k, rng=None):  # the same recipe as ShowerVAE.log_weights
        mu, logvar = self.encode(x, cond)
        z = mu + torch.exp(0.5 * logvar) * torch.randn((k, *mu.shape), generator=rng, dtype=mu.dtype)
        return self.log_likelihood(x, z, cond) + standard_normal_log_prob(z) - gaussian_log_prob(z, mu, logvar)

    def exact(self, x: torch.Tensor) -> torch.Tensor:
        """log N(x; 0, s² I + 1 1ᵀ) per row."""
        cov = self.s**2 * torch.eye(self.d, dtype=x.dtype) + torch.ones(self.d, self.d, dtype=x.dtype)
        return torch.distributions.MultivariateNormal(torch.zeros(self.d, dtype=x.dtype), cov).log_prob(x)


def _by(est, method, k):
    return next(e for e in est if e.method == method and e.k == k)


def test_exact_posterior_gives_the_exact_likelihood_for_every_k() -> None:
    model = LinearGaussian(s=0.5, d=4, shift=0.0)
    x = torch.randn(200, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 1.2
    est = log_likelihood_estimates(model, x, torch.zeros(200, 1), ks=(1, 10), seed=0)
    exact = float(model.exact(x).mean())
    for k in (1, 10):
        # with q = the true posterior every weight equals p(x): ELBO = IS = log p(x), no noise at all
        assert _by(est, "elbo", k).mean == pytest.approx(exact, abs=1e-6)
        assert _by(est, "importance", k).mean == pytest.approx(exact, abs=1e-6)
        assert _by(est, "elbo", k).sem == pytest.approx(float(model.exact(x).std() / math.sqrt(200)), rel=1e-6)


def test_importance_sampling_converges_and_the_prior_lags_behind() -> None:
    model = LinearGaussian(s=0.2, d=8, shift=1.5)  # a poor proposal and a sharp likelihood
    x = torch.randn(300, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    est = log_likelihood_estimates(model, x, torch.zeros(300, 1), ks=(1, 10, 100, 1000), seed=0)
    exact = float(model.exact(x).mean())
    elbo = [_by(est, "elbo", k).mean for k in (1, 10, 100, 1000)]
    iw = [_by(est, "importance", k).mean for k in (1, 10, 100, 1000)]
    prior = [_by(est, "prior", k).mean for k in (1, 10, 100, 1000)]
    assert iw[0] == pytest.approx(elbo[0])  # K = 1: the same estimate
    assert all(b > a for a, b in zip(iw, iw[1:], strict=False))  # rises with K ...
    assert iw[-1] == pytest.approx(exact, abs=0.05) and iw[-1] <= exact + 0.01  # ... to log p(x), from below
    assert max(elbo) < exact - 0.5  # the ELBO stays a bound (the gap is the KL to the posterior)
    # the prior proposes z blindly: far below at small K (one latent dimension here, so it does get
    # there by K = 1000; in a VAE's latent space of 10+ dimensions it does not)
    assert prior[0] < iw[0] - 50 and prior[1] < iw[1] - 1
    assert prior[-1] == pytest.approx(exact, abs=0.05)
    assert all(e.sem > 0 for e in est)


def test_shower_vae_estimates_are_ordered() -> None:
    torch.manual_seed(3)
    geo = Geometry.regular(3, 4, [0.0, 5.0, 10.0, 20.0, 50.0, 100.0])
    model = make(ShowerVAE, geo, latent_dim=4, encoder_hidden=(16,), decoder_hidden=(16,)).eval()
    batch = tiny_batches(geo)[0]
    est = log_likelihood_estimates(model, batch["x"], batch["cond"], ks=(1, 10, 100), seed=0)
    assert {e.method for e in est} == {"elbo", "importance", "prior"} and len(est) == 9
    assert _by(est, "importance", 1).mean == pytest.approx(_by(est, "elbo", 1).mean, rel=1e-6)
    assert _by(est, "importance", 100).mean > _by(est, "importance", 10).mean > _by(est, "elbo", 10).mean
    with pytest.raises(ValueError, match="K must be >= 1"):
        log_likelihood_estimates(model, batch["x"], batch["cond"], ks=(0,))
