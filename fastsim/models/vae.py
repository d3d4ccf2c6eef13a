"""ShowerVAE: a conditional variational autoencoder with a zero-inflated log-normal likelihood.

Encoder ``q(z|x,c) = N(μ, diag σ²)``, prior ``N(0, I)``, decoder ``p(x|z,c)`` a per-voxel
zero-inflated log-normal on the model-space targets (energy fractions, see
:func:`fastsim.models.losses.zero_inflated_lognormal_log_prob` for why). Training maximises
``E_q[log p(x|z)] − β_t KL(q‖p)`` with ``β_t = β · min(1, step / kl_warmup_steps)``.
Validation logs the ELBO (β = 1) and the importance-sampled log-likelihood
``log (1/K) Σ_k p(x|z_k) p(z_k) / q(z_k|x)``, z_k ~ q (Burda et al. 2016), both in nats per event.
Generation decodes deterministically: by default the decoder mean E[x|z,c] (see
:func:`fastsim.models.components.vae.decode_mean` for why), so showers vary through the latent
noise only.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor, nn

from fastsim.errors import FastsimError
from fastsim.models.base import (
    NON_NEGATIVE_TRANSFORMS,
    VALIDATION_STREAM,
    ShowerGeneratorModule,
    transform_classes,
)
from fastsim.models.components.vae import DECODERS, Decoder, Encoder
from fastsim.models.losses import (
    gaussian_log_prob,
    kl_standard_normal,
    standard_normal_log_prob,
    zero_inflated_lognormal_log_prob,
)


class _PointDecoder(nn.Module):
    """``(z, cond) -> model-space voxels``: the decoder followed by a deterministic point estimate."""

    def __init__(self, decoder: Decoder, mode: str) -> None:
        super().__init__()
        self.decoder = decoder
        self.point = DECODERS[mode]

    def forward(self, z: Tensor, cond: Tensor) -> Tensor:
        return self.point(*self.decoder(z, cond))


class ShowerVAE(ShowerGeneratorModule):
    """Conditional VAE shower generator.

    Args:
        geometry, transform, condition, n_conditions: as for :class:`WGANGP` (linked from the data).
        latent_dim: latent dimension.
        encoder_hidden: encoder hidden widths.
        decoder_hidden: decoder hidden widths.
        activation: hidden activation of both networks.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        beta: KL weight after warm-up (1 = the ELBO).
        kl_warmup_steps: steps over which the KL weight rises linearly from 0 to ``beta`` (0: none).
        n_importance_samples: K for the importance-sampled log-likelihood at validation.
        zero_threshold: model-space values ``<=`` this count as empty voxels.
        decode: generation's point estimate of p(x|z,c): "mean" (unbiased energy) or "median"
            (empty voxels stay empty; see :mod:`fastsim.models.components.vae`).
        seed: seeds the training noise (see :class:`ShowerGeneratorModule`).
    """

    def __init__(
        self,
        geometry: dict[str, Any] | str | None = None,
        transform: dict[str, Any] | None = None,
        condition: dict[str, Any] | None = None,
        n_conditions: int = 1,
        latent_dim: int = 32,
        encoder_hidden: tuple[int, ...] = (512, 256),
        decoder_hidden: tuple[int, ...] = (256, 512),
        activation: str = "silu",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        beta: float = 1.0,
        kl_warmup_steps: int = 0,
        n_importance_samples: int = 32,
        zero_threshold: float = 0.0,
        decode: Literal["mean", "median"] = "mean",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self._init_shared(geometry, transform, condition, n_conditions, latent_dim)
        if beta < 0 or kl_warmup_steps < 0 or n_importance_samples < 1:
            raise FastsimError("need beta >= 0, kl_warmup_steps >= 0 and n_importance_samples >= 1")
        if decode not in DECODERS:
            raise FastsimError(f"decode must be one of {sorted(DECODERS)}, got {decode!r}")
        stages = transform_classes(self.hparams["transform"])
        if not set(stages) <= NON_NEGATIVE_TRANSFORMS:
            raise FastsimError(
                f"ShowerVAE's zero-inflated log-normal likelihood needs non-negative energy fractions; "
                f"the transform {stages} is not supported (prepare the tensors with the 'divide' transform)"
            )
        self.hparams["encoder_hidden"] = tuple(encoder_hidden)
        self.hparams["decoder_hidden"] = tuple(decoder_hidden)
        v = self.n_voxels
        self.encoder = Encoder(v, n_conditions, latent_dim, self.hparams["encoder_hidden"], activation)
        self.decoder = Decoder(latent_dim, n_conditions, v, self.hparams["decoder_hidden"], activation)

    def decoder_network(self) -> nn.Module:
        # built on demand (not a registered submodule) so the decoder's weights appear once in the state_dict
        return _PointDecoder(self.decoder, self.hparams["decode"])

    # ------------------------------------------------------------------ likelihood
    def log_likelihood(self, x: Tensor, z: Tensor, cond: Tensor) -> Tensor:
        """log p(x | z, c) in nats. Shapes: x (n, V), z (..., n, latent), cond (n, C) -> (..., n)."""
        lead = z.shape[:-2]
        z_flat = z.reshape(-1, z.shape[-1])
        cond_rep = cond.expand(*lead, *cond.shape).reshape(-1, cond.shape[-1])
        zero_logit, mu, log_sigma = self.decoder(z_flat, cond_rep)
        shape = (*lead, *x.shape)
        return zero_inflated_lognormal_log_prob(
            x.expand(shape),
            zero_logit.reshape(shape),
            mu.reshape(shape),
            log_sigma.reshape(shape),
            self.hparams.zero_threshold,
        )

    def log_weights(self, x: Tensor, cond: Tensor, k: int, rng: torch.Generator | None = None) -> Tensor:
        """Importance log-weights ``log p(x|z_k) + log p(z_k) − log q(z_k|x)``, z_k ~ q: shape (k, n).

        Their mean over k is an unbiased ELBO estimate; ``logsumexp − log k`` is the
        importance-sampled log-likelihood, never below that mean (Jensen, sample by sample).
        """
        mu, logvar = self.encoder(x, cond)
        eps = torch.randn((k, *mu.shape), device=mu.device, dtype=mu.dtype, generator=rng)
        z = mu + torch.exp(0.5 * logvar) * eps
        return (
            self.log_likelihood(x, z, cond) + standard_normal_log_prob(z) - gaussian_log_prob(z, mu, logvar)
        )

    def elbo_and_is(
        self, x: Tensor, cond: Tensor, k: int, rng: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Per-event ELBO and importance-sampled log-likelihood (both (n,), nats) from one set of k samples."""
        lw = self.log_weights(x, cond, k, rng)
        return lw.mean(dim=0), torch.logsumexp(lw, dim=0) - math.log(k)

    def kl_weight(self) -> float:
        """β_t: ``beta`` scaled by the linear warm-up."""
        hp = self.hparams
        if hp.kl_warmup_steps <= 0:
            return float(hp.beta)
        return float(hp.beta) * min(1.0, self.global_step / hp.kl_warmup_steps)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        x, cond = batch["x"], batch["cond"]
        rng = self.step_generator(self.global_step)
        mu, logvar = self.encoder(x, cond)
        z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, device=mu.device, generator=rng)
        rec = self.log_likelihood(x, z, cond).mean()
        kl = kl_standard_normal(mu, logvar).mean()
        beta = self.kl_weight()
        loss = -(rec - beta * kl)
        if not self._log_due(self.global_step):
            return loss
        self._check_finite(loss, "the VAE loss")
        self.log_dict(
            {
                "train/loss": loss.detach(),
                "train/reconstruction": rec.detach(),
                "train/kl": kl.detach(),
                "train/beta": beta,
            },
            on_step=True,
            on_epoch=False,
            batch_size=x.shape[0],
        )
        return loss

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        x, cond = batch["x"], batch["cond"]
        rng = self.step_generator(VALIDATION_STREAM, batch_idx)
        elbo, ll = self.elbo_and_is(x, cond, int(self.hparams.n_importance_samples), rng)
        n = x.shape[0]
        self.log("val/elbo", elbo.mean(), on_epoch=True, batch_size=n, sync_dist=True)
        self.log("val/log_likelihood_is", ll.mean(), on_epoch=True, batch_size=n, sync_dist=True)

    # ------------------------------------------------------------------ optimisers
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
