"""ShowerGeneratorModule: what every generator system shares.

A system holds the geometry (in ``hparams`` as ``Geometry.to_dict()``), the condition transform
(incident energy → conditioning value) and the voxel transform (MeV ↔ model space) as
submodules, so their fitted buffers travel in the checkpoint's ``state_dict`` and their
``config()`` in ``hparams``: the checkpoint alone turns noise and energies in MeV into showers in
MeV. Subclasses provide :meth:`decoder_network` (noise, conditions → model-space voxels).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from fastsim.errors import FastsimError, InputFileError
from fastsim.geometry import Geometry

#: key under which the system's class path is stored in a checkpoint (read by load_generator)
CLASS_KEY = "fastsim_model_class"
#: bumped when the checkpoint contents change incompatibly
CHECKPOINT_VERSION = 1
#: checkpoint key of the training data's energy scale ("em", "active" or "")
ENERGY_SCALE_KEY = "fastsim_energy_scale"
#: first seed word of validation noise, far from any global step
VALIDATION_STREAM = 1 << 40


class ShowerGeneratorModule(L.LightningModule):
    """Base class of the generator systems (WGANGP, ShowerVAE).

    Args:
        geometry: ``Geometry.to_dict()`` (or a built-in name / XML path, stored as a dict).
        transform: voxel-transform config (``transform.config()``), e.g. ``{"class": "DivideByIncident"}``.
        condition: fitted ``EnergyCondition.config()``, e.g. ``{"class": "EnergyCondition", "e_min": 256, "e_max": 4.2e6}``,
            or for data with an angle column a ``ConditionSet.config()`` (the energy and an
            ``AngleCondition``: the checkpoint then scales raw angles, :meth:`scale_extra_conditions`).
        n_conditions: condition columns; column 0 is the scaled energy, the others are extra
            conditions given by the data (and to :meth:`generate` as ``extra_conditions``).
        latent_dim: noise dimension.
        seed: seeds the training noise. The noise of each step is drawn from a generator
            reseeded with ``(seed, rank, global_step)``, so a resumed run draws the same noise as an
            uninterrupted one (Lightning does not checkpoint the global RNG) and DDP ranks differ.

    Subclasses call ``save_hyperparameters()`` first, then ``_init_shared(...)``.
    """

    def _init_shared(
        self,
        geometry: dict[str, Any] | str | None,
        transform: dict[str, Any] | None,
        condition: dict[str, Any] | None,
        n_conditions: int,
        latent_dim: int,
    ) -> None:
        from fastsim.data.transforms import build_transform

        self._rng: torch.Generator | None = None  # the step-seeded noise generator, made on first use

        if geometry is None:
            raise FastsimError(
                "the model needs a geometry (linked from the data module, or geometry=Geometry.to_dict())"
            )
        if condition is None:
            raise FastsimError("the model needs a fitted condition config (linked from the data module)")
        if n_conditions < 1:
            raise FastsimError(f"n_conditions must be >= 1 (column 0 is the energy), got {n_conditions}")
        if latent_dim < 1:
            raise FastsimError(f"latent_dim must be >= 1, got {latent_dim}")
        geo = Geometry.resolve(geometry)
        # stored as a dict so the checkpoint does not depend on an XML file that may move
        self.hparams["geometry"] = geo.to_dict()
        self._geometry = geo
        self.condition_transform: nn.Module = build_transform(condition)
        self.voxel_transform: nn.Module = build_transform(transform or {"class": "DivideByIncident"})
        self.hparams["transform"] = self.voxel_transform.config()
        self.hparams["condition"] = self.condition_transform.config()
        named = getattr(self.condition_transform, "names", None)
        if named is not None and 1 + len(named) != n_conditions:
            raise FastsimError(
                f"n_conditions is {n_conditions} but the condition config describes {1 + len(named)} columns "
                f"(energy, {', '.join(named)})"
            )
        #: per-energy standardised energy observables (EnergyFeatures), set by subclasses that use them
        self.features: nn.Module | None = None
        self._identity_fractions = transform_classes(self.hparams["transform"]) == ["DivideByIncident"]

    # ------------------------------------------------------------------ properties
    @property
    def geometry(self) -> Geometry:
        return self._geometry

    @property
    def n_voxels(self) -> int:
        return self._geometry.n_voxels

    @property
    def latent_dim(self) -> int:
        return int(self.hparams["latent_dim"])

    @property
    def noise_dim(self) -> int:
        """Width of generation's noise input: ``latent_dim``, plus any observation noise the
        decoding network draws from (see :class:`fastsim.models.vae.ShowerVAE` ``decode="sample"``)."""
        return self.latent_dim

    @property
    def n_conditions(self) -> int:
        return int(self.hparams["n_conditions"])

    @property
    def condition_names(self) -> list[str]:
        """Names of the condition columns: ``["energy"]``, ``["energy", "angle"]``; columns whose
        scaling the checkpoint does not record are ``"extra1"``, ``"extra2"``…"""
        named = getattr(self.condition_transform, "names", None)
        if named is not None:
            return ["energy", *named]
        return ["energy"] + [f"extra{k}" for k in range(1, self.n_conditions)]

    @property
    def angle_range(self) -> tuple[float, float] | None:
        """(θ_min, θ_max) in degrees of a model conditioned on the incidence angle, else None."""
        for t in getattr(self.condition_transform, "extra", ()):
            if getattr(t, "name", None) == "angle":
                return t.range
        return None

    def scale_extra_conditions(self, values: Tensor) -> Tensor:
        """Extra conditions in physical units (n, C − 1) (the angle in degrees) → scaled (n, C − 1)
        float32, as :meth:`generate`'s ``extra_conditions`` takes them.

        Raises:
            FastsimError: the model has no extra conditions, or its checkpoint does not record how
                to scale them.
        """
        if self.n_conditions == 1:
            raise FastsimError("this model takes no extra conditions (it is conditioned on the energy alone)")
        if not hasattr(self.condition_transform, "scale_extra"):
            raise FastsimError(
                f"this model takes {self.n_conditions - 1} extra condition column(s) whose scaling its checkpoint "
                "does not record; give them already scaled (generate(extra_conditions=...))"
            )
        v = torch.as_tensor(values).to(self.device)
        return self.condition_transform.scale_extra(v).to(torch.float32)

    # ------------------------------------------------------------------ inference
    def decoder_network(self) -> nn.Module:  # pragma: no cover - abstract
        """The network ``(noise (n, noise_dim), cond (n, C)) -> model-space voxels (n, V)`` used to generate."""
        raise NotImplementedError

    def decode(self, noise: Tensor, cond: Tensor) -> Tensor:
        """Model-space voxels (n, V) from noise (n, latent_dim) and conditions (n, C)."""
        return self.decoder_network()(noise, cond)

    def forward(self, noise: Tensor, cond: Tensor) -> Tensor:
        """Model-space voxels (n, V) from noise (n, latent_dim) and conditions (n, n_conditions)."""
        return self.decode(noise, cond)

    def sample_noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Standard-normal noise, shape (n, noise_dim), float32, on the model's device.

        With a ``generator`` the noise is drawn on the generator's device (so a CPU generator gives
        the same numbers whatever the model's device) and then moved to the model's device.
        """
        device = self.device if generator is None else generator.device
        z = torch.randn(int(n), self.noise_dim, generator=generator, device=device)
        return z.to(self.device)

    def conditions(self, e_inc: Tensor, extra_conditions: Tensor | None = None) -> Tensor:
        """Condition vectors (n, n_conditions), float32, from incident energies (n,) MeV.

        Args:
            e_inc: incident energies in MeV, shape (n,) or (n, 1).
            extra_conditions: the other condition columns (n, n_conditions − 1), already scaled
                as in the training tensors; required when ``n_conditions > 1``.
        """
        return _conditions(self.condition_transform, self.n_conditions, e_inc, extra_conditions)

    def to_showers(self, x: Tensor, e_inc: Tensor) -> Tensor:
        """Model-space voxels (n, V) → showers in MeV (n, V) float32, clamped at 0."""
        return _to_showers(self.voxel_transform, x, e_inc)

    def generate(
        self,
        e_inc: Tensor,
        generator: torch.Generator | None = None,
        extra_conditions: Tensor | None = None,
    ) -> Tensor:
        """Showers in MeV for the given incident energies.

        Args:
            e_inc: incident energies in MeV, shape (n,) (or (n, 1)), finite and > 0.
            generator: seeds the noise (on its own device); the global RNG when None.
            extra_conditions: (n, n_conditions − 1) for models with extra conditions.

        Returns:
            float32 tensor (n, V) of voxel energies in MeV, >= 0, on the model's device.
        """
        e = torch.as_tensor(e_inc).reshape(-1).to(self.device)
        if e.numel() and not bool(torch.all(torch.isfinite(e) & (e > 0))):
            raise FastsimError("incident energies must be finite and > 0 MeV")
        noise = self.sample_noise(e.shape[0], generator=generator)
        with torch.no_grad():
            cond = self.conditions(e, extra_conditions)
            return self.to_showers(self.decode(noise, cond), e)

    def export_module(self) -> nn.Module:
        """An ONNX-traceable module ``(noise (n, noise_dim), e_inc (n, 1) MeV) -> (n, V) MeV``.

        Models with extra conditions take a third input ``extra (n, n_conditions − 1)``: in physical
        units (the angle in degrees) when the checkpoint records their scaling (a ``ConditionSet``),
        already scaled otherwise.
        """
        return ExportedGenerator(
            self.decoder_network(), self.condition_transform, self.voxel_transform, self.n_conditions
        )

    # ------------------------------------------------------------------ energy features
    def feature_modules(self) -> list[nn.Module]:
        """The :class:`EnergyFeatures`-like modules fitted on the training data by :meth:`fit_features`."""
        return [] if self.features is None else [self.features]

    def setup(self, stage: str) -> None:
        # the one place a model looks at its data module: everything else comes through prepare()
        if stage != "fit":
            return
        tensors = getattr(self.trainer.datamodule, "tensors", None) if self._trainer else None
        if tensors is not None:
            self.prepare(tensors)
        elif self.needs_training_data():
            raise FastsimError(
                f"{type(self).__name__}'s energy features need the training data to fit their statistics "
                "(and its output init the mean shower): train with a ShowerDataModule, or call "
                "model.prepare(tensors) first"
            )

    def needs_training_data(self) -> bool:
        """Whether a fit must see the training tensors first (:meth:`prepare`): unfitted features."""
        return any(not m.is_fitted for m in self.feature_modules())

    def prepare(self, tensors: Any) -> None:
        """Take from the training tensors (a :class:`TrainingTensors`: ``read``, ``attrs``, ``len``)
        what the model needs before its first step: the energy features' statistics (fitted once;
        a resumed or reloaded model keeps its own) and the showers' energy scale, saved in every
        checkpoint. ``setup("fit")`` calls it with the data module's tensors; call it yourself to
        train or test without one."""
        if any(not m.is_fitted for m in self.feature_modules()):
            self.fit_features(tensors)
        self._energy_scale = str(getattr(tensors, "attrs", {}).get("energy_scale", "") or "")

    def fit_features(self, tensors: Any, rows: int = 1 << 16) -> None:
        """Fit the energy features' per-energy statistics on a :class:`TrainingTensors` file,
        streamed ``rows`` at a time (every DDP rank reads the whole file: identical statistics)."""
        modules = self.feature_modules()
        if not modules:
            raise FastsimError(f"this {type(self).__name__} uses no energy features")
        with naming_file(tensors, "EnergyFeatures.fit: "):
            for module in modules:
                module.fit_stream((f, cond[:, 0]) for f, cond in self.fraction_chunks(tensors, rows))

    def fraction_chunks(self, tensors: Any, rows: int = 1 << 16) -> Iterator[tuple[Tensor, np.ndarray]]:
        """The training tensors as ``(fractions (n, V), cond (n, C))``, ``rows`` at a time:
        voxel energies over the incident energy, whatever the model-space transform."""
        for start in range(0, len(tensors), rows):
            b = tensors.read(start, start + rows)
            x, e = torch.from_numpy(b["x"]), torch.from_numpy(b["e_inc"])
            with torch.no_grad():
                fractions = self._fractions(x, e)
            yield fractions, b["cond"]

    def _fractions(self, x: Tensor, e_inc: Tensor) -> Tensor:
        """Voxel energies over the incident energy, (n, V), from model space."""
        if self._identity_fractions:
            return x
        e = e_inc.reshape(-1, 1).to(x)
        return self.voxel_transform.inverse(x, e.reshape(-1)) / e

    # ------------------------------------------------------------------ training noise
    def step_generator(self, *keys: int) -> torch.Generator:
        """A generator on the model's device seeded by ``(seed, rank, *keys)`` (e.g. the global step)."""
        if self._rng is None or self._rng.device != self.device:
            self._rng = torch.Generator(device=self.device)
        words = np.random.SeedSequence([int(self.hparams["seed"]), int(self.global_rank), *map(int, keys)])
        lo, hi = words.generate_state(2, np.uint32)
        self._rng.manual_seed((int(hi) << 31) | int(lo))  # < 2**63: manual_seed takes an int64
        return self._rng

    # ------------------------------------------------------------------ checkpoint
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # never write a diverged model: the checkpoint on disk must stay the last good one
        bad = first_nonfinite(checkpoint.get("state_dict", {}))
        if bad is not None:
            raise FastsimError(
                f"training diverged: {bad!r} is NaN/inf at global step {self.global_step} "
                f"(epoch {self.current_epoch}); refusing to save it, the last checkpoint written is the last good one"
            )
        cls = type(self)
        checkpoint[CLASS_KEY] = f"{cls.__module__}.{cls.__qualname__}"
        checkpoint["fastsim_checkpoint_version"] = CHECKPOINT_VERSION
        checkpoint[ENERGY_SCALE_KEY] = self.energy_scale

    @property
    def energy_scale(self) -> str:
        """The energy scale of the showers it was trained on (``"em"``, ``"active"``, or ``""``
        where the training files did not say, or before :meth:`prepare`): its generated showers are
        on the same scale."""
        return getattr(self, "_energy_scale", "")

    # ------------------------------------------------------------------ logging and divergence
    def _log_due(self, batches_done: int) -> bool:
        """Whether the logger records this batch (``batches_done`` before it).

        ``self.log`` costs about a millisecond per call on the CPU side, as much as a whole small
        optimiser step, so metrics are only computed and logged on the batches Lightning writes
        (every ``log_every_n_steps``), the same rule as its logger connector.
        """
        if self._trainer is None:
            return True
        every = self.trainer.log_every_n_steps
        return every > 0 and (batches_done + 1) % every == 0

    def _check_finite(self, value: Tensor, what: str) -> None:
        """Raise on a NaN/inf loss. Called on logged batches only: a check is a device
        synchronisation; a weight made NaN in between is caught by this check later, by
        :class:`fastsim.training.callbacks.DivergenceCheck`, and never saved (on_save_checkpoint).

        Under DDP the decision is shared (any rank's NaN stops all ranks), so no rank is left
        waiting in a collective for one that has stopped.
        """
        bad = not bool(torch.isfinite(value))
        if self._trainer is not None and self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            raise FastsimError(
                f"training diverged: {what} is {value.item()} (on this or another rank) at global step {self.global_step} "
                f"(epoch {self.current_epoch}); the last checkpoint written is the last good one"
            )


@contextmanager
def naming_file(tensors: Any, prefix: str) -> Iterator[None]:
    """Turn a :class:`FastsimError` about the training data (its message starting with ``prefix``)
    into an :class:`InputFileError` naming the tensors' file: the message alone does not say which."""
    try:
        yield
    except FastsimError as err:
        path = getattr(tensors, "path", None)
        if path is None:
            raise
        raise InputFileError(path, str(err).removeprefix(prefix)) from None


def transform_classes(config: dict[str, Any]) -> list[str]:
    """Class names of a voxel-transform config, Chains flattened: ``["DivideByIncident", ...]``."""
    if config.get("class") == "Chain":
        return [c for t in config.get("transforms", []) for c in transform_classes(t)]
    return [str(config.get("class"))]


#: voxel transforms whose model-space values are >= 0 for non-negative showers
NON_NEGATIVE_TRANSFORMS = {"DivideByIncident"}


def first_nonfinite(state: dict[str, Tensor]) -> str | None:
    """Name of the first floating tensor in ``state`` holding NaN/inf, or None (one device sync)."""
    names = [k for k, v in state.items() if isinstance(v, Tensor) and v.is_floating_point() and v.numel()]
    if not names:
        return None
    ok = torch.stack([torch.isfinite(state[k]).all() for k in names]).cpu()
    return None if bool(ok.all()) else names[int((~ok).nonzero()[0])]


def _conditions(
    condition_transform: nn.Module, n_conditions: int, e_inc: Tensor, extra: Tensor | None
) -> Tensor:
    cond = condition_transform(e_inc.reshape(-1)).to(torch.float32)
    n_extra = n_conditions - 1
    if n_extra == 0:
        if extra is not None and extra.numel():
            raise FastsimError("this model takes no extra conditions")
        return cond
    if extra is None or tuple(extra.shape) != (cond.shape[0], n_extra):
        got = None if extra is None else tuple(extra.shape)
        raise FastsimError(
            f"this model needs extra conditions of shape ({cond.shape[0]}, {n_extra}), got {got}"
        )
    return torch.cat([cond, extra.to(cond)], dim=1)


def _to_showers(voxel_transform: nn.Module, x: Tensor, e_inc: Tensor) -> Tensor:
    # the clamp removes float round-off (and any inverse transform that can undershoot 0), so
    # every shower is a physical deposit pattern
    return torch.clamp(voxel_transform.inverse(x, e_inc.reshape(-1)), min=0.0).to(torch.float32)


class ExportedGenerator(nn.Module):
    """``(noise (n, noise_dim), e_inc (n, 1) MeV[, extra (n, C−1)]) -> showers (n, V) MeV``.

    ``extra`` is in physical units (the angle in degrees) when the condition transform is a
    ``ConditionSet`` (it scales them), already scaled otherwise.

    Holds only what generation needs (the decoding network and the two transforms, sharing the
    system's parameters), so an ONNX export carries no critic or encoder.
    """

    def __init__(
        self,
        network: nn.Module,
        condition_transform: nn.Module,
        voxel_transform: nn.Module,
        n_conditions: int,
    ) -> None:
        super().__init__()
        self.network = network
        self.condition_transform = condition_transform
        self.voxel_transform = voxel_transform
        self.n_conditions = int(n_conditions)

    def forward(self, noise: Tensor, e_inc: Tensor, extra: Tensor | None = None) -> Tensor:
        e = e_inc.reshape(-1)
        if extra is not None and hasattr(self.condition_transform, "scale_extra"):
            extra = self.condition_transform.scale_extra(extra)
        cond = _conditions(self.condition_transform, self.n_conditions, e, extra)
        return _to_showers(self.voxel_transform, self.network(noise, cond), e)
