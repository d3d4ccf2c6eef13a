"""A family of models: one generator per slice of the data, described by one YAML file.

ATLAS trains one FastCaloGAN per particle and |η| slice; here a slice is a selection of the
training showers (an incident-energy range, an incidence-angle range, or both; see
:data:`SELECTION_KEYS`) with its own config overrides. This module reads the
description, prepares each slice's training tensors, builds each slice's ``fastsim fit`` command
and records each slice's best checkpoint in one index file; :mod:`fastsim.generation.family`
generates from that index. The command line is ``fastsim family`` (:mod:`fastsim.training.family_cli`);
``scripts/slurm_family.sh`` runs one slice per SLURM array task with the same pieces.

The description (paths relative to the file)::

    name: photons-by-energy
    geometry: 1-photons
    inputs: [data/photons_1.h5, data/photons_2.h5]   # CaloChallenge HDF5 (MeV)
    workdir: family_runs            # per-slice tensors, logs, checkpoints (default: <name>/)
    index: family.json              # default: <workdir>/index.json
    configs: [wgan_gp, photons, cpu]   # `fastsim fit --config` of every slice (files or packaged names)
    fit_args: [--trainer.max_steps, "20000"]   # options given to every slice's `fastsim fit`
    prep: {transform: divide, seed: 0, threshold: 1.0}   # `fastsim prep-train` options (threshold: MeV)
    slices:
      - name: low
        select: {energy: [256, 8192]}          # MeV, lo <= E_inc < hi
        overrides: {model: {init_args: {lr: 1.0e-4}}}   # a config file given after the others
      - name: high
        select: {energy: [8192, 4.2e6]}
        fit_args: [--trainer.max_steps, "40000"]
      - name: forward                          # needs inputs with incident_angles (fastsim simulate --angle)
        select: {angle: [30, 90]}              # degrees from the normal, lo <= angle < hi; any energy

The index (JSON, rewritten atomically under a lock after every slice, so array tasks finishing
together cannot lose each other's entry and a re-run skips the slices already recorded)::

    {"format": "fastsim-family-index/1", "name": ..., "description": <abs path>, "geometry": ...,
     "slices": [{"name": "low", "task": 0, "select": {"energy": [256, 8192]}}, ...],
     # select: the keys the slice gives ("energy", "angle" or both); an absent key selects everything
     "trained": {"low": {"checkpoint": <abs path>, "checkpoint_sha256": ..., "chosen_by": ...,
                         "finished_utc": ...}, ...}}
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

from fastsim.errors import FastsimError, InputFileError
from fastsim.outputs import read_json

__all__ = [
    "INDEX_FORMAT",
    "SELECTION_KEYS",
    "FamilySlice",
    "Family",
    "load_family",
    "read_index",
    "record_slice",
    "best_checkpoint",
    "slice_fit_argv",
    "prepare_slice",
]

INDEX_FORMAT = "fastsim-family-index/1"
#: selection keys a slice may use, and what they select; ``energy`` and ``angle`` are supported (a
#: slice gives one or both), the others are refused with that reason, so a description naming them
#: fails before any work. ``abs_eta`` is not mapped to an angle: the simulated detector is flat slabs
#: at η ≈ 0, where θ = 90° − 2·atan(e^(−η)) (a projective barrel's relation, docs/fullsim.md) would
#: describe a geometry the showers were not simulated in
SELECTION_KEYS = {
    "energy": "incident energy range [lo, hi) in MeV",
    "angle": "incidence angle range [lo, hi) in degrees from the normal (inputs with incident_angles)",
    "abs_eta": "|η| range (the simulated detector is flat slabs at η ≈ 0, with no η geometry: select by "
    "`angle: [lo, hi]` in degrees; for a projective barrel θ = 90° − 2·atan(e^(−η)), docs/fullsim.md)",
    "particle": "particle name (needs per-particle inputs: give the slice its own `inputs`)",
}
#: the range of every angle (degrees): what a slice without an angle selection holds
ALL_ANGLES = (0.0, 90.0)
#: the range of every energy (MeV): what a slice without an energy selection holds
ALL_ENERGIES = (0.0, math.inf)
_TOP_KEYS = {"name", "geometry", "inputs", "workdir", "index", "configs", "fit_args", "prep", "slices"}
_SLICE_KEYS = {"name", "select", "overrides", "fit_args", "inputs"}
_PREP_KEYS = {"transform", "seed", "compression", "no_angle", "threshold"}


@dataclass(frozen=True)
class FamilySlice:
    """One slice: its selection and how its model is trained.

    Attributes:
        name: unique, also the name of its run directory.
        task: position in the description (the SLURM array task id).
        energy: ``(lo, hi)`` MeV: the slice holds ``lo <= E_inc < hi``; None: every energy.
        inputs: CaloChallenge files the slice's showers are selected from (absolute paths).
        overrides: nested config mapping given to ``fastsim fit`` after the shared configs.
        fit_args: extra ``fastsim fit`` options of this slice (after the shared ones).
        angle: ``(lo, hi)`` degrees: the slice holds ``lo <= angle < hi``; None: every angle.
    """

    name: str
    task: int
    energy: tuple[float, float] | None
    inputs: tuple[str, ...]
    overrides: dict[str, Any] = field(default_factory=dict)
    fit_args: tuple[str, ...] = ()
    angle: tuple[float, float] | None = None

    def select(self) -> dict[str, Any]:
        """The selection as written to the index: the keys the description gives."""
        ranges = {"energy": self.energy, "angle": self.angle}
        return {key: [r[0], r[1]] for key, r in ranges.items() if r is not None}

    def describe(self) -> str:
        """``"256 <= E < 8192 MeV, 0 <= angle < 30 deg"``: the selection for people."""
        parts = [f"{self.energy[0]:g} <= E < {self.energy[1]:g} MeV"] if self.energy else []
        parts += [f"{self.angle[0]:g} <= angle < {self.angle[1]:g} deg"] if self.angle else []
        return ", ".join(parts)


@dataclass(frozen=True)
class Family:
    """A parsed description (:func:`load_family`)."""

    path: str
    name: str
    geometry: str
    workdir: str
    index: str
    configs: tuple[str, ...]
    fit_args: tuple[str, ...]
    prep: dict[str, Any]
    slices: tuple[FamilySlice, ...]

    def slice(self, key: str | int) -> FamilySlice:
        """A slice by name or task number (a one-line error naming the choices otherwise)."""
        for s in self.slices:
            if s.name == str(key) or (str(key).isdigit() and s.task == int(key)):
                return s
        names = ", ".join(f"{s.task}={s.name}" for s in self.slices)
        raise InputFileError(self.path, f"no slice {key!r} (slices: {names})")

    def run_dir(self, s: FamilySlice) -> str:
        """Where slice ``s`` trains (``fastsim fit`` runs there: its logs stay apart)."""
        return os.path.join(self.workdir, s.name)

    def tensors_path(self, s: FamilySlice) -> str:
        return os.path.join(self.run_dir(s), "train.h5")

    def checkpoint_dir(self, s: FamilySlice) -> str:
        return os.path.join(self.run_dir(s), "checkpoints")


# ---------------------------------------------------------------------------------------- description
def _abs(base: str, path: str) -> str:
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(base, path))


def _str_list(where: str, key: str, value: Any) -> tuple[str, ...]:
    if (
        isinstance(value, str)
        or not isinstance(value, list)
        or not all(isinstance(v, (str, int, float)) for v in value)
    ):
        raise InputFileError(where, f"{key} must be a list of strings, got {value!r}")
    return tuple(str(v) for v in value)


def _range(where: str, key: str, value: Any) -> tuple[float, float] | None:
    """``select[key]`` as ``(lo, hi)`` (None when absent): energies 0 < lo < hi MeV, angles
    0 <= lo < hi <= 90 degrees."""
    if value is None:
        return None
    ok = isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)
    lo, hi = (float(value[0]), float(value[1])) if ok else (math.nan, math.nan)
    if key == "energy" and not (ok and 0 < lo < hi < math.inf):
        raise InputFileError(where, f"select.energy must be [lo, hi] in MeV with 0 < lo < hi, got {value!r}")
    if key == "angle" and not (ok and ALL_ANGLES[0] <= lo < hi <= ALL_ANGLES[1]):
        raise InputFileError(
            where, f"select.angle must be [lo, hi] in degrees with 0 <= lo < hi <= 90, got {value!r}"
        )
    return lo, hi


def _overlap(
    a: tuple[float, float] | None, b: tuple[float, float] | None, everything: tuple[float, float]
) -> bool:
    """Whether two ranges (None: ``everything``) share a value."""
    (a0, a1), (b0, b1) = a or everything, b or everything
    return a0 < b1 and b0 < a1


def load_family(path: str | os.PathLike) -> Family:
    """Read and check a family description (see the module docstring).

    Raises:
        InputFileError: missing or unreadable file, unknown keys, a slice without a name or
            selection, duplicate names, overlapping energy ranges, or a selection key the data
            cannot serve yet; the message names the file and the key.
    """
    from fastsim.training.configs import read_config, resolve_config

    path = os.path.abspath(os.fspath(path))
    if not os.path.exists(path):
        raise InputFileError(path, "family description not found")
    data = read_config(path)
    base = os.path.dirname(path)
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise InputFileError(path, f"unknown key {unknown[0]!r} (known: {', '.join(sorted(_TOP_KEYS))})")
    for key in ("name", "geometry", "configs", "slices"):
        if key not in data:
            raise InputFileError(path, f"missing key {key!r}")
    name = str(data["name"])
    inputs = tuple(_abs(base, p) for p in _str_list(path, "inputs", data.get("inputs", [])))
    configs = []
    for value in _str_list(path, "configs", data["configs"]):
        local = _abs(base, value)
        configs.append(local if os.path.exists(local) else resolve_config(value))
    prep = data.get("prep") or {}
    if not isinstance(prep, dict) or set(prep) - _PREP_KEYS:
        raise InputFileError(path, f"prep takes only {', '.join(sorted(_PREP_KEYS))}, got {prep!r}")
    threshold = prep.get("threshold", 0.0)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold < math.inf:
        raise InputFileError(path, f"prep.threshold must be a readout threshold >= 0 MeV, got {threshold!r}")
    if not isinstance(prep.get("no_angle", False), bool):
        raise InputFileError(path, f"prep.no_angle must be true or false, got {prep['no_angle']!r}")
    workdir = _abs(base, str(data.get("workdir", name)))
    index = _abs(base, str(data["index"])) if "index" in data else os.path.join(workdir, "index.json")
    raw = data["slices"]
    if not isinstance(raw, list) or not raw:
        raise InputFileError(path, "slices must be a non-empty list")
    slices: list[FamilySlice] = []
    for task, item in enumerate(raw):
        where = f"{path}: slices[{task}]"
        if not isinstance(item, dict) or "name" not in item or "select" not in item:
            raise InputFileError(where, "each slice needs a name and a select mapping")
        bad = sorted(set(item) - _SLICE_KEYS)
        if bad:
            raise InputFileError(where, f"unknown key {bad[0]!r} (known: {', '.join(sorted(_SLICE_KEYS))})")
        sname = str(item["name"])
        if not sname or os.sep in sname or sname.startswith("."):
            raise InputFileError(where, f"slice name {sname!r} must be a plain directory name")
        select = item["select"]
        if not isinstance(select, dict) or not ({"energy", "angle"} & set(select)):
            raise InputFileError(
                where, f"select must give an energy range, an angle range or both, got {select!r}"
            )
        for key in select:
            if key not in SELECTION_KEYS:
                raise InputFileError(where, f"unknown selection {key!r} (known: {', '.join(SELECTION_KEYS)})")
            if key not in ("energy", "angle"):
                raise InputFileError(where, f"selection {key!r} is not supported: {SELECTION_KEYS[key]}")
        overrides = item.get("overrides") or {}
        if not isinstance(overrides, dict):
            raise InputFileError(where, f"overrides must be a mapping of config keys, got {overrides!r}")
        s_inputs = (
            tuple(_abs(base, p) for p in _str_list(where, "inputs", item["inputs"]))
            if "inputs" in item
            else inputs
        )
        if not s_inputs:
            raise InputFileError(where, "no inputs: give `inputs` at the top or in the slice")
        fit_args = _str_list(where, "fit_args", item.get("fit_args", []))
        energy, angle = (
            _range(where, "energy", select.get("energy")),
            _range(where, "angle", select.get("angle")),
        )
        slices.append(FamilySlice(sname, task, energy, s_inputs, overrides, fit_args, angle))
    names = [s.name for s in slices]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputFileError(path, f"slice name {dup[0]!r} used twice")
    for i, a in enumerate(slices):  # an event in two slices would have two models
        for b in slices[i + 1 :]:
            if (
                _overlap(a.energy, b.energy, ALL_ENERGIES)
                and _overlap(a.angle, b.angle, ALL_ANGLES)
                and set(a.inputs) & set(b.inputs)
            ):
                what = "energy × angle" if a.angle or b.angle else "energy"
                raise InputFileError(
                    path,
                    f"slices {a.name!r} and {b.name!r} overlap in {what} ({a.describe()} and {b.describe()})",
                )
    return Family(path, name, str(data["geometry"]), workdir, index, tuple(configs),
                  _str_list(path, "fit_args", data.get("fit_args", [])), dict(prep), tuple(slices))  # fmt: skip


# ---------------------------------------------------------------------------------------- index
@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    """An exclusive lock beside ``path`` (``path.lock``): array tasks that finish together take turns."""
    import fcntl

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_index(path: str | os.PathLike) -> dict[str, Any]:
    """The index file's content, checked.

    Raises:
        InputFileError: missing, not JSON, or not a family index.
    """
    path = os.fspath(path)
    data = read_json(path, "family index")
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
        raise InputFileError(path, f"not a family index (no format {INDEX_FORMAT!r})")
    if not isinstance(data.get("slices"), list) or not isinstance(data.get("trained"), dict):
        raise InputFileError(path, "family index without its slices and trained entries")
    return data


def _write_json_atomic(path: str, data: dict[str, Any]) -> None:
    tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.partial-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def _fresh_index(family: Family) -> dict[str, Any]:
    return {
        "format": INDEX_FORMAT,
        "name": family.name,
        "description": family.path,
        "geometry": family.geometry,
        "slices": [{"name": s.name, "task": s.task, "select": s.select()} for s in family.slices],
        "trained": {},
    }


def trained_entry(family: Family, s: FamilySlice) -> dict[str, Any] | None:
    """The index entry of slice ``s`` if it is recorded with the same selection and its checkpoint
    still exists (a re-run then skips the slice), else None."""
    if not os.path.exists(family.index):
        return None
    index = read_index(family.index)
    entry = index["trained"].get(s.name)
    same = any(x.get("name") == s.name and x.get("select") == s.select() for x in index["slices"])
    if entry is None or not same or not os.path.exists(str(entry.get("checkpoint"))):
        return None
    return entry


def record_slice(family: Family, s: FamilySlice, checkpoint: str, chosen_by: str) -> dict[str, Any]:
    """Write slice ``s``'s checkpoint into the index (under the lock, atomically); returns the entry.

    The index's slice list is the description's as it is now; entries of slices whose selection
    changed since they were recorded are dropped (they would route events to the wrong model).
    """
    from fastsim.provenance import file_sha256

    entry = {
        "checkpoint": os.path.abspath(checkpoint),
        "checkpoint_sha256": file_sha256(checkpoint),
        "chosen_by": chosen_by,
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with _locked(family.index):
        index = read_index(family.index) if os.path.exists(family.index) else _fresh_index(family)
        fresh = _fresh_index(family)
        old = {x.get("name"): x.get("select") for x in index.get("slices", [])}
        kept = {
            name: e for name, e in index.get("trained", {}).items()
            if any(x["name"] == name and x["select"] == old.get(name) for x in fresh["slices"])
        }  # fmt: skip
        fresh["trained"] = {**kept, s.name: entry}
        _write_json_atomic(family.index, fresh)
    return entry


# ---------------------------------------------------------------------------------------- per slice
def best_checkpoint(checkpoint_dir: str) -> tuple[str, str]:
    """(path, how it was chosen) of a finished run's checkpoint to generate from.

    The best-validation checkpoint (``best-*.ckpt``, lowest ``val/chi2_ndf_sum`` by default) when
    the run wrote one; otherwise ``last.ckpt`` (a run too short to validate).

    Raises:
        FastsimError: the directory holds neither.
    """
    import glob

    best = sorted(glob.glob(os.path.join(checkpoint_dir, "best-*.ckpt")), key=os.path.getmtime)
    if best:
        return best[-1], "best validation checkpoint"
    last = os.path.join(checkpoint_dir, "last.ckpt")
    if os.path.exists(last):
        return last, "last checkpoint (the run wrote no best-validation checkpoint)"
    raise FastsimError(f"{checkpoint_dir}: no best-*.ckpt nor last.ckpt: did the slice's fastsim fit finish?")


def _select_into(family: Family, s: FamilySlice, output: str) -> tuple[int, np.ndarray | None]:
    """Copy the showers of ``s``'s energy and angle ranges from its inputs into a CaloChallenge file,
    with their ``incident_angles`` when every input has them.

    Returns:
        (N, the selected showers' angles (N,) degrees or None).

    Raises:
        InputFileError: a missing input; an input without ``incident_angles`` for a slice that
            selects by angle (naming the input); no shower selected.
    """
    import numpy as np

    from fastsim.data.hdf5 import ANGLES_DATASET, ShowerWriter, open_calochallenge

    (lo, hi), (a_lo, a_hi) = s.energy or ALL_ENERGIES, s.angle or ALL_ANGLES
    n = 0
    kept_angles: list[np.ndarray] | None = []
    writer: ShowerWriter | None = None
    try:
        for path in s.inputs:
            if not os.path.exists(path):
                raise InputFileError(path, f"input of slice {s.name!r} not found")
            with open_calochallenge(path) as f:
                angles = f.incident_angles_deg()
                if angles is None and s.angle is not None:
                    raise InputFileError(path, f"has no {ANGLES_DATASET} dataset, and slice {s.name!r} of "
                                         f"{family.path} selects by angle")  # fmt: skip
                if angles is None:
                    kept_angles = None  # some input without angles: the slice's file has none
                if writer is None:
                    writer = ShowerWriter(output, f.n_voxels, attrs={"producer": "fastsim-family-select",
                                          "family": family.name, "slice": s.name}, overwrite=True, compression=None)  # fmt: skip
                start = 0
                for e_inc, showers in f.iter_chunks():
                    keep = (e_inc >= lo) & (e_inc < hi)
                    if angles is not None:
                        a = angles[start : start + len(e_inc)]
                        keep &= (a >= a_lo) & (a < a_hi)
                        if kept_angles is not None:
                            kept_angles.append(a[keep])
                    start += len(e_inc)
                    if keep.any():
                        writer.append(e_inc[keep], showers[keep])
                        n += int(keep.sum())
        if n == 0:
            raise InputFileError(family.path, f"slice {s.name!r}: no shower of its inputs has {s.describe()}")
        assert writer is not None
        selected_angles = None if kept_angles is None else np.concatenate(kept_angles)
        if selected_angles is not None:
            writer.add_dataset(ANGLES_DATASET, selected_angles[:, None], units="deg")
        writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return n, selected_angles


def prepare_slice(family: Family, s: FamilySlice, progress: bool = False) -> str:
    """Make slice ``s``'s training tensors (once: an existing file is kept); returns their path.

    The incidence angle becomes the model's second condition (docs/angles.md) when the slice's
    showers carry several angles; a slice of one angle (or inputs without angles, or ``prep:
    {no_angle: true}``) trains an energy-only model, which generates every event of its slice.
    """
    import numpy as np

    from fastsim.data.tensors import prepare_training_tensors

    out = family.tensors_path(s)
    if os.path.exists(out):
        return out
    os.makedirs(family.run_dir(s), exist_ok=True)
    selected = os.path.join(family.run_dir(s), "selected.h5")
    _, angles = _select_into(family, s, selected)
    with_angle = angles is not None and len(np.unique(angles)) > 1 and not family.prep.get("no_angle", False)
    try:
        prepare_training_tensors(
            [selected], out, family.geometry, transform_config=family.prep.get("transform"),
            seed=int(family.prep.get("seed", 0)), progress=progress, compression=family.prep.get("compression"),
            angles=with_angle, threshold=float(family.prep.get("threshold", 0.0)),
        )  # fmt: skip
    finally:
        os.remove(selected)
    return out


def slice_fit_argv(family: Family, s: FamilySlice) -> list[str]:
    """``fastsim fit`` options of slice ``s`` (run in :meth:`Family.run_dir`), after
    :func:`prepare_slice`: the shared configs, the slice's overrides (written as a config file
    beside its tensors), its tensors and checkpoint directory, the shared then the slice's options."""
    import yaml

    argv: list[str] = []
    for cfg in family.configs:
        argv += ["--config", cfg]
    if s.overrides:
        path = os.path.join(family.run_dir(s), "overrides.yaml")
        os.makedirs(family.run_dir(s), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(s.overrides, f, sort_keys=False)
        argv += ["--config", path]
    ckdir = family.checkpoint_dir(s)
    argv += ["--data.train_file", family.tensors_path(s),
             "--checkpoint.dirpath", ckdir, "--best_checkpoint.dirpath", ckdir]  # fmt: skip
    return argv + list(family.fit_args) + list(s.fit_args)
