"""Invertible preprocessing transforms between physical showers (MeV) and model space.

Every transform is a ``torch.nn.Module`` whose fitted state lives in registered buffers, so it
travels in a Lightning checkpoint's ``state_dict`` and is traced into ONNX with the generator.
Each has ``fit`` (in memory), ``partial_fit`` (streamed, chunk by chunk), ``forward`` (physical →
model space), ``inverse`` (model space → MeV) and ``config()``: a JSON-able dict with the class
name and the fitted values, from which :func:`build_transform` rebuilds an identical module.

- :class:`EnergyCondition` maps the incident energy to the conditioning input,
  ``log(E/E_min) / log(E_max/E_min)`` (0 at E_min, 1 at E_max), as in FastCaloGAN
  (ATLAS, Comput. Softw. Big Sci. 6 (2022) 7); :class:`AngleCondition` the incidence angle
  (degrees) linearly to ``(θ − θ_min)/(θ_max − θ_min)``; :class:`ConditionSet` holds both (the
  energy column and extra columns) for data that carries an angle.
- Voxel transforms take ``(showers (N, V) MeV, e_inc (N,) MeV)``: :class:`DivideByIncident`
  (the default, FastCaloGAN's energy fractions), :class:`LogTransform`, :class:`Standardize`
  (per-voxel mean and standard deviation) and :class:`Chain` composing them.

Streamed fitting: ``partial_fit`` accumulates (min/max, or Chan et al.'s parallel mean/variance)
and ``finish_fit`` turns the sums into buffers. :meth:`VoxelTransform.fit_stream` fits a whole
chain from a function that re-opens the chunk stream, one pass per stage that needs fitting
(a stage is fitted on the output of the stages before it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fastsim.errors import FastsimError
from fastsim.fitted import FittedModule

#: class name -> class, filled by :func:`_register`.
REGISTRY: dict[str, type[nn.Module]] = {}


def _register(cls: type[nn.Module]) -> type[nn.Module]:
    REGISTRY[cls.__name__] = cls
    return cls


def _tensor(x: Any, dtype: torch.dtype | None = None) -> Tensor:
    if isinstance(x, Tensor):
        return x if dtype is None else x.to(dtype)
    arr = np.asarray(x)
    t = torch.from_numpy(np.ascontiguousarray(arr))
    return t if dtype is None else t.to(dtype)


def _flat_e_inc(e_inc: Tensor) -> Tensor:
    """(N,) from (N,) or (N, 1)."""
    return e_inc.reshape(-1) if e_inc.dim() == 2 else e_inc


# --------------------------------------------------------------------------- energy condition


@_register
class EnergyCondition(FittedModule):
    """Incident energy (MeV) → conditioning value ``log(E/E_min) / log(E_max/E_min)``.

    Args:
        e_min: lowest incident energy in MeV (fitted when None).
        e_max: highest incident energy in MeV (fitted when None).

    Buffers ``e_min``/``e_max`` are float64 scalars. When ``e_max == e_min`` (one energy only) the
    denominator is taken as 1, so every shower gets the condition 0.
    """

    def __init__(self, e_min: float | None = None, e_max: float | None = None) -> None:
        super().__init__()
        self.register_buffer(
            "e_min", torch.tensor(float("nan") if e_min is None else float(e_min), dtype=torch.float64)
        )
        self.register_buffer(
            "e_max", torch.tensor(float("nan") if e_max is None else float(e_max), dtype=torch.float64)
        )
        self._fitted = e_min is not None and e_max is not None
        if self._fitted:
            self._check_range()
        self._run_min, self._run_max = math.inf, -math.inf

    def _after_load(self) -> None:
        # a state_dict saved from an unfitted module carries NaN
        self._fitted = bool(torch.isfinite(self.e_min)) and bool(torch.isfinite(self.e_max))

    def _check_range(self) -> None:
        lo, hi = float(self.e_min), float(self.e_max)
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
            raise FastsimError(f"EnergyCondition needs 0 < e_min <= e_max (MeV), got e_min={lo}, e_max={hi}")

    def partial_fit(self, e_inc: Any) -> EnergyCondition:
        """Accumulate the energy range from one chunk, ``e_inc`` (n,) or (n, 1) MeV."""
        e = np.asarray(e_inc.detach().cpu() if isinstance(e_inc, Tensor) else e_inc, dtype=np.float64).ravel()
        if e.size:
            self._run_min = min(self._run_min, float(e.min()))
            self._run_max = max(self._run_max, float(e.max()))
        return self

    def finish_fit(self) -> EnergyCondition:
        if not math.isfinite(self._run_min):
            raise FastsimError("EnergyCondition.fit: no incident energies seen")
        self.e_min.fill_(self._run_min)
        self.e_max.fill_(self._run_max)
        self._check_range()
        self._fitted = True
        self._run_min, self._run_max = math.inf, -math.inf
        return self

    def fit(self, e_inc: Any) -> EnergyCondition:
        """Set E_min, E_max to the range of ``e_inc`` (N,) MeV."""
        self._run_min, self._run_max = math.inf, -math.inf
        return self.partial_fit(e_inc).finish_fit()

    def _log_range(self) -> Tensor:
        r = torch.log(self.e_max / self.e_min)
        return torch.where(r > 0, r, torch.ones_like(r))

    def forward(self, e_inc: Tensor) -> Tensor:
        """``e_inc`` (N,) or (N, 1) MeV → (N, 1) in [0, 1] over the fitted range, dtype of the input."""
        self._require_fitted()
        e = _flat_e_inc(_tensor(e_inc))
        dtype = e.dtype if e.is_floating_point() else torch.float32
        # float64 inside: log of float32 energies near E_min loses digits near the 0 end
        out = torch.log(e.to(torch.float64) / self.e_min) / self._log_range()
        return out.to(dtype).unsqueeze(-1)

    def inverse(self, cond: Tensor) -> Tensor:
        """(N, 1) or (N,) condition → incident energy (N,) MeV, dtype of the input."""
        self._require_fitted()
        c = _flat_e_inc(_tensor(cond))
        out = self.e_min * torch.exp(c.to(torch.float64) * self._log_range())
        return out.to(c.dtype)

    def config(self) -> dict[str, Any]:
        self._require_fitted()
        return {"class": "EnergyCondition", "e_min": float(self.e_min), "e_max": float(self.e_max)}


@_register
class AngleCondition(FittedModule):
    """Incidence angle (degrees) → conditioning value ``(θ − θ_min) / (θ_max − θ_min)``.

    Linear: the angles a calorimeter sees span a few tens of degrees (|η| slices of a barrel,
    ``fastsim simulate --angle``), where a log scale has no meaning (0° is an ordinary angle).

    Args:
        angle_min: lowest training angle in degrees (fitted when None).
        angle_max: highest training angle in degrees (fitted when None).

    Buffers ``angle_min``/``angle_max`` are float64 scalars. When ``angle_max == angle_min`` (one
    angle only) the denominator is taken as 1, so every shower gets ``θ − θ_min`` (0 at that angle).
    """

    #: the condition's name in ``ConditionSet.names`` and the CLI (``--angles``)
    name = "angle"
    units = "deg"

    def __init__(self, angle_min: float | None = None, angle_max: float | None = None) -> None:
        super().__init__()
        for key, value in (("angle_min", angle_min), ("angle_max", angle_max)):
            self.register_buffer(key, torch.tensor(float("nan") if value is None else float(value), dtype=torch.float64))
        self._fitted = angle_min is not None and angle_max is not None
        if self._fitted:
            self._check_range()
        self._run_min, self._run_max = math.inf, -math.inf

    def _after_load(self) -> None:
        self._fitted = bool(torch.isfinite(self.angle_min)) and bool(torch.isfinite(self.angle_max))

    def _check_range(self) -> None:
        lo, hi = float(self.angle_min), float(self.angle_max)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise FastsimError(
                f"AngleCondition needs finite angle_min <= angle_max (degrees), got angle_min={lo}, angle_max={hi}"
            )

    def partial_fit(self, angles: Any) -> AngleCondition:
        """Accumulate the angle range from one chunk, ``angles`` (n,) or (n, 1) degrees."""
        a = np.asarray(angles.detach().cpu() if isinstance(angles, Tensor) else angles, dtype=np.float64).ravel()
        if a.size:
            self._run_min = min(self._run_min, float(a.min()))
            self._run_max = max(self._run_max, float(a.max()))
        return self

    def finish_fit(self) -> AngleCondition:
        if not math.isfinite(self._run_min):
            raise FastsimError("AngleCondition.fit: no incidence angles seen")
        self.angle_min.fill_(self._run_min)
        self.angle_max.fill_(self._run_max)
        self._check_range()
        self._fitted = True
        self._run_min, self._run_max = math.inf, -math.inf
        return self

    def fit(self, angles: Any) -> AngleCondition:
        """Set θ_min, θ_max to the range of ``angles`` (N,) degrees."""
        self._run_min, self._run_max = math.inf, -math.inf
        return self.partial_fit(angles).finish_fit()

    def _span(self) -> Tensor:
        r = self.angle_max - self.angle_min
        return torch.where(r > 0, r, torch.ones_like(r))

    def forward(self, angles: Tensor) -> Tensor:
        """``angles`` (N,) or (N, 1) degrees → (N, 1), in [0, 1] over the fitted range, dtype of the input."""
        self._require_fitted()
        a = _flat_e_inc(_tensor(angles))
        dtype = a.dtype if a.is_floating_point() else torch.float32
        out = (a.to(torch.float64) - self.angle_min) / self._span()
        return out.to(dtype).unsqueeze(-1)

    def inverse(self, cond: Tensor) -> Tensor:
        """(N, 1) or (N,) condition → angle (N,) degrees, dtype of the input."""
        self._require_fitted()
        c = _flat_e_inc(_tensor(cond))
        return (self.angle_min + c.to(torch.float64) * self._span()).to(c.dtype)

    @property
    def range(self) -> tuple[float, float]:
        """(θ_min, θ_max) in degrees: the training range."""
        return float(self.angle_min), float(self.angle_max)

    def config(self) -> dict[str, Any]:
        self._require_fitted()
        return {"class": "AngleCondition", "angle_min": float(self.angle_min), "angle_max": float(self.angle_max)}


#: the transforms a :class:`ConditionSet` may hold as extra condition columns
EXTRA_CONDITIONS = ("AngleCondition",)


@_register
class ConditionSet(FittedModule):
    """The condition columns of a model with more than the energy: column 0 the energy
    (:class:`EnergyCondition`), columns 1.. the extra conditions (e.g. :class:`AngleCondition`).

    It stands wherever an :class:`EnergyCondition` does: ``forward(e_inc (N,)) -> (N, 1)`` is the
    energy column, ``inverse`` gives MeV back, ``e_min``/``e_max`` are the energy's. The extra
    columns are scaled from physical units by :meth:`scale_extra` ``(N, K) -> (N, K)``. Its
    :meth:`config` (``{"class": "ConditionSet", "energy": {...}, "extra": [{...}]}``) is what a
    training tensors file with extra ``cond`` columns records, and what a model trained on it keeps
    in ``hparams["condition"]``, so the checkpoint alone scales raw angles (degrees).

    Args:
        energy: the energy condition (a module or its config).
        extra: the extra conditions, one per column after the energy (modules or configs).
    """

    needs_fit = False

    def __init__(self, energy: Any = None, extra: Iterable[Any] = ()) -> None:
        super().__init__()
        e = build_transform(energy) if isinstance(energy, dict | str) else (energy or EnergyCondition())
        if not isinstance(e, EnergyCondition):
            raise FastsimError(f"ConditionSet energy must be an EnergyCondition, got {type(e).__name__}")
        parts = [build_transform(x) if isinstance(x, dict | str) else x for x in extra]
        for t in parts:
            if type(t).__name__ not in EXTRA_CONDITIONS:
                raise FastsimError(f"ConditionSet extra conditions must be one of {EXTRA_CONDITIONS}, got {type(t).__name__}")
        self.energy = e
        self.extra = nn.ModuleList(parts)

    @property
    def is_fitted(self) -> bool:
        return self.energy.is_fitted and all(t.is_fitted for t in self.extra)

    @property
    def e_min(self) -> Tensor:
        return self.energy.e_min

    @property
    def e_max(self) -> Tensor:
        return self.energy.e_max

    @property
    def names(self) -> list[str]:
        """Names of the extra columns, in order (``["angle"]``)."""
        return [t.name for t in self.extra]

    def forward(self, e_inc: Tensor) -> Tensor:
        """The energy column: ``e_inc`` (N,) MeV → (N, 1)."""
        return self.energy(e_inc)

    def inverse(self, cond: Tensor) -> Tensor:
        """Energy column (N,) or (N, 1) → incident energy (N,) MeV."""
        return self.energy.inverse(cond)

    def scale_extra(self, values: Tensor) -> Tensor:
        """Extra conditions in physical units (N, K) (angles in degrees) → scaled (N, K), dtype of the input."""
        v = _tensor(values)
        if v.dim() == 1 and len(self.extra) == 1:
            v = v.unsqueeze(-1)
        if v.dim() != 2 or v.shape[1] != len(self.extra):
            raise FastsimError(f"expected extra conditions of shape (n, {len(self.extra)}), got {tuple(v.shape)}")
        return torch.cat([t(v[:, k]) for k, t in enumerate(self.extra)], dim=1)

    def config(self) -> dict[str, Any]:
        return {"class": "ConditionSet", "energy": self.energy.config(), "extra": [t.config() for t in self.extra]}


def condition_parts(config: dict[str, Any] | None) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(energy condition config, extra condition configs) of a condition config of either kind."""
    if not isinstance(config, dict):
        return None, []
    if config.get("class") == "ConditionSet":
        return config.get("energy"), list(config.get("extra", []))
    return config, []


# --------------------------------------------------------------------------- voxel transforms


class VoxelTransform(FittedModule):
    """Base class: ``forward(showers (N, V), e_inc (N,)) -> x (N, V)``, ``inverse(x, e_inc) -> showers``.

    Stateless transforms (``needs_fit = False``) implement only ``forward``/``inverse``/``config``.
    """

    needs_fit = False

    def partial_fit(self, showers: Any, e_inc: Any) -> VoxelTransform:
        """Accumulate statistics from one chunk (no-op for stateless transforms)."""
        return self

    def finish_fit(self) -> VoxelTransform:
        self._fitted = True
        return self

    def reset_fit(self) -> None:
        """Forget accumulated statistics (fitted buffers are kept until finish_fit)."""

    def fit(self, showers: Any, e_inc: Any) -> VoxelTransform:
        """Fit on arrays in memory: ``showers`` (N, V) MeV, ``e_inc`` (N,) MeV."""
        return self.fit_stream(lambda: [(showers, e_inc)])

    def fit_stream(self, make_chunks: Callable[[], Iterable[tuple[Any, Any]]]) -> VoxelTransform:
        """Fit from chunks without holding the data: ``make_chunks()`` returns a fresh iterable of
        ``(showers (n, V) MeV, e_inc (n,) MeV)``; it is called once per stage needing a fit."""
        self.reset_fit()
        if self.needs_fit:
            for s, e in make_chunks():
                self.partial_fit(s, e)
        return self.finish_fit()

    def forward(self, showers: Tensor, e_inc: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def inverse(self, x: Tensor, e_inc: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


@_register
class DivideByIncident(VoxelTransform):
    """``x = showers / E_inc``: energy fractions per voxel (FastCaloGAN's default input).

    Shapes: showers (N, V) MeV, e_inc (N,) or (N, 1) MeV → x (N, V) dimensionless, dtype of showers.
    """

    def forward(self, showers: Tensor, e_inc: Tensor) -> Tensor:
        s = _tensor(showers)
        return s / _flat_e_inc(_tensor(e_inc)).to(s.dtype).unsqueeze(-1)

    def inverse(self, x: Tensor, e_inc: Tensor) -> Tensor:
        x = _tensor(x)
        return x * _flat_e_inc(_tensor(e_inc)).to(x.dtype).unsqueeze(-1)

    def config(self) -> dict[str, Any]:
        return {"class": "DivideByIncident"}


@_register
class LogTransform(VoxelTransform):
    """``x = log(v + eps)`` on non-negative inputs; ``inverse = exp(x) - eps``.

    Args:
        eps: offset keeping empty voxels finite (log(eps) is their value). With energy fractions
            as input, 1e-6 puts empty voxels about 14 units below a fully-contained shower.
    """

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        if not eps > 0:
            raise FastsimError(f"LogTransform eps must be > 0, got {eps}")
        self.register_buffer("eps", torch.tensor(float(eps), dtype=torch.float64))

    def forward(self, showers: Tensor, e_inc: Tensor | None = None) -> Tensor:
        s = _tensor(showers)
        return torch.log(s + self.eps.to(s.dtype))

    def inverse(self, x: Tensor, e_inc: Tensor | None = None) -> Tensor:
        x = _tensor(x)
        return torch.exp(x) - self.eps.to(x.dtype)

    def config(self) -> dict[str, Any]:
        return {"class": "LogTransform", "eps": float(self.eps)}


@_register
class Standardize(VoxelTransform):
    """Per-voxel ``(v - mean) / std`` with mean and std fitted (streamable).

    Args:
        mean, std: fitted values (length V) to restore; None to fit.
        min_std: voxels whose fitted std is below this (e.g. always empty) get std = 1, so they
            map to ``v - mean`` instead of dividing by zero.

    Buffers ``mean``/``std`` are float32 (V,).
    """

    needs_fit = True
    _data_shaped_buffers = ("mean", "std")

    def __init__(self, mean: Any = None, std: Any = None, min_std: float = 1e-8) -> None:
        super().__init__()
        self.min_std = float(min_std)
        if (mean is None) != (std is None):
            raise FastsimError("Standardize: give both mean and std, or neither")
        m = torch.zeros(0) if mean is None else _tensor(mean, torch.float32).reshape(-1)
        s = torch.zeros(0) if std is None else _tensor(std, torch.float32).reshape(-1)
        if m.shape != s.shape:
            raise FastsimError(f"Standardize: mean has {m.numel()} values, std {s.numel()}")
        if mean is not None and not bool(torch.all(s > 0)):
            raise FastsimError("Standardize: std must be > 0")
        self.register_buffer("mean", m)
        self.register_buffer("std", s)
        self._fitted = mean is not None
        self.reset_fit()

    def reset_fit(self) -> None:
        self._count = 0
        self._mean_acc: np.ndarray | None = None
        self._m2_acc: np.ndarray | None = None

    def partial_fit(self, showers: Any, e_inc: Any = None) -> Standardize:
        """Merge one chunk's per-voxel mean and M2 (Chan, Golub & LeVeque 1979: stable in float64)."""
        x = np.asarray(showers.detach().cpu() if isinstance(showers, Tensor) else showers, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0:
            return self
        n_b = x.shape[0]
        mean_b = x.mean(axis=0)
        m2_b = ((x - mean_b) ** 2).sum(axis=0)
        if self._mean_acc is None:
            self._count, self._mean_acc, self._m2_acc = n_b, mean_b, m2_b
            return self
        if mean_b.shape != self._mean_acc.shape:
            raise FastsimError(
                f"Standardize: chunk has {mean_b.size} voxels, earlier chunks {self._mean_acc.size}"
            )
        n_a = self._count
        n = n_a + n_b
        delta = mean_b - self._mean_acc
        self._mean_acc = self._mean_acc + delta * (n_b / n)
        self._m2_acc = self._m2_acc + m2_b + delta**2 * (n_a * n_b / n)
        self._count = n
        return self

    def _after_load(self) -> None:
        self._fitted = self.mean.numel() > 0  # an unfitted module's state_dict has empty buffers

    def finish_fit(self) -> Standardize:
        if self._mean_acc is None:
            raise FastsimError("Standardize.fit: no data seen")
        std = np.sqrt(self._m2_acc / self._count)
        std = np.where(std < self.min_std, 1.0, std)
        device = self.mean.device
        self.mean = torch.as_tensor(self._mean_acc, dtype=torch.float32, device=device)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=device)
        self._fitted = True
        self.reset_fit()
        return self

    def forward(self, showers: Tensor, e_inc: Tensor | None = None) -> Tensor:
        self._require_fitted()
        s = _tensor(showers)
        return (s - self.mean.to(s.dtype)) / self.std.to(s.dtype)

    def inverse(self, x: Tensor, e_inc: Tensor | None = None) -> Tensor:
        self._require_fitted()
        x = _tensor(x)
        return x * self.std.to(x.dtype) + self.mean.to(x.dtype)

    def config(self) -> dict[str, Any]:
        self._require_fitted()
        return {
            "class": "Standardize",
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "min_std": self.min_std,
        }


@_register
class Chain(VoxelTransform):
    """Apply voxel transforms in order; the inverse applies their inverses in reverse order.

    Args:
        transforms: the stages, e.g. ``[DivideByIncident(), LogTransform(1e-6), Standardize()]``.
    """

    def __init__(self, transforms: Iterable[VoxelTransform]) -> None:
        super().__init__()
        stages = list(transforms)
        for t in stages:
            if not isinstance(t, VoxelTransform):
                raise FastsimError(f"Chain stages must be voxel transforms, got {type(t).__name__}")
        self.transforms = nn.ModuleList(stages)

    @property
    def needs_fit(self) -> bool:  # type: ignore[override]
        return any(t.needs_fit for t in self.transforms)

    @property
    def is_fitted(self) -> bool:
        return all(t.is_fitted for t in self.transforms)

    def fit_stream(self, make_chunks: Callable[[], Iterable[tuple[Any, Any]]]) -> Chain:
        """One pass over the chunks per stage that needs fitting, through the stages before it."""
        for i, stage in enumerate(self.transforms):
            if not stage.needs_fit:
                stage.finish_fit()
                continue
            before = list(self.transforms[:i])

            def through(before: list[VoxelTransform] = before) -> Iterable[tuple[Tensor, Any]]:
                with torch.no_grad():
                    for s, e in make_chunks():
                        x, et = _tensor(s), _tensor(e)
                        for t in before:
                            x = t(x, et)
                        yield x, et

            stage.fit_stream(through)
        return self

    def forward(self, showers: Tensor, e_inc: Tensor) -> Tensor:
        x = showers
        for t in self.transforms:
            x = t(x, e_inc)
        return x

    def inverse(self, x: Tensor, e_inc: Tensor) -> Tensor:
        for t in reversed(self.transforms):
            x = t.inverse(x, e_inc)
        return x

    def config(self) -> dict[str, Any]:
        return {"class": "Chain", "transforms": [t.config() for t in self.transforms]}


# --------------------------------------------------------------------------- configs


def build_transform(config: dict[str, Any] | str) -> nn.Module:
    """Rebuild a transform (with its fitted values) from :meth:`config` output or its JSON."""
    if isinstance(config, str):
        config = json.loads(config)
    if not isinstance(config, dict) or "class" not in config:
        raise FastsimError(f"transform config must be a dict with a 'class' key, got {config!r:.200}")
    kwargs = {k: v for k, v in config.items() if k != "class"}
    name = config["class"]
    if name not in REGISTRY:
        raise FastsimError(f"unknown transform class {name!r}; known: {sorted(REGISTRY)}")
    if name == "Chain":
        return Chain([build_transform(c) for c in kwargs.get("transforms", [])])
    if name == "ConditionSet":
        return ConditionSet(kwargs.get("energy"), kwargs.get("extra", []))
    try:
        return REGISTRY[name](**kwargs)
    except TypeError as err:
        raise FastsimError(f"bad {name} config: {err}") from None


#: Named voxel-transform recipes for the CLI (``--transform NAME``); each builds a fresh, unfitted chain.
PRESETS: dict[str, Callable[[], VoxelTransform]] = {
    "divide": lambda: Chain([DivideByIncident()]),
    "log": lambda: Chain([DivideByIncident(), LogTransform()]),
    "standardize": lambda: Chain([DivideByIncident(), Standardize()]),
    "log-standardize": lambda: Chain([DivideByIncident(), LogTransform(), Standardize()]),
}


def voxel_transform(spec: str | dict[str, Any] | VoxelTransform | None = None) -> VoxelTransform:
    """A voxel transform from a preset name, a config dict/JSON, or an instance (None: "divide")."""
    if spec is None:
        spec = "divide"
    if isinstance(spec, VoxelTransform):
        return spec
    if isinstance(spec, str) and spec in PRESETS:
        return PRESETS[spec]()
    if isinstance(spec, str) and not spec.lstrip().startswith("{"):
        raise FastsimError(
            f"unknown transform {spec!r}; choose one of {sorted(PRESETS)} or give a JSON config"
        )
    t = build_transform(spec)
    if not isinstance(t, VoxelTransform):
        raise FastsimError(f"{type(t).__name__} is not a voxel transform")
    return t


__all__ = [
    "PRESETS",
    "AngleCondition",
    "Chain",
    "ConditionSet",
    "DivideByIncident",
    "EnergyCondition",
    "LogTransform",
    "Standardize",
    "VoxelTransform",
    "build_transform",
    "condition_parts",
    "voxel_transform",
]
