"""Incident energies to generate showers at: parsing and seeded sampling (pure, no I/O).

An :class:`EnergyPlan` describes the N incident energies of a run without holding them all:
``plan.slice(start, stop)`` returns energies ``start..stop-1`` (MeV), computed from the index
alone. That keeps memory flat for any N and lets several devices each compute exactly their
own part of the run, in order, with the same values a single device would use.

Plans:

- :class:`DiscreteEnergies`: a list of energies each repeated a number of times, in the order
  given (``--energies 1024,2048 --n 1000`` or ``--points 1024:1000,2048:500``). These are the
  CaloChallenge dataset-1 style "discrete energies" runs that timing per energy refers to.
- :class:`LogUniformEnergies`: ``E = E_min (E_max/E_min)^u`` with ``u`` uniform, the
  CaloChallenge dataset-2/3 spectrum. Random numbers are drawn per block of
  :data:`LOG_UNIFORM_BLOCK` indices from ``SeedSequence([seed, ENERGY_STREAM, block])``, so a value depends only
  on (seed, index), never on batch size or device count.
- :class:`ArrayEnergies`: energies given explicitly (``--like REF.h5`` reads a reference file's
  ``incident_energies`` so the generated distribution matches it exactly, in order), with the
  file's per-event ``incident_angles`` when it has them.
- :class:`AngledPlan`: another plan repeated once per incidence angle (``--angles 0,20``): all of
  its showers at the first angle, then at the next (angle-major, as ``fastsim simulate --angle``).

A plan's :meth:`EnergyPlan.angles` gives the incidence angle of each shower (degrees) for models
conditioned on the angle, None for plans without one.

Every plan checks its energies with :func:`check_energies`: finite, > 0 and at most
:data:`MAX_ENERGY_MEV`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from fastsim.errors import FastsimError, InputFileError

#: Upper bound on a plausible incident energy (MeV): 100 TeV, far above any collider particle
#: (the CaloChallenge datasets stop at 4.2 TeV). Anything above is a unit mistake (eV, keV).
MAX_ENERGY_MEV = 1.0e8

#: Indices per independently seeded block of log-uniform draws.
LOG_UNIFORM_BLOCK = 1 << 16
#: Second seed word of the log-uniform energy draws ("ene"): a stream of its own.
ENERGY_STREAM = 0x656E65
#: Incidence angles are degrees from the calorimeter's normal, in [0, MAX_ANGLE_DEG).
MAX_ANGLE_DEG = 90.0


def check_energies(e_inc: np.ndarray | Sequence[float], what: str = "energies") -> np.ndarray:
    """Validate incident energies.

    Args:
        e_inc: energies in MeV, any shape.
        what: how to name them in the error message.

    Returns:
        the energies as a float64 array of the same shape.

    Raises:
        FastsimError: if any value is not finite, not > 0, or above :data:`MAX_ENERGY_MEV`.
    """
    e = np.asarray(e_inc, dtype=np.float64)
    if e.size == 0:
        return e
    bad = ~np.isfinite(e)
    if bad.any():
        raise FastsimError(f"{what}: {int(bad.sum())} value(s) are NaN or infinite")
    if (e <= 0).any():
        raise FastsimError(f"{what}: energies must be > 0 MeV, got minimum {e.min():g}")
    if (e > MAX_ENERGY_MEV).any():
        raise FastsimError(
            f"{what}: {e.max():g} MeV is above the {MAX_ENERGY_MEV:g} MeV limit (energies are in MeV)"
        )
    return e


def check_angles(angles: np.ndarray | Sequence[float], what: str = "angles") -> np.ndarray:
    """Validate incidence angles (degrees from the normal): finite, in [0, :data:`MAX_ANGLE_DEG`).

    Returns:
        the angles as a float64 array of the same shape.

    Raises:
        FastsimError: naming the first bad value.
    """
    a = np.asarray(angles, dtype=np.float64)
    bad = a[~np.isfinite(a) | (a < 0) | (a >= MAX_ANGLE_DEG)]
    if bad.size:
        raise FastsimError(f"{what}: {bad.flat[0]:g} is not an incidence angle in [0, {MAX_ANGLE_DEG:g}) degrees")
    return a


def check_count(n: int, what: str = "--n") -> int:
    """Raise :class:`FastsimError` unless ``n`` is an integer >= 1; return it as int."""
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise FastsimError(f"{what}: the number of showers must be an integer >= 1, got {n}")
    return int(n)


# ---------------------------------------------------------------------------------- parsing
def _parse_float(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise FastsimError(f"{what}: {text!r} is not a number") from None


def _parse_int(text: str, what: str) -> int:
    try:
        value = float(text)  # accept "1e6"
    except ValueError:
        raise FastsimError(f"{what}: {text!r} is not a count") from None
    if not math.isfinite(value) or value != int(value):
        raise FastsimError(f"{what}: {text!r} is not a whole number")
    return int(value)


def parse_energy_list(text: str) -> list[float]:
    """Parse ``"1024,2048,4096"`` (MeV) into a list of checked energies."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise FastsimError("--energies: empty list")
    values = [_parse_float(t, "--energies") for t in items]
    check_energies(values, "--energies")
    return values


def parse_angle_list(text: str) -> list[float]:
    """Parse ``"0,20,40"`` (degrees) into a list of checked incidence angles, distinct."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise FastsimError("--angles: empty list")
    values = [_parse_float(t, "--angles") for t in items]
    check_angles(values, "--angles")
    if len(set(values)) != len(values):
        raise FastsimError(f"--angles: {text!r} repeats an angle")
    return values


def parse_points(text: str) -> list[tuple[float, int]]:
    """Parse ``"1024:1000,2048:500"`` (energy in MeV : number of showers)."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise FastsimError("--points: empty list")
    points = []
    for item in items:
        if item.count(":") != 1:
            raise FastsimError(f"--points: {item!r} is not ENERGY:COUNT")
        e_text, n_text = item.split(":")
        energy = _parse_float(e_text, "--points")
        count = check_count(_parse_int(n_text, "--points"), f"--points {item}")
        points.append((energy, count))
    check_energies([e for e, _ in points], "--points")
    return points


# ---------------------------------------------------------------------------------- plans
class EnergyPlan:
    """The incident energies of a run, computed on demand by index.

    Subclasses implement :meth:`__len__` and :meth:`slice`; :meth:`groups` is overridden by
    plans made of runs of one energy so that batches never mix energies (timing per energy).
    """

    def __len__(self) -> int:
        raise NotImplementedError

    def slice(self, start: int, stop: int) -> np.ndarray:
        """Energies of showers ``start..stop-1``: float64 array (stop - start,), MeV."""
        raise NotImplementedError

    def groups(self) -> list[tuple[int, int]]:
        """``(start, stop)`` index ranges that batches must not cross: the whole run by default."""
        return [(0, len(self))]

    @property
    def discrete_values(self) -> list[float] | None:
        """The distinct energies when the run uses a few discrete ones, else None."""
        return None

    def describe(self) -> dict:
        """JSON-able description stored in the output file's attributes."""
        raise NotImplementedError

    @property
    def has_angles(self) -> bool:
        """Whether the plan gives an incidence angle per shower (:meth:`angles`)."""
        return False

    def angles(self, start: int, stop: int) -> np.ndarray | None:
        """Incidence angles of showers ``start..stop-1``: float64 (stop - start,) degrees, or None."""
        return None

    def angle_values(self) -> np.ndarray | None:
        """The distinct angles of the plan (sorted, degrees), or None."""
        return None

    def batches(self, batch_size: int) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` of each batch: at most ``batch_size`` showers, never crossing a group."""
        check_count(batch_size, "--batch-size")
        for g0, g1 in self.groups():
            for start in range(g0, g1, batch_size):
                yield start, min(start + batch_size, g1)

    def n_batches(self, batch_size: int) -> int:
        """Number of batches :meth:`batches` yields, computed without iterating."""
        check_count(batch_size, "--batch-size")
        return sum(-(-(g1 - g0) // batch_size) for g0, g1 in self.groups())


@dataclass(frozen=True)
class DiscreteEnergies(EnergyPlan):
    """Energy ``values[i]`` repeated ``counts[i]`` times, in the order given.

    Args:
        values: energies in MeV.
        counts: showers per energy, each >= 1.
    """

    values: tuple[float, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.values) != len(self.counts) or not self.values:
            raise FastsimError("discrete energies: need one count per energy and at least one energy")
        check_energies(self.values, "energies")
        for c in self.counts:
            check_count(c)
        object.__setattr__(self, "_offsets", np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64))

    @classmethod
    def each(cls, values: Sequence[float], n_each: int) -> DiscreteEnergies:
        """Every energy ``n_each`` times."""
        n_each = check_count(n_each)
        return cls(tuple(float(v) for v in values), tuple(n_each for _ in values))

    @classmethod
    def total(cls, values: Sequence[float], n_total: int) -> DiscreteEnergies:
        """``n_total`` showers shared as evenly as possible, the first energies getting one more."""
        n_total = check_count(n_total)
        k = len(values)
        if n_total < k:
            raise FastsimError(f"--n {n_total} is smaller than the number of energies ({k})")
        counts = tuple(n_total // k + (1 if i < n_total % k else 0) for i in range(k))
        return cls(tuple(float(v) for v in values), counts)

    @classmethod
    def from_points(cls, points: Sequence[tuple[float, int]]) -> DiscreteEnergies:
        return cls(tuple(float(e) for e, _ in points), tuple(int(n) for _, n in points))

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def slice(self, start: int, stop: int) -> np.ndarray:
        idx = np.arange(start, stop, dtype=np.int64)
        which = np.searchsorted(self._offsets, idx, side="right") - 1
        return np.asarray(self.values, dtype=np.float64)[which]

    def groups(self) -> list[tuple[int, int]]:
        return [(int(a), int(b)) for a, b in zip(self._offsets[:-1], self._offsets[1:], strict=True)]

    @property
    def discrete_values(self) -> list[float]:
        return list(self.values)

    def describe(self) -> dict:
        return {"kind": "discrete", "energies_mev": list(self.values), "counts": list(self.counts)}


@dataclass(frozen=True)
class LogUniformEnergies(EnergyPlan):
    """``n`` energies log-uniform in [e_min, e_max] MeV, reproducible from ``seed`` by index."""

    e_min: float
    e_max: float
    n: int
    seed: int

    def __post_init__(self) -> None:
        check_energies([self.e_min, self.e_max], "--log-uniform")
        if not self.e_max > self.e_min:
            raise FastsimError(f"--log-uniform: EMAX ({self.e_max:g}) must be above EMIN ({self.e_min:g})")
        check_count(self.n)

    def __len__(self) -> int:
        return self.n

    def _block(self, b: int) -> np.ndarray:
        # ENERGY_STREAM keeps these draws apart from the noise seeds, which derive from (seed, batch)
        rng = np.random.default_rng(np.random.SeedSequence([int(self.seed), ENERGY_STREAM, int(b)]))
        return rng.random(LOG_UNIFORM_BLOCK)

    def slice(self, start: int, stop: int) -> np.ndarray:
        if stop <= start:
            return np.zeros(0)
        b0, b1 = start // LOG_UNIFORM_BLOCK, (stop - 1) // LOG_UNIFORM_BLOCK
        u = np.concatenate([self._block(b) for b in range(b0, b1 + 1)])
        u = u[start - b0 * LOG_UNIFORM_BLOCK : stop - b0 * LOG_UNIFORM_BLOCK]
        return self.e_min * np.exp(u * math.log(self.e_max / self.e_min))

    def describe(self) -> dict:
        return {
            "kind": "log-uniform",
            "e_min_mev": self.e_min,
            "e_max_mev": self.e_max,
            "n": self.n,
            "seed": self.seed,
        }


#: Reference files with at most this many distinct energies get timing per energy.
MAX_DISCRETE_VALUES = 100


class ArrayEnergies(EnergyPlan):
    """Explicit energies (e.g. a reference file's ``incident_energies``), kept in order.

    Args:
        e_inc: energies in MeV, shape (N,) or (N, 1).
        source: where they came from (a file name), stored in the attributes.
    """

    def __init__(self, e_inc: np.ndarray, source: str = "array", angles: np.ndarray | None = None) -> None:
        e = np.asarray(e_inc, dtype=np.float64).reshape(-1)
        if e.size == 0:
            raise FastsimError(f"{source}: no incident energies")
        self.e_inc = check_energies(e, source)
        self.source = source
        self._angles = None
        if angles is not None:
            a = check_angles(np.asarray(angles, dtype=np.float64).reshape(-1), f"{source}: incident_angles")
            if a.shape != self.e_inc.shape:
                raise FastsimError(f"{source}: {a.size} incidence angles for {self.e_inc.size} energies")
            self._angles = a
        distinct = np.unique(self.e_inc)
        self._distinct = distinct.tolist() if len(distinct) <= MAX_DISCRETE_VALUES else None

    def __len__(self) -> int:
        return len(self.e_inc)

    def slice(self, start: int, stop: int) -> np.ndarray:
        return self.e_inc[start:stop]

    @property
    def discrete_values(self) -> list[float] | None:
        return self._distinct

    def describe(self) -> dict:
        out: dict = {"kind": "like", "source": self.source, "n": len(self)}
        if self._angles is not None:
            out["angles_deg"] = self.angle_values().tolist()
        return out

    @property
    def has_angles(self) -> bool:
        return self._angles is not None

    def angles(self, start: int, stop: int) -> np.ndarray | None:
        return None if self._angles is None else self._angles[start:stop]

    def angle_values(self) -> np.ndarray | None:
        return None if self._angles is None else np.unique(self._angles)

    def without_angles(self) -> ArrayEnergies:
        """The same energies, no angles (a model that does not take the angle)."""
        return ArrayEnergies(self.e_inc, self.source)


class AngledPlan(EnergyPlan):
    """``plan`` repeated once per incidence angle, angle-major: showers ``k·len(plan) …`` are the
    whole of ``plan`` at ``angles[k]`` (``--energies 1024,2048 --n 100 --angles 0,20``: 400 showers).

    Args:
        plan: the energies of one angle.
        angles: the incidence angles in degrees, distinct.
    """

    def __init__(self, plan: EnergyPlan, angles: Sequence[float]) -> None:
        a = check_angles(np.asarray(list(angles), dtype=np.float64).reshape(-1), "--angles")
        if a.size == 0:
            raise FastsimError("--angles: no angle")
        self.plan, self.angle_list, self._n = plan, a, len(plan)

    def __len__(self) -> int:
        return self._n * len(self.angle_list)

    def _split(self, start: int, stop: int) -> Iterator[tuple[int, int, int]]:
        """(angle index, start, stop inside ``plan``) pieces of the range ``start..stop-1``."""
        pos = start
        while pos < stop:
            k = pos // self._n
            end = min(stop, (k + 1) * self._n)
            yield k, pos - k * self._n, end - k * self._n
            pos = end

    def slice(self, start: int, stop: int) -> np.ndarray:
        parts = [self.plan.slice(a, b) for _, a, b in self._split(start, stop)]
        return np.concatenate(parts) if parts else np.zeros(0)

    def angles(self, start: int, stop: int) -> np.ndarray:
        parts = [np.full(b - a, self.angle_list[k]) for k, a, b in self._split(start, stop)]
        return np.concatenate(parts) if parts else np.zeros(0)

    @property
    def has_angles(self) -> bool:
        return True

    def angle_values(self) -> np.ndarray:
        return np.unique(self.angle_list)

    def groups(self) -> list[tuple[int, int]]:
        # batches never cross an angle (nor the plan's own groups): one angle per batch
        return [(k * self._n + a, k * self._n + b) for k in range(len(self.angle_list)) for a, b in self.plan.groups()]

    @property
    def discrete_values(self) -> list[float] | None:
        return self.plan.discrete_values

    def describe(self) -> dict:
        return {"kind": "angles", "angles_deg": self.angle_list.tolist(), "per_angle": self.plan.describe()}


# ---------------------------------------------------------------------------------- timing
def energy_key(e: float) -> str:
    """The JSON key of an energy in ``time_per_shower_by_energy``: ``"1024"``, ``"1536.5"``."""
    e = float(e)
    return str(int(e)) if e.is_integer() else repr(e)


class TimePerEnergy:
    """Accumulates generation time per shower for each of a few discrete energies.

    A batch's time is shared equally among its showers (the generator costs the same per shower
    whatever the energy); batches of :class:`DiscreteEnergies` never mix energies, so there the
    share is exact.

    Args:
        values: the distinct energies (MeV) to time, or None to time nothing.
    """

    def __init__(self, values: Sequence[float] | None) -> None:
        self.values = np.asarray(sorted(values), dtype=np.float64) if values else None
        n = 0 if self.values is None else len(self.values)
        self.seconds = np.zeros(n)
        self.counts = np.zeros(n, dtype=np.int64)

    def add(self, e_inc: np.ndarray, seconds: float) -> None:
        """Book ``seconds`` spent generating showers at energies ``e_inc`` (n,) MeV."""
        if self.values is None or len(e_inc) == 0:
            return
        idx = np.searchsorted(self.values, e_inc)
        idx = np.clip(idx, 0, len(self.values) - 1)
        counts = np.bincount(idx, minlength=len(self.values))
        self.counts += counts
        self.seconds += counts * (seconds / len(e_inc))

    def merge(self, other: TimePerEnergy) -> None:
        """Add another accumulator with the same energies (e.g. another device's)."""
        if self.values is None:
            return
        self.seconds += other.seconds
        self.counts += other.counts

    def to_state(self) -> dict:
        """JSON-able state: ``{key: [seconds, count]}``."""
        if self.values is None:
            return {}
        return {
            energy_key(v): [float(s), int(c)]
            for v, s, c in zip(self.values, self.seconds, self.counts, strict=True)
        }

    @classmethod
    def from_state(cls, state: dict) -> TimePerEnergy:
        values = [float(k) for k in state]
        out = cls(values or None)
        for k, (s, c) in state.items():
            i = int(np.searchsorted(out.values, float(k)))
            out.seconds[i], out.counts[i] = s, c
        return out

    def per_shower(self) -> dict[str, float]:
        """``{"<E in MeV>": seconds per shower}`` for the energies that were generated."""
        if self.values is None:
            return {}
        return {
            energy_key(v): float(s / c)
            for v, s, c in zip(self.values, self.seconds, self.counts, strict=True)
            if c > 0
        }


def energies_like(reference: str | os.PathLike, n_voxels: int | None = None) -> ArrayEnergies:
    """The incident energies of a CaloChallenge reference file, in file order (``--like``), with
    its per-event incidence angles (degrees) when it has an ``incident_angles`` dataset.

    The one function here that reads a file (through :mod:`fastsim.data.hdf5`, imported when called).

    Args:
        reference: a CaloChallenge HDF5 file.
        n_voxels: when given, the reference's showers must have this many voxels (the generated
            file is meant to be compared with it).

    Raises:
        InputFileError: missing or invalid file, bad energies, voxel count mismatch.
    """
    from fastsim.data.hdf5 import open_calochallenge

    reference = os.fspath(reference)
    if not os.path.exists(reference):
        raise InputFileError(reference, "reference file not found")
    with open_calochallenge(reference) as f:
        if n_voxels is not None and f.n_voxels != n_voxels:
            raise InputFileError(
                reference, f"reference showers have {f.n_voxels} voxels but the generator makes {n_voxels}"
            )
        e_inc = f.incident_energies()
        angles = f.incident_angles_deg()
    try:
        return ArrayEnergies(e_inc, source=reference, angles=angles)
    except FastsimError as err:
        raise InputFileError(reference, f"incident_energies: {err}") from None
