"""WGANGP: a conditional Wasserstein GAN with gradient penalty (FastCaloGAN recipe), manual optimisation.

Per training batch: ``n_critic`` critic updates (fresh noise each, the same real batch), then
one generator update, so ``global_step`` advances by ``n_critic + 1`` per batch.
Critic loss ``mean h(G(z)) − mean h(x) + λ·penalty``; generator loss ``−mean h(G(z))``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from fastsim.errors import FastsimError
from fastsim.models.base import (
    NON_NEGATIVE_TRANSFORMS,
    VALIDATION_STREAM,
    ShowerGeneratorModule,
    naming_file,
    transform_classes,
)
from fastsim.models.components.features import EnergyFeatures, ShowerFeatures
from fastsim.models.components.response import ResponseReference
from fastsim.models.components.wgan import Critic, Generator, HierarchicalGenerator
from fastsim.models.hparams import check_wgan_gp
from fastsim.models.losses import clip_weights_, critic_loss, generator_loss, gradient_penalty

Lipschitz = Literal["gp", "gp_one_sided", "clip"]
CriticFeatures = Literal["none", "energy", "energy_layers", "shapes", "shapes_sparsity"]
OutputInit = Literal["default", "mean_shower"]
Output = Literal["voxels", "hierarchical"]
CriticVoxels = Literal["model", "log"]


class WGANGP(ShowerGeneratorModule):
    """Conditional WGAN-GP shower generator.

    Args:
        geometry: ``Geometry.to_dict()``, a built-in name or an XML path (linked from the data).
        transform: voxel-transform config (linked from the data).
        condition: fitted condition config (linked from the data).
        n_conditions: condition columns (linked from the data).
        latent_dim: noise dimension (FastCaloGAN: 50).
        generator_hidden: generator hidden widths (FastCaloGAN: 50, 100, 200).
        generator_activation: hidden activation of the generator (FastCaloGAN: swish).
        output_activation: generator output activation, non-negative for energy fractions ("relu").
        critic_hidden: critic hidden widths; None = three layers as wide as the voxel count.
        critic_activation: hidden activation of the critic.
        lr_generator, lr_critic: Adam learning rates.
        beta1, beta2: Adam β (WGAN-GP: 0.5, 0.9).
        n_critic: critic updates per generator update.
        lipschitz: "gp" (two-sided penalty), "gp_one_sided" or "clip" (weight clipping).
        lambda_gp: penalty weight λ.
        clip_value: c for weight clipping into [−c, c].
        critic_features: extra critic inputs computed from each shower (:class:`EnergyFeatures`):
            "none" (FastCaloGAN: voxels only), "energy" (E_tot/E_inc standardised per incident
            energy), "energy_layers" (and each layer's energy), "shapes" (and each layer's centres
            and widths in x and y as linear moments, :class:`ShowerFeatures`) or "shapes_sparsity" (and a
            differentiable sparsity per layer, ε = 1e-6 of E_inc). The critic then acts on the
            augmented event ``[x, w·u(x)]`` and the gradient penalty is taken in that space
            (interpolating the augmented real and generated events), so the Wasserstein metric
            weighs energy-response and resolution mismatches at O(1) whatever the energy.
        feature_weight: w, the scale of the features against the voxels in that metric.
        output_init: "default" (PyTorch's init of the generator's last layer) or "mean_shower": at
            ``setup("fit")`` its bias is set to the mean training shower (model space) and its
            weights scaled by ``output_init_scale``, so training starts from a physical shower
            with every voxel alive. With the default init a ReLU output starts ~30× too energetic;
            pulling it down kills most outputs for good (a ReLU unit negative for every input gets
            no gradient): 3–20 % of the voxels stay non-zero where Geant4 fills ~60 %.
        output_init_scale: factor on the last layer's initial weights with "mean_shower".
        output: "voxels" (FastCaloGAN: one output per voxel through ``output_activation``) or
            "hierarchical" (:class:`HierarchicalGenerator`, CaloShowerGAN: E_tot/E_inc standardised
            per energy, softmax layer fractions, softmax voxel fractions per layer; positive and
            energy-consistent by construction; needs the DivideByIncident transform; its E_tot/E_inc
            statistics are fitted at ``setup("fit")`` and saved in the checkpoint).
        voxel_noise: with "hierarchical" and > 0, the generator also emits a width σ_v per voxel and
            draws each voxel fraction log-normally around its shape, renormalised per layer (Geant4's
            voxels fluctuate independently; a function of 50 latent numbers cannot); the value is
            σ_v at the start (with ``output_init: mean_shower``); 0: deterministic fractions.
            The noise input widens to ``latent_dim + V`` (:attr:`noise_dim`).
        energy_noise: with "hierarchical", the generator also emits a width σ_u and draws its
            standardised E_tot/E_inc around the network's value (one more noise column; starts at
            σ_u = 1, Geant4's spread at every energy).
        readout_threshold: with "hierarchical", voxels below this energy (MeV) are set to 0, as a
            detector's readout does (straight-through gradient in training); 0: no threshold.
        critic_voxels: what the critic sees of the voxels: "model" (model space, e.g. fractions of
            E_inc, where a tail voxel or an empty one is ~1e-5 and weighs nothing in the metric) or
            "log" (``log1p(E_v / critic_log_scale)``, E_v in MeV: zeros, tails and cores all O(1)).
        critic_log_scale: the MeV scale of "log".
        critic_batch_std: the critic also sees, beside every event, the standard deviation over
            its batch of each standardised critic feature (F more inputs; the minibatch-standard-
            deviation layer of ProGAN, arXiv:1710.10196, on the features): per event a critic cannot
            see a distribution's width, so a generator with too narrow E_tot/E_inc (too small a
            resolution) goes unpunished; across a batch of mixed energies the real features'
            spread is ~1 by construction. Needs critic features.
        response_weight: with > 0, the generator's loss also gets this weight times the energy
            distance, per incident energy and in units of Geant4's spread, between the E_tot/E_inc
            of showers generated at training conditions and the training showers'
            (:class:`~fastsim.models.components.response.ResponseReference`: 32 showers per energy
            per step): the energy response and resolution directly, which a per-event critic sees
            only weakly; 0: the plain WGAN-GP generator loss.
        seed: seeds the training noise (see :class:`ShowerGeneratorModule`).

    With critic features the statistics of the features are fitted from the data module's
    training tensors at ``setup("fit")`` (or by :meth:`fit_features`) and saved in the checkpoint.
    """

    def __init__(
        self,
        geometry: dict[str, Any] | str | None = None,
        transform: dict[str, Any] | None = None,
        condition: dict[str, Any] | None = None,
        n_conditions: int = 1,
        latent_dim: int = 50,
        generator_hidden: tuple[int, ...] = (50, 100, 200),
        generator_activation: str = "swish",
        output_activation: str = "relu",
        critic_hidden: tuple[int, ...] | None = None,
        critic_activation: str = "relu",
        lr_generator: float = 1e-4,
        lr_critic: float = 1e-4,
        beta1: float = 0.5,
        beta2: float = 0.9,
        n_critic: int = 5,
        lipschitz: Lipschitz = "gp",
        lambda_gp: float = 10.0,
        clip_value: float = 0.01,
        critic_features: CriticFeatures = "none",
        feature_weight: float = 1.0,
        output_init: OutputInit = "default",
        output_init_scale: float = 0.01,
        output: Output = "voxels",
        readout_threshold: float = 0.0,
        voxel_noise: float = 0.0,
        energy_noise: bool = False,
        critic_voxels: CriticVoxels = "model",
        critic_log_scale: float = 1.0,
        critic_batch_std: bool = False,
        response_weight: float = 0.0,
        seed: int = 0,
    ) -> None:
        check_wgan_gp({k: v for k, v in locals().items() if k not in ("self", "__class__")})
        super().__init__()
        self.save_hyperparameters()
        self._init_shared(geometry, transform, condition, n_conditions, latent_dim)
        if lipschitz not in ("gp", "gp_one_sided", "clip"):
            raise FastsimError(f"lipschitz must be 'gp', 'gp_one_sided' or 'clip', got {lipschitz!r}")
        if n_critic < 1:
            raise FastsimError(f"n_critic must be >= 1, got {n_critic}")
        if critic_features not in ("none", "energy", "energy_layers", "shapes", "shapes_sparsity"):
            raise FastsimError(
                "critic_features must be 'none', 'energy', 'energy_layers', 'shapes' or 'shapes_sparsity', "
                f"got {critic_features!r}"
            )
        if not feature_weight > 0:
            raise FastsimError(f"feature_weight must be > 0, got {feature_weight}")
        if output_init not in ("default", "mean_shower"):
            raise FastsimError(f"output_init must be 'default' or 'mean_shower', got {output_init!r}")
        if output not in ("voxels", "hierarchical"):
            raise FastsimError(f"output must be 'voxels' or 'hierarchical', got {output!r}")
        if critic_voxels not in ("model", "log"):
            raise FastsimError(f"critic_voxels must be 'model' or 'log', got {critic_voxels!r}")
        if not critic_log_scale > 0:
            raise FastsimError(f"critic_log_scale must be > 0 MeV, got {critic_log_scale}")
        if not readout_threshold >= 0:
            raise FastsimError(f"readout_threshold must be >= 0 MeV, got {readout_threshold}")
        stages = transform_classes(self.hparams["transform"])
        if output == "hierarchical" and stages != ["DivideByIncident"]:
            raise FastsimError(
                f"output: hierarchical emits fractions of the incident energy and needs the 'divide' "
                f"transform (DivideByIncident), got {stages}"
            )
        if (
            output == "voxels"
            and output_activation.lower() in ("relu", "softplus", "sigmoid")
            and not set(stages) <= NON_NEGATIVE_TRANSFORMS
        ):
            # e.g. a log or standardised target is mostly negative: a ReLU output could never reach it
            raise FastsimError(
                f"output_activation {output_activation!r} cannot produce the negative model-space values of "
                f"the transform {stages}; use output_activation: none (or the 'divide' transform)"
            )
        v = self.n_voxels
        self.hparams["critic_hidden"] = tuple(critic_hidden) if critic_hidden is not None else (v, v, v)
        self.hparams["generator_hidden"] = tuple(generator_hidden)
        slices = [(sl.start, sl.stop) for sl in self.geometry.layer_slices]
        if output == "hierarchical":
            from fastsim.data.transforms import build_transform

            self.generator: Generator | HierarchicalGenerator = HierarchicalGenerator(
                latent_dim,
                n_conditions,
                slices,
                EnergyFeatures(),
                build_transform(self.hparams["condition"]),
                self.hparams["generator_hidden"],
                generator_activation,
                readout_threshold,
                voxel_noise=voxel_noise > 0,
                energy_noise=bool(energy_noise),
            )
        else:
            self.generator = Generator(
                latent_dim,
                n_conditions,
                v,
                self.hparams["generator_hidden"],
                generator_activation,
                output_activation,
            )
        if critic_features in ("shapes", "shapes_sparsity"):
            eps = 1e-6 if critic_features == "shapes_sparsity" else 0.0
            self.features = ShowerFeatures(slices, *self.geometry.voxel_xy_center, sparsity_eps=eps)
        elif critic_features != "none":
            self.features = EnergyFeatures(slices if critic_features == "energy_layers" else ())
        n_feat = 0 if self.features is None else self.features.n_features
        if critic_batch_std:
            n_feat *= 2
        self.critic = Critic(v + n_feat, n_conditions, self.hparams["critic_hidden"], critic_activation)
        self.response = ResponseReference() if response_weight > 0 else None
        self.automatic_optimization = False
        self._output_initialised = False  # a second fit() of the same object keeps its weights

    def needs_training_data(self) -> bool:
        mean_init = self.hparams.output_init == "mean_shower" and not self._output_initialised
        response = self.response is not None and not self.response.is_fitted
        return super().needs_training_data() or mean_init or response

    def prepare(self, tensors: Any) -> None:
        """As :meth:`ShowerGeneratorModule.prepare`, and: warn when the tensors' readout threshold
        (prep-train --threshold) differs from the generator's; start the generator's output at the
        mean training shower with ``output_init: mean_shower`` (once: trained weights are kept)."""
        super().prepare(tensors)
        if self.hparams.output == "hierarchical":
            data_threshold = float(getattr(tensors, "attrs", {}).get("readout_threshold", 0.0))
            if data_threshold != float(self.hparams.readout_threshold):
                # the critic would tell the two apart by the smallest voxels alone
                rank_zero_warn(
                    f"the training showers were read out above {data_threshold:g} MeV (prep-train --threshold) "
                    f"but the generator's readout_threshold is {self.hparams.readout_threshold:g} MeV: "
                    "set model.init_args.readout_threshold to the same value"
                )
        if self.hparams.output_init == "mean_shower" and not self._output_initialised:
            # on resume the checkpoint's weights replace these right after setup
            self.init_output_from_data(tensors)
        if self.response is not None:
            self.fit_response(tensors)

    def fit_response(self, tensors: Any, rows: int = 1 << 16) -> None:
        """The per-energy E_tot/E_inc reference of ``response_weight``, streamed from the tensors."""

        def chunks():  # noqa: ANN202  (the reference makes two passes)
            for fractions, cond in self.fraction_chunks(tensors, rows):
                yield fractions.sum(dim=1).double().numpy(), cond

        with naming_file(tensors, "ResponseReference.fit: "):
            self.response.fit(chunks, seed=int(self.hparams.seed))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # trained weights (load_from_checkpoint, then a new fit): never re-initialise them
        self._output_initialised = True

    @torch.no_grad()
    def init_output_from_data(self, tensors: Any, rows: int = 1 << 16) -> None:
        """Generator's last layer: bias = mean training shower (model space), weights × output_init_scale."""
        total = torch.zeros(self.n_voxels, dtype=torch.float64)
        for start in range(0, len(tensors), rows):
            total += torch.from_numpy(tensors.read(start, start + rows)["x"]).double().sum(dim=0)
        if isinstance(self.generator, HierarchicalGenerator):
            self.generator.init_from_mean(
                total / max(1, len(tensors)),
                self.hparams.output_init_scale,
                sigma=float(self.hparams.get("voxel_noise", 0.0)) or 0.5,
            )
            self._output_initialised = True
            return
        last = self.generator.last_linear()
        last.bias.copy_((total / max(1, len(tensors))).to(last.bias))
        last.weight.mul_(self.hparams.output_init_scale)
        self._output_initialised = True

    def feature_modules(self) -> list[torch.nn.Module]:
        extra = [self.generator.total] if isinstance(self.generator, HierarchicalGenerator) else []
        return super().feature_modules() + extra

    @property
    def noise_dim(self) -> int:
        """``latent_dim``, plus one draw per voxel with ``voxel_noise`` and one with ``energy_noise``."""
        voxels = self.n_voxels if self.hparams.get("voxel_noise", 0.0) > 0 else 0
        return self.latent_dim + voxels + int(bool(self.hparams.get("energy_noise", False)))

    def decoder_network(self) -> Generator | HierarchicalGenerator:
        return self.generator

    # ------------------------------------------------------------------ critic features
    def critic_input(self, x: Tensor, cond: Tensor, e_inc: Tensor) -> Tensor:
        """The event the critic sees: ``x`` (n, V), or ``[x, w·u(x)]`` (n, V + F) with critic features
        (``x`` as ``log1p(E/scale)`` with ``critic_voxels: log``), ``[x, w·u(x), w·std_batch(u)]``
        (n, V + 2F) with ``critic_batch_std`` (the batch's spread repeated on every row)."""
        voxels = x
        if self.hparams.get("critic_voxels", "model") == "log":
            mev = self._fractions(x, e_inc) * e_inc.reshape(-1, 1).to(x)
            voxels = torch.log1p(torch.clamp(mev, min=0.0) / self.hparams.critic_log_scale)
        if self.features is None:
            return voxels
        u = self.features(self._fractions(x, e_inc), cond[:, 0]).to(x.dtype)
        parts = [voxels, self.hparams.feature_weight * u]
        if self.hparams.get("critic_batch_std", False):
            spread = u.std(dim=0, keepdim=True) if u.shape[0] > 1 else torch.zeros_like(u[:1])
            parts.append(self.hparams.feature_weight * spread.expand_as(u))
        return torch.cat(parts, dim=1)

    # ------------------------------------------------------------------ training
    def critic_step(
        self, x: Tensor, cond: Tensor, rng: torch.Generator | None = None, e_inc: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Critic loss on one real batch and fresh fakes; returns the loss and detached diagnostics.

        Shapes: x (n, V) model space, cond (n, C), e_inc (n,) MeV (needed with critic features
        and a transform other than DivideByIncident).
        """
        hp = self.hparams
        n = x.shape[0]
        z = torch.randn(n, self.noise_dim, device=self.device, generator=rng)
        e = self._batch_energies(cond, e_inc)
        with torch.no_grad():
            fake = self.critic_input(self.generator(z, cond), cond, e)
        real = self.critic_input(x, cond, e)
        h_real = self.critic(real, cond)
        h_fake = self.critic(fake, cond)
        loss = critic_loss(h_real, h_fake)
        out = {"wasserstein": -loss.detach()}
        if hp.lipschitz != "clip":
            t = torch.rand(n, 1, device=self.device, generator=rng)
            # in the critic's (augmented) input space: the metric the critic is Lipschitz in
            penalty, grad_norm = gradient_penalty(
                self.critic, real, fake, cond, t, one_sided=hp.lipschitz == "gp_one_sided"
            )
            loss = loss + hp.lambda_gp * penalty
            out["gradient_penalty"] = penalty.detach()
            out["grad_norm"] = grad_norm
        out["critic_loss"] = loss
        return out

    def generator_step(
        self, cond: Tensor, rng: torch.Generator | None = None, e_inc: Tensor | None = None
    ) -> Tensor:
        """Generator loss ``−mean h(G(z))`` for fresh noise at the batch's conditions (n, C)."""
        z = torch.randn(cond.shape[0], self.noise_dim, device=self.device, generator=rng)
        fake = self.critic_input(self.generator(z, cond), cond, self._batch_energies(cond, e_inc))
        return generator_loss(self.critic(fake, cond))

    def response_distance(self, rng: torch.Generator | None = None) -> Tensor:
        """The ``response_weight`` term's distance: showers generated at training conditions,
        their E_tot/E_inc against the training showers' per energy (:class:`ResponseReference`),
        differentiated exactly through the readout threshold (not straight-through)."""
        cond, groups = self.response.sample_conditions(rng)
        z = torch.randn(cond.shape[0], self.noise_dim, device=self.device, generator=rng)
        e = self._batch_energies(cond, None)
        if isinstance(self.generator, HierarchicalGenerator):
            # the exact gradient of the read-out sum: raising a voxel below the threshold adds nothing
            x = self.generator(z, cond, straight_through=False)
        else:
            x = self.generator(z, cond)
        return self.response.distance(self._fractions(x, e).sum(dim=1), groups)

    def _batch_energies(self, cond: Tensor, e_inc: Tensor | None) -> Tensor:
        # only transforms other than DivideByIncident need E_inc to make fractions
        if e_inc is not None:
            return e_inc
        return self.condition_transform.inverse(cond[:, 0])

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        x, cond, e_inc = batch["x"], batch["cond"], batch.get("e_inc")
        opt_c, opt_g = self.optimizers()
        rng = self.step_generator(self.global_step)
        log_due = self._log_due(self.global_step // (self.hparams.n_critic + 1))
        self.toggle_optimizer(opt_c)
        for _ in range(self.hparams.n_critic):
            c = self.critic_step(x, cond, rng, e_inc)
            if log_due:
                self._check_finite(c["critic_loss"], "the critic loss")
            opt_c.zero_grad(set_to_none=True)
            self.manual_backward(c["critic_loss"])
            opt_c.step()
            if self.hparams.lipschitz == "clip":
                clip_weights_(self.critic, self.hparams.clip_value)
        self.untoggle_optimizer(opt_c)

        # the critic's weights take no gradient here: only the generator is updated
        self.toggle_optimizer(opt_g)
        g_loss = self.generator_step(cond, rng, e_inc)
        if self.response is not None:
            response = self.response_distance(rng)
            g_loss = g_loss + self.hparams.response_weight * response
        if log_due:
            self._check_finite(g_loss, "the generator loss")
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        opt_g.step()
        self.untoggle_optimizer(opt_g)

        if log_due:
            logs = {f"train/{k}": v.detach() for k, v in c.items()}
            logs["train/gen_loss"] = g_loss.detach()
            if self.response is not None:
                logs["train/response_distance"] = response.detach()
            self.log_dict(logs, on_step=True, on_epoch=False, batch_size=x.shape[0])

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        # the critic's Wasserstein estimate on held-out data (no penalty: it needs input gradients)
        x, cond = batch["x"], batch["cond"]
        e = self._batch_energies(cond, batch.get("e_inc"))
        # the same noise at every validation, so epochs are compared on equal terms
        rng = self.step_generator(VALIDATION_STREAM, batch_idx)
        z = torch.randn(x.shape[0], self.noise_dim, device=self.device, generator=rng)
        fake = self.critic_input(self.generator(z, cond), cond, e)
        w = self.critic(self.critic_input(x, cond, e), cond).mean() - self.critic(fake, cond).mean()
        self.log("val/wasserstein", w, on_epoch=True, batch_size=x.shape[0], sync_dist=True)

    # ------------------------------------------------------------------ optimisers
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        hp = self.hparams
        betas = (hp.beta1, hp.beta2)
        opt_c = torch.optim.Adam(self.critic.parameters(), lr=hp.lr_critic, betas=betas)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=hp.lr_generator, betas=betas)
        return [opt_c, opt_g]
