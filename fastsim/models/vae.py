"""ShowerVAE: a conditional variational autoencoder with a zero-inflated log-normal likelihood.

Encoder ``q(z|x,c) = N(μ, diag σ²)``, prior ``N(0, I)``, decoder ``p(x|z,c)`` a per-voxel
zero-inflated log-normal on the model-space targets (energy fractions, see
:func:`fastsim.models.losses.zero_inflated_lognormal_log_prob` for why). Training maximises
``E_q[log p(x|z)] − β_t KL(q‖p)`` with ``β_t = β · min(1, step / kl_warmup_steps)``.
Validation logs the ELBO (β = 1) and the importance-sampled log-likelihood
``log (1/K) Σ_k p(x|z_k) p(z_k) / q(z_k|x)``, z_k ~ q (Burda et al. 2016), both in nats per event.
Generation either decodes deterministically, the decoder mean E[x|z,c] (``decode="mean"``; see
:func:`fastsim.models.components.vae.decode_mean`) or the median, so that showers vary through the
latent noise only, or draws from the likelihood p(x|z,c) itself (``decode="sample"``), which adds
the per-voxel fluctuations the model has learnt; the observation noise is then part of the noise
input (``noise_dim = latent_dim + 2·V``), so generation, seeds and ONNX export work unchanged.
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
from fastsim.models.components.features import EnergyFeatures
from fastsim.models.components.vae import (
    DECODERS,
    Decoder,
    Encoder,
    EnergyHead,
    decode_sample,
    decode_sample_zeros,
)
from fastsim.models.hparams import check_vae
from fastsim.models.losses import (
    gaussian_log_prob,
    kl_standard_normal,
    standard_normal_log_prob,
    zero_inflated_lognormal_log_prob,
)


class _GenerationDecoder(nn.Module):
    """``(noise, cond) -> model-space voxels``: what generation runs (and ONNX exports).

    Noise layout: ``[z (latent_dim), ε_u (1, with the energy head), ε_empty (V), ε_value (V)
    (decode="sample"; ε_empty only with "sample_zeros")]``, all standard normal. Without the energy head the decoded voxels are the
    shower; with it they are its shape, normalised to 1 and scaled by ``E_tot/E_inc = m(c) +
    s(c)·u``, ``u ~ N(μ_u, σ_u²)`` from the head.
    """

    def __init__(
        self,
        decoder: Decoder,
        latent_dim: int,
        n_voxels: int,
        mode: str,
        head: EnergyHead | None = None,
        features: EnergyFeatures | None = None,
    ) -> None:
        super().__init__()
        self.decoder, self.head, self.features = decoder, head, features
        self.latent_dim, self.n_voxels, self.mode = int(latent_dim), int(n_voxels), mode

    def forward(self, noise: Tensor, cond: Tensor) -> Tensor:
        k, v = self.latent_dim, self.n_voxels
        z, i = noise[:, :k], k
        params = self.decoder(z, cond)
        if self.head is not None:
            eps_u, i = noise[:, i : i + 1], i + 1
        if self.mode == "sample":
            x = decode_sample(*params, noise[:, i : i + v], noise[:, i + v : i + 2 * v])
        elif self.mode == "sample_zeros":
            x = decode_sample_zeros(*params, noise[:, i : i + v])
        else:
            x = DECODERS[self.mode](*params)
        if self.head is None or self.features is None:
            return x
        mu_u, log_sigma_u = self.head(z, cond)
        u = mu_u.unsqueeze(1) + torch.exp(log_sigma_u).unsqueeze(1) * eps_u
        r = self.features.destandardise(u, cond[:, 0]).clamp(min=0.0)
        return x / x.sum(dim=1, keepdim=True).clamp(min=1e-12) * r


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
        decode: how generation turns p(x|z,c) into a shower: "mean" (unbiased energy), "median"
            (empty voxels stay empty; see :mod:`fastsim.models.components.vae`) or "sample" (a
            draw, with per-voxel fluctuations; noise_dim = latent_dim + 2·V) or "sample_zeros" (the
            zero mask drawn, filled voxels at their mean: sparse showers; noise_dim = latent_dim + V).
        energy_head: model the shower as (u, shape): ``u`` its E_tot/E_inc standardised per
            incident energy (:class:`EnergyFeatures`, fitted from the training data at setup) with
            a Gaussian ``p(u|z,c)``, and the shape ``x / Σx`` with the zero-inflated log-normal.
            Generation scales the decoded shape (normalised to 1) to the sampled energy, so the
            response and resolution are learnt directly instead of as a sum of V noisy voxels.
            Adds one noise column.
        energy_hidden: hidden widths of the energy head.
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
        decode: Literal["mean", "median", "sample", "sample_zeros"] = "mean",
        energy_head: bool = False,
        energy_hidden: tuple[int, ...] = (64, 64),
        seed: int = 0,
    ) -> None:
        check_vae({k: v for k, v in locals().items() if k not in ("self", "__class__")})
        super().__init__()
        self.save_hyperparameters()
        self._init_shared(geometry, transform, condition, n_conditions, latent_dim)
        if beta < 0 or kl_warmup_steps < 0 or n_importance_samples < 1:
            raise FastsimError("need beta >= 0, kl_warmup_steps >= 0 and n_importance_samples >= 1")
        if decode not in (*DECODERS, "sample", "sample_zeros"):
            raise FastsimError(
                f"decode must be one of {sorted([*DECODERS, 'sample', 'sample_zeros'])}, got {decode!r}"
            )
        stages = transform_classes(self.hparams["transform"])
        if not set(stages) <= NON_NEGATIVE_TRANSFORMS:
            raise FastsimError(
                f"ShowerVAE's zero-inflated log-normal likelihood needs non-negative energy fractions; "
                f"the transform {stages} is not supported (prepare the tensors with the 'divide' transform)"
            )
        self.hparams["encoder_hidden"] = tuple(encoder_hidden)
        self.hparams["decoder_hidden"] = tuple(decoder_hidden)
        self.hparams["energy_hidden"] = tuple(energy_hidden)
        v = self.n_voxels
        self.energy_head: EnergyHead | None = None
        if energy_head:
            self.features = EnergyFeatures(())
            self.energy_head = EnergyHead(latent_dim, n_conditions, self.hparams["energy_hidden"], activation)
        # with the energy head the encoder sees the representation the likelihood models: [shape, u]
        enc_in = v + (1 if energy_head else 0)
        self.encoder = Encoder(enc_in, n_conditions, latent_dim, self.hparams["encoder_hidden"], activation)
        self.decoder = Decoder(latent_dim, n_conditions, v, self.hparams["decoder_hidden"], activation)

    @property
    def noise_dim(self) -> int:
        extra = 1 if self.energy_head is not None else 0
        if self.hparams["decode"] == "sample":
            extra += 2 * self.n_voxels
        elif self.hparams["decode"] == "sample_zeros":
            extra += self.n_voxels
        return self.latent_dim + extra

    def decoder_network(self) -> nn.Module:
        # built on demand (not a registered submodule) so the weights appear once in the state_dict
        return _GenerationDecoder(
            self.decoder, self.latent_dim, self.n_voxels, self.hparams["decode"], self.energy_head, self.features
        )

    # ------------------------------------------------------------------ likelihood
    def represent(self, x: Tensor, cond: Tensor) -> tuple[Tensor, Tensor | None]:
        """What the likelihood models: ``(x, None)``, or with the energy head ``(shape, u)`` with
        ``shape = x / Σx`` (n, V) and ``u`` (n,) the standardised E_tot/E_inc."""
        if self.energy_head is None:
            return x, None
        r = x.sum(dim=1, keepdim=True)
        u = self.features(x, cond[:, 0])[:, 0]
        return x / r.clamp(min=1e-12), u

    def encode(self, x: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """q(z|x,c): (mu, logvar), each (n, latent_dim)."""
        y, u = self.represent(x, cond)
        return self.encoder(y if u is None else torch.cat([y, u.unsqueeze(1)], dim=1), cond)

    def log_likelihood(self, x: Tensor, z: Tensor, cond: Tensor) -> Tensor:
        """log p(x | z, c) in nats (with the energy head: log p(u|z,c) + log p(shape|z,c)).
        Shapes: x (n, V), z (..., n, latent), cond (n, C) -> (..., n)."""
        lead = z.shape[:-2]
        z_flat = z.reshape(-1, z.shape[-1])
        cond_rep = cond.expand(*lead, *cond.shape).reshape(-1, cond.shape[-1])
        y, u = self.represent(x, cond)
        zero_logit, mu, log_sigma = self.decoder(z_flat, cond_rep)
        shape = (*lead, *x.shape)
        out = zero_inflated_lognormal_log_prob(
            y.expand(shape),
            zero_logit.reshape(shape),
            mu.reshape(shape),
            log_sigma.reshape(shape),
            self.hparams.zero_threshold,
        )
        if u is not None:
            mu_u, log_sigma_u = self.energy_head(z_flat, cond_rep)
            out = out + gaussian_log_prob(
                u.expand(*lead, -1).reshape(-1, 1), mu_u.unsqueeze(1), 2.0 * log_sigma_u.unsqueeze(1)
            ).reshape(out.shape)
        return out

    def log_weights(self, x: Tensor, cond: Tensor, k: int, rng: torch.Generator | None = None) -> Tensor:
        """Importance log-weights ``log p(x|z_k) + log p(z_k) − log q(z_k|x)``, z_k ~ q: shape (k, n).

        Their mean over k is an unbiased ELBO estimate; ``logsumexp − log k`` is the
        importance-sampled log-likelihood, never below that mean (Jensen, sample by sample).
        """
        mu, logvar = self.encode(x, cond)
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

    def log_likelihood_prior_mc(
        self, x: Tensor, cond: Tensor, k: int, rng: torch.Generator | None = None
    ) -> Tensor:
        """Plain Monte Carlo estimate of log p(x|c) from the prior: ``logsumexp_k log p(x|z_k) − log k``,
        z_k ~ N(0, 1). Unbiased for p(x), not for log p(x), and with a variance that grows
        exponentially with how far q(z|x) is from p(z): in high dimension it needs astronomically many
        samples (compare :meth:`elbo_and_is`). Shapes: x (n, V), cond (n, C) -> (n,) nats."""
        z = torch.randn((k, x.shape[0], self.latent_dim), device=x.device, dtype=x.dtype, generator=rng)
        return torch.logsumexp(self.log_likelihood(x, z, cond), dim=0) - math.log(k)

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
        mu, logvar = self.encode(x, cond)
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
