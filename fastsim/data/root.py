"""Read showers from ROOT TTrees with uproot, streamed in chunks over many files.

Two layouts are understood (branch names, units and the layout are a :class:`RootSpec`):

``kind="voxels"``
    one incident-energy number per entry and one voxel-energy array per entry, either fixed-size
    (``float[368]``) or variable-size with the same length in every entry.
``kind="hits"``
    one incident energy per entry and jagged per-hit branches: energy plus either positions
    ``x, y, z`` (mm, detector frame; the layer from ``z`` and :attr:`RootSpec.layer_z`, or from a
    per-hit layer-id branch) or a layer id + cell index; optionally per-entry impact point
    ``(x0, y0, z0)`` and direction ``(dx, dy, dz)`` branches. The hits are voxelised by
    :func:`fastsim.data.voxelise.voxelise_hits` in the shower frame.

This module only reads and validates; the physics is in :mod:`fastsim.data.voxelise`. Every
problem with an input raises :class:`fastsim.errors.InputFileError` whose message reads
``path:tree/branch: problem``. Invalid entries (NaN/inf values, incident energy <= 0, negative
energies, zero direction) raise, or with ``bad="skip"`` are dropped and counted.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from fastsim.data.hdf5 import default_write_threads
from fastsim.data.voxelise import EdgeLookup, InvalidHitsError, VoxeliseStats, use_compiled, voxelise_hits
from fastsim.errors import FastsimError, InputFileError
from fastsim.geometry import Geometry

__all__ = [
    "ENERGY_UNITS",
    "LENGTH_UNITS",
    "RootSpec",
    "RootInput",
    "ChunkStats",
    "check_root_inputs",
    "iter_root_showers",
    "read_root_showers",
    "auto_step_size",
]

#: energy unit -> factor to MeV
ENERGY_UNITS: dict[str, float] = {"eV": 1e-6, "keV": 1e-3, "MeV": 1.0, "GeV": 1e3, "TeV": 1e6}
#: length unit -> factor to mm
LENGTH_UNITS: dict[str, float] = {"um": 1e-3, "mm": 1.0, "cm": 10.0, "m": 1000.0}

#: incident energies above this (100 TeV) are unit mix-ups, as in :mod:`fastsim.data.hdf5`
MAX_INCIDENT_MEV = 1e8
#: energies down to minus this (MeV) are float noise, as in :mod:`fastsim.data.hdf5`
NEGATIVE_TOLERANCE_MEV = 1e-3

#: branch bytes (uncompressed) aimed at per chunk when step_size is automatic
_AUTO_STEP_BYTES = 32 << 20
#: largest dense float64 (n, V+1) block a chunk may build when step_size is automatic
_AUTO_DENSE_BYTES = 64 << 20


@dataclass(frozen=True)
class RootSpec:
    """Where the showers are in the TTree, and their units.

    Attributes:
        kind: ``"voxels"`` (an array of voxel energies per entry) or ``"hits"`` (jagged hits).
        tree: TTree name (may include a directory, ``"dir/tree"``).
        incident_branch: per-entry incident energy.
        voxels_branch: per-entry voxel energies (``kind="voxels"``).
        hit_e: per-hit energy (``kind="hits"``).
        hit_x, hit_y, hit_z: per-hit position branches (mm after ``length_unit``); ``hit_z`` may be
            None when a layer branch is given and the axis is along +z.
        hit_layer: per-hit layer id branch (the geometry's ``Layer.id``); None: layer from ``hit_z``.
        hit_cell: per-hit cell index within the layer (``alpha_bin * n_r + r_bin``); with
            ``hit_layer`` it replaces positions altogether.
        impact_branches: per-entry impact point ``(x0, y0, z0)`` branches, or None for ``impact``.
        impact: fixed impact point in ``length_unit`` when ``impact_branches`` is None.
        direction_branches: per-entry direction ``(dx, dy, dz)`` branches, or None for ``direction``.
        direction: fixed shower direction when ``direction_branches`` is None (default +z).
        layer_z: layer z boundaries in **mm** (``n_layers + 1`` increasing values) for layers from z.
        energy_unit: unit of the hit/voxel energies (``ENERGY_UNITS``); converted to MeV.
        incident_energy_unit: unit of the incident energy; None: same as ``energy_unit``.
        length_unit: unit of positions and impact points (``LENGTH_UNITS``); converted to mm.
    """

    kind: Literal["voxels", "hits"] = "voxels"
    tree: str = "events"
    incident_branch: str = "e_inc"
    voxels_branch: str = "voxels"
    hit_e: str = "hit_e"
    hit_x: str | None = "hit_x"
    hit_y: str | None = "hit_y"
    hit_z: str | None = "hit_z"
    hit_layer: str | None = None
    hit_cell: str | None = None
    impact_branches: tuple[str, str, str] | None = None
    impact: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction_branches: tuple[str, str, str] | None = None
    direction: tuple[float, float, float] = (0.0, 0.0, 1.0)
    layer_z: tuple[float, ...] | None = None
    energy_unit: str = "MeV"
    incident_energy_unit: str | None = None
    length_unit: str = "mm"

    def __post_init__(self) -> None:
        if self.kind not in ("voxels", "hits"):
            raise FastsimError(f"kind must be 'voxels' or 'hits', got {self.kind!r}")
        for unit in (self.energy_unit, self.incident_energy_unit or self.energy_unit):
            if unit not in ENERGY_UNITS:
                raise FastsimError(f"unknown energy unit {unit!r}; choose one of {list(ENERGY_UNITS)}")
        if self.length_unit not in LENGTH_UNITS:
            raise FastsimError(
                f"unknown length unit {self.length_unit!r}; choose one of {list(LENGTH_UNITS)}"
            )
        if self.kind != "hits":
            return
        if self.hit_cell is not None and self.hit_layer is None:
            raise FastsimError("a hit cell branch needs a hit layer branch")
        if self.hit_cell is None:
            if not self.hit_x or not self.hit_y:
                raise FastsimError("per-hit x and y branches are needed (or a layer + cell branch)")
            if self.hit_layer is None and (not self.hit_z or self.layer_z is None):
                raise FastsimError(
                    "the hit layer needs a z branch and the layer z boundaries, or a layer branch"
                )
            if self.hit_z is None and not self._along_z_fixed():
                raise FastsimError("a shower direction other than +z needs a hit z branch")
        if self.layer_z is not None:
            z = np.asarray(self.layer_z, dtype=float)
            if z.ndim != 1 or len(z) < 2 or not np.all(np.isfinite(z)) or np.any(np.diff(z) <= 0):
                raise FastsimError(
                    f"layer z boundaries must be >= 2 increasing finite numbers (mm), got {self.layer_z}"
                )
        if self.direction_branches is None and not np.any(np.asarray(self.direction, dtype=float)):
            raise FastsimError("the fixed shower direction must be non-zero")

    def _along_z_fixed(self) -> bool:
        dx, dy, dz = self.direction
        return self.direction_branches is None and dx == 0 and dy == 0 and dz > 0

    @property
    def incident_scale(self) -> float:
        """Factor turning the incident-energy branch into MeV."""
        return ENERGY_UNITS[self.incident_energy_unit or self.energy_unit]

    @property
    def energy_scale(self) -> float:
        """Factor turning hit/voxel energies into MeV."""
        return ENERGY_UNITS[self.energy_unit]

    @property
    def length_scale(self) -> float:
        """Factor turning positions into mm."""
        return LENGTH_UNITS[self.length_unit]

    # roles of the branches: name -> what it must hold
    def branch_roles(self) -> dict[str, str]:
        """Every branch to read, mapped to its expected shape: ``scalar``, ``voxels``, ``jagged``
        or ``jagged-int``."""
        roles = {self.incident_branch: "scalar"}
        if self.kind == "voxels":
            roles[self.voxels_branch] = "voxels"
            return roles
        roles[self.hit_e] = "jagged"
        if self.hit_cell is not None:
            roles[self.hit_layer] = "jagged-int"  # type: ignore[index]
            roles[self.hit_cell] = "jagged-int"
        else:
            roles[self.hit_x] = "jagged"  # type: ignore[index]
            roles[self.hit_y] = "jagged"  # type: ignore[index]
            if self.hit_layer is not None:
                roles[self.hit_layer] = "jagged-int"
            if self.hit_z:
                roles[self.hit_z] = "jagged"
        for name in (self.impact_branches or ()) + (self.direction_branches or ()):
            roles[name] = "scalar"
        return roles


@dataclass(frozen=True)
class RootInput:
    """One checked input file: its path, tree and number of entries."""

    path: str
    tree: str
    n_entries: int
    bytes_per_entry: float  # uncompressed bytes of the branches we read, per entry

    def where(self, branch: str | None = None) -> str:
        """``path:tree/branch`` (or ``path:tree``) for error messages."""
        return f"{self.path}:{self.tree}" + (f"/{branch}" if branch else "")


@dataclass
class ChunkStats(VoxeliseStats):
    """:class:`VoxeliseStats` of one chunk plus where it came from.

    Attributes:
        path: the input file.
        entry_start, entry_stop: the chunk's entry range in that file's tree.
    """

    path: str = ""
    entry_start: int = 0
    entry_stop: int = 0


# ---------------------------------------------------------------------------------------- checks
def _one_line(err: BaseException) -> str:
    """``Type: message`` of an exception on one line (uproot's messages span several)."""
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def _open(path: str, **options: Any) -> Any:
    import uproot

    if not os.path.exists(path):
        raise InputFileError(path, "file not found")
    if os.path.isdir(path):
        raise InputFileError(path, "is a directory, not a ROOT file")
    try:
        return uproot.open(path, **options)
    except Exception as err:  # uproot raises ValueError/OSError/struct errors for non-ROOT bytes
        raise InputFileError(path, f"not a readable ROOT file ({_one_line(err)})") from None


def _describe_interp(interp: Any) -> str:
    name = type(interp).__name__
    if name == "AsDtype":
        shape = tuple(interp.inner_shape)
        base = np.dtype(interp.to_dtype).base
        return f"{base}[{']['.join(map(str, shape))}]" if shape else str(base)
    if name == "AsJagged":
        return f"variable-length {_describe_interp(interp.content)}[]"
    return name


def _check_branch(inp: RootInput, tree: Any, name: str, role: str, geometry: Geometry | None) -> int:
    """Check one branch's type for its role; return its uncompressed bytes."""
    import uproot

    where = inp.where(name)
    try:
        branch = tree[name]
    except (KeyError, uproot.KeyInFileError):
        keys = list(tree.keys())
        shown = ", ".join(keys[:40]) + (f", … ({len(keys)} in all)" if len(keys) > 40 else "")
        raise InputFileError(where, f"no such branch; the tree has: {shown or '(no branches)'}") from None
    try:
        interp = branch.interpretation
    except Exception as err:  # uproot.interpretation.identify.UnknownInterpretation and friends
        raise InputFileError(
            where, f"branch type {branch.typename!r} cannot be read as numbers ({err})"
        ) from None
    kind = type(interp).__name__
    numeric = kind == "AsDtype" and np.dtype(interp.to_dtype).base.kind in "iuf"
    inner = tuple(interp.inner_shape) if kind == "AsDtype" else None
    jag_numeric = (
        kind == "AsJagged"
        and type(interp.content).__name__ == "AsDtype"
        and np.dtype(interp.content.to_dtype).base.kind in "iuf"
        and tuple(interp.content.inner_shape) == ()
    )
    got = _describe_interp(interp)
    if role == "scalar":
        if not (numeric and inner in ((), (1,))):
            raise InputFileError(where, f"expected one number per entry, found {got} ({branch.typename})")
    elif role == "voxels":
        if numeric and len(inner) == 1:
            if geometry is not None and inner[0] != geometry.n_voxels:
                raise InputFileError(
                    where,
                    f"{inner[0]} voxels per entry but geometry {geometry.name!r} has {geometry.n_voxels}",
                )
        elif not jag_numeric:
            raise InputFileError(
                where, f"expected an array of voxel energies per entry, found {got} ({branch.typename})"
            )
    elif role in ("jagged", "jagged-int"):
        if not jag_numeric:
            raise InputFileError(
                where,
                f"expected a variable-length array of numbers per entry, found {got} ({branch.typename})",
            )
        if role == "jagged-int" and np.dtype(interp.content.to_dtype).kind not in "iu":
            raise InputFileError(where, f"expected integer indices, found {got}")
    return int(branch.uncompressed_bytes)


def check_root_inputs(
    paths: str | os.PathLike | Sequence[str | os.PathLike], spec: RootSpec, geometry: Geometry | None = None
) -> list[RootInput]:
    """Open every input and check its tree and branches before anything is read.

    Args:
        paths: one ROOT file or several.
        spec: branch names and layout.
        geometry: if given, fixed-size voxel arrays must have ``geometry.n_voxels`` values and
            ``spec.layer_z`` must have ``n_layers + 1`` boundaries.

    Returns:
        one :class:`RootInput` per file, in order.

    Raises:
        InputFileError: missing file, not ROOT, no such TTree, missing branch (the message lists
            the branches present), or a branch of the wrong shape or type.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise FastsimError("no input files given")
    if geometry is not None and spec.kind == "hits" and spec.layer_z is not None and spec.hit_layer is None:
        if len(spec.layer_z) != geometry.n_layers + 1:
            raise FastsimError(
                f"{len(spec.layer_z)} layer z boundaries given but geometry {geometry.name!r} has "
                f"{geometry.n_layers} layers: give {geometry.n_layers + 1}"
            )
    roles = spec.branch_roles()
    out = []
    for path in paths:
        with _open(path) as f:
            where = f"{path}:{spec.tree}"
            try:
                classname = f.classname_of(spec.tree)
            except Exception:
                classname = None
            if classname is None:
                trees = sorted({k.split(";")[0] for k, c in f.classnames().items() if c == "TTree"})
                raise InputFileError(
                    where, f"no such TTree; the file has TTrees: {', '.join(trees) or '(none)'}"
                )
            if classname != "TTree":
                raise InputFileError(where, f"is a {classname}, not a TTree")
            tree = f[spec.tree]
            inp = RootInput(path, spec.tree, int(tree.num_entries), 0.0)
            nbytes = sum(_check_branch(inp, tree, name, role, geometry) for name, role in roles.items())
            out.append(RootInput(path, spec.tree, inp.n_entries, nbytes / max(inp.n_entries, 1)))
    return out


def auto_step_size(inp: RootInput, n_voxels: int) -> int:
    """Entries per chunk: ~32 MB of branch data and at most a 64 MB dense (n, V+1) block.

    Keeps memory flat whatever the file size (the peak is set by the chunk, not the file).
    """
    by_bytes = _AUTO_STEP_BYTES / max(inp.bytes_per_entry, 1.0)
    by_dense = _AUTO_DENSE_BYTES / (8.0 * (n_voxels + 1))
    return int(max(1, min(by_bytes, by_dense, 100_000)))


# ---------------------------------------------------------------------------------------- reading
def _numpy(arr: Any) -> np.ndarray:
    import awkward as ak

    return ak.to_numpy(arr)


def _jagged(arr: Any) -> tuple[np.ndarray, np.ndarray]:
    """(counts (n,), flat content (M,)) of a jagged awkward array, without copying the content."""
    import awkward as ak

    return ak.to_numpy(ak.num(arr, axis=1)).astype(np.int64), ak.to_numpy(ak.flatten(arr, axis=1))


class _BadEntries:
    """Collects invalid entries of a chunk: reason -> boolean mask over the chunk's entries."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.masks: dict[tuple[str, str], np.ndarray] = {}

    def add(self, branch: str, reason: str, mask: np.ndarray) -> None:
        if mask.any():
            key = (branch, reason)
            self.masks[key] = self.masks[key] | mask if key in self.masks else mask

    def any(self) -> bool:
        return bool(self.masks)

    def raise_first(self, inp: RootInput, entry_start: int) -> None:
        total = np.zeros(self.n, dtype=bool)
        for m in self.masks.values():
            total |= m
        (branch, reason), mask = min(self.masks.items(), key=lambda kv: int(np.argmax(kv[1])))
        first = int(np.argmax(mask))
        more = int(total.sum()) - 1
        extra = (
            f" ({more} more invalid entries in entries {entry_start}-{entry_start + self.n - 1})"
            if more
            else ""
        )
        raise InputFileError(inp.where(branch), f"entry {entry_start + first}: {reason}{extra}")

    def keep(self) -> tuple[np.ndarray, dict[str, int]]:
        """Mask of the entries to keep, and how many were dropped per reason (first reason wins)."""
        bad = np.zeros(self.n, dtype=bool)
        reasons: dict[str, int] = {}
        for (_, reason), mask in self.masks.items():
            new = mask & ~bad
            if new.any():
                key = reason.split(" (")[0]
                reasons[key] = reasons.get(key, 0) + int(new.sum())
            bad |= mask
        return ~bad, reasons


def _hits_per_entry_bad(counts: np.ndarray, bad_hit: np.ndarray) -> np.ndarray:
    """Entries (n,) holding at least one flagged hit, from a per-hit mask (M,)."""
    entry = np.repeat(np.arange(len(counts)), counts)
    return np.bincount(entry[bad_hit], minlength=len(counts)) > 0


def _nonfinite(values: np.ndarray) -> bool:
    """Cheap test for NaN/inf: a float64 sum is non-finite iff some value is (no overflow here)."""
    if values.dtype.kind != "f":
        return False
    s = values.sum(dtype=np.float64)
    return not np.isfinite(s) and not np.all(np.isfinite(values))


def _read_chunk_voxels(
    arrays: Any, inp: RootInput, spec: RootSpec, geometry: Geometry, entry_start: int, bad: _BadEntries
) -> np.ndarray:
    """Voxel energies (n, V) of a chunk, in the file's unit; flags invalid entries in ``bad``."""
    import awkward as ak

    vox = arrays[spec.voxels_branch]
    n = len(vox)
    where_vox = inp.where(spec.voxels_branch)
    if vox.ndim != 2:
        raise InputFileError(where_vox, f"expected one array per entry, got type {vox.type}")
    layout = ak.to_layout(vox)
    if type(layout).__name__ == "RegularArray":
        showers = ak.to_numpy(vox)
    else:
        counts, flat = _jagged(vox)
        wrong = counts != geometry.n_voxels
        if wrong.any():
            k = int(np.argmax(wrong))
            raise InputFileError(
                where_vox,
                f"entry {entry_start + k} has {counts[k]} voxels but geometry {geometry.name!r} has "
                f"{geometry.n_voxels} ({int(wrong.sum())} entries of {n} in this chunk differ)",
            )
        showers = flat.reshape(n, geometry.n_voxels)
    if showers.shape[1] != geometry.n_voxels:
        raise InputFileError(
            where_vox,
            f"{showers.shape[1]} voxels per entry but geometry {geometry.name!r} has {geometry.n_voxels}",
        )
    if showers.dtype.kind == "f" and _nonfinite(showers):
        bad.add(spec.voxels_branch, "voxel energy is NaN or infinite", ~np.all(np.isfinite(showers), axis=1))
    neg = showers < -NEGATIVE_TOLERANCE_MEV / spec.energy_scale
    if neg.any():
        bad.add(spec.voxels_branch, "negative voxel energy", neg.any(axis=1))
    return showers


def _per_entry(
    arrays: Any, names: tuple[str, str, str] | None, fixed: tuple[float, float, float], n: int
) -> np.ndarray:
    if names is None:
        return np.broadcast_to(np.asarray(fixed, dtype=np.float64), (n, 3))
    return np.stack([_numpy(arrays[b]).reshape(n).astype(np.float64) for b in names], axis=1)


def _scale(a: np.ndarray, factor: float) -> np.ndarray:
    if factor == 1.0:
        return a
    return a * a.dtype.type(factor) if a.dtype.kind == "f" else a * factor


def iter_root_showers(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    geometry: Geometry,
    spec: RootSpec,
    step_size: int | str | None = None,
    bad: Literal["raise", "skip"] = "raise",
    inputs: list[RootInput] | None = None,
    prefetch: int = 1,
    threads: int | None = None,
    engine: str = "auto",
) -> Iterator[tuple[np.ndarray, np.ndarray, ChunkStats]]:
    """Stream showers from ROOT files chunk by chunk (``TTree.iterate``), file after file.

    Args:
        paths: one ROOT file or several, read in order.
        geometry: the voxel geometry the showers are (voxels) or are binned (hits) in.
        spec: branch names, layout and units.
        step_size: entries per chunk (int), a memory size understood by uproot (``"50 MB"``), or
            None for :func:`auto_step_size`. Chunks never span two files.
        bad: ``"raise"`` an :class:`InputFileError` at the first invalid entry, or ``"skip"`` invalid
            entries (counted in the stats' ``n_skipped``/``skipped_reasons``).
        inputs: the result of :func:`check_root_inputs` if already called (saves reopening).
        prefetch: chunks read ahead in a background thread while the current one is voxelised
            (0: read in this thread). Memory grows by that many raw chunks.
        threads: threads decompressing baskets and voxelising the blocks of a chunk of hits.
            None: 1 with the compiled voxeliser and ``prefetch`` (the read-ahead thread, ~17 ns/hit,
            and this one, ~14 ns/hit, already keep two cores busy; more threads only contend for
            them: on 2 cores, 15 and 20 alternating runs, median 0.85 of bare uproot's events/s
            with 1 thread against 0.81-0.83 with 2, ~5 % less CPU), else up to 2 of the CPUs this
            process may use (the numpy passes, ~40 ns/hit, gain from a second thread; voxel
            branches keep two decompressing threads). Results do not depend on it.
        engine: the voxeliser's passes, ``"auto"``, ``"numba"`` or ``"numpy"``
            (:func:`fastsim.data.voxelise.voxelise_hits`); results do not depend on it.

    Yields:
        ``(e_inc, showers, stats)``: float64 (n,) incident energies in MeV, float32 (n, V) voxel
        energies in MeV, and the chunk's :class:`ChunkStats` (hits and energy outside the
        geometry, skipped entries, file and entry range).

    Raises:
        InputFileError: see :func:`check_root_inputs`; plus, while reading, voxel arrays of the
            wrong length, hit branches whose per-entry counts disagree, and invalid entries when
            ``bad="raise"``.
    """
    if bad not in ("raise", "skip"):
        raise FastsimError(f"bad must be 'raise' or 'skip', got {bad!r}")
    if threads is None:  # default_write_threads: the CPUs this process may use
        compiled_hits = spec.kind == "hits" and prefetch > 0 and use_compiled(engine)
        threads = 1 if compiled_hits else min(2, default_write_threads())
    elif threads < 1:
        raise FastsimError(f"threads must be >= 1, got {threads}")
    if inputs is None:
        inputs = check_root_inputs(paths, spec, geometry)
    z_lookup = None
    if spec.kind == "hits" and spec.hit_layer is None and spec.hit_cell is None:
        if spec.layer_z is None or len(spec.layer_z) != geometry.n_layers + 1:
            raise FastsimError(f"geometry {geometry.name!r} needs {geometry.n_layers + 1} layer z boundaries")
        z_lookup = EdgeLookup([np.asarray(spec.layer_z, dtype=np.float64)])
    branches = list(spec.branch_roles())
    for inp in inputs:
        yield from _iter_file(inp, geometry, spec, branches, step_size, bad, z_lookup, prefetch, threads, engine)


def _read_chunks(inp: RootInput, tree: Any, branches: list[str], step: int | str) -> Iterator[tuple[Any, int]]:
    """(arrays, first entry) per chunk; read errors become InputFileError naming the file."""
    it = tree.iterate(branches, step_size=step, library="ak", report=True)
    while True:
        try:
            arrays, report = next(it)
        except StopIteration:
            return
        except FastsimError:
            raise
        except Exception as err:  # corrupt baskets, truncated files
            raise InputFileError(inp.where(), f"cannot read entries ({_one_line(err)})") from None
        yield arrays, int(report.tree_entry_start)


def _prefetch(items: Iterator[Any], depth: int) -> Iterator[Any]:
    """Run ``items`` in a background thread, ``depth`` items ahead of the consumer.

    Decompression (LZ4/zlib) and numpy release the GIL, so reading the next chunk overlaps with
    voxelising this one. The queue is bounded, so memory stays a fixed number of chunks; an error
    in the reader is re-raised here; closing this generator stops the reader.
    """
    if depth <= 0:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put((None, item)):
                    return
            put((None, done))
        except BaseException as err:  # forwarded to the consumer, which raises it
            put((err, None))

    thread = threading.Thread(target=work, name="fastsim-root-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            err, item = q.get()
            if err is not None:
                raise err
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join()


def _iter_file(
    inp: RootInput,
    geometry: Geometry,
    spec: RootSpec,
    branches: list[str],
    step_size: int | str | None,
    bad: str,
    z_lookup: EdgeLookup | None,
    prefetch: int,
    threads: int,
    engine: str = "auto",
) -> Iterator[tuple[np.ndarray, np.ndarray, ChunkStats]]:
    from concurrent.futures import ThreadPoolExecutor

    step = auto_step_size(inp, geometry.n_voxels) if step_size is None else step_size
    # threads > 1: baskets decompress in parallel (LZ4/zlib release the GIL)
    options = {}
    if threads > 1:
        options["decompression_executor"] = ThreadPoolExecutor(threads, thread_name_prefix="fastsim-root-decompress")
    try:
        with _open(inp.path, **options) as f:
            tree = f[inp.tree]
            chunks = _prefetch(_read_chunks(inp, tree, branches, step), prefetch)
            try:
                for arrays, entry_start in chunks:
                    yield _convert_chunk(arrays, inp, geometry, spec, entry_start, bad, z_lookup, threads, engine)
            finally:
                chunks.close()  # stop the reader thread before the file closes
    finally:
        if options:
            options["decompression_executor"].shutdown(wait=True)


def _convert_chunk(
    arrays: Any,
    inp: RootInput,
    geometry: Geometry,
    spec: RootSpec,
    entry_start: int,
    bad: str,
    z_lookup: EdgeLookup | None,
    threads: int = 1,
    engine: str = "auto",
) -> tuple[np.ndarray, np.ndarray, ChunkStats]:
    n = len(arrays)
    e_inc = _numpy(arrays[spec.incident_branch]).reshape(n).astype(np.float64)
    e_inc = _scale(e_inc, spec.incident_scale)
    flags = _BadEntries(n)
    if _nonfinite(e_inc):
        flags.add(spec.incident_branch, "incident energy is NaN or infinite", ~np.isfinite(e_inc))
    flags.add(spec.incident_branch, "incident energy <= 0", e_inc <= 0)
    flags.add(spec.incident_branch, f"incident energy > {MAX_INCIDENT_MEV:g} MeV", e_inc > MAX_INCIDENT_MEV)

    if spec.kind == "voxels":
        showers = _read_chunk_voxels(arrays, inp, spec, geometry, entry_start, flags)
        if flags.any() and bad == "raise":
            flags.raise_first(inp, entry_start)
        stats = ChunkStats(n_events=n, path=inp.path, entry_start=entry_start, entry_stop=entry_start + n)
        if flags.any():
            keep, reasons = flags.keep()
            e_inc, showers = e_inc[keep], showers[keep]
            stats.n_events, stats.n_skipped, stats.skipped_reasons = (
                int(keep.sum()),
                int((~keep).sum()),
                reasons,
            )
        showers = _scale(showers.astype(np.float32, copy=False), spec.energy_scale)
        return e_inc, np.ascontiguousarray(showers, dtype=np.float32), stats

    # ---- hits: every jagged branch must have the same number of hits per entry
    jag: dict[str, np.ndarray] = {}
    counts = None
    for name, role in spec.branch_roles().items():
        if not role.startswith("jagged"):
            continue
        c, flat = _jagged(arrays[name])
        if counts is None:
            counts, first = c, name
        elif not np.array_equal(c, counts):
            k = int(np.argmax(c != counts))
            raise InputFileError(
                inp.where(name),
                f"entry {entry_start + k} has {c[k]} hits but branch {first!r} has {counts[k]}",
            )
        jag[name] = flat
    assert counts is not None
    impact = _per_entry(arrays, spec.impact_branches, spec.impact, n) * spec.length_scale
    direction = None
    if spec.direction_branches is not None or not spec._along_z_fixed():
        direction = _per_entry(arrays, spec.direction_branches, spec.direction, n)
        bad_dir = ~np.all(np.isfinite(direction), axis=1) | ~np.any(direction != 0, axis=1)
        flags.add((spec.direction_branches or ("direction",))[0], "direction is zero, NaN or infinite", bad_dir)
    if spec.impact_branches is not None:
        flags.add(spec.impact_branches[0], "impact point is NaN or infinite", ~np.all(np.isfinite(impact), axis=1))

    length = spec.length_scale
    min_energy = -NEGATIVE_TOLERANCE_MEV

    def voxelise(jag: dict[str, np.ndarray], counts: np.ndarray, impact: np.ndarray,
                 direction: np.ndarray | None, check: bool) -> tuple[np.ndarray, VoxeliseStats]:
        get = jag.get
        return voxelise_hits(
            geometry,
            counts,
            _scale(jag[spec.hit_e], spec.energy_scale),
            x=_scale(get(spec.hit_x), length) if spec.hit_x in jag else None,
            y=_scale(get(spec.hit_y), length) if spec.hit_y in jag else None,
            z=_scale(get(spec.hit_z), length) if spec.hit_z in jag else None,
            layer_id=get(spec.hit_layer) if spec.hit_layer else None,
            cell=get(spec.hit_cell) if spec.hit_cell else None,
            z_edges=z_lookup,
            impact=impact,
            direction=direction,
            threads=threads,
            min_energy=min_energy if check else None,
            engine=engine,
        )

    if not flags.any():
        # the common case: the per-hit checks run inside the voxeliser's cache-sized blocks
        try:
            showers, vstats = voxelise(jag, counts, impact, direction, check=True)
        except InvalidHitsError:
            pass
        else:
            return e_inc, showers, _chunk_stats(vstats, inp, entry_start, n)

    # some entry is invalid: find every one, then raise or drop them
    for name, flat in jag.items():
        if _nonfinite(flat):
            flags.add(name, "hit value is NaN or infinite", _hits_per_entry_bad(counts, ~np.isfinite(flat)))
    e_hit = jag[spec.hit_e]
    neg_limit = min_energy / spec.energy_scale
    if e_hit.size and e_hit.min() < neg_limit:
        flags.add(spec.hit_e, "negative hit energy", _hits_per_entry_bad(counts, e_hit < neg_limit))
    stats_extra: dict[str, Any] = {}
    if flags.any():
        if bad == "raise":
            flags.raise_first(inp, entry_start)
        keep, reasons = flags.keep()
        hit_keep = np.repeat(keep, counts)
        jag = {k: v[hit_keep] for k, v in jag.items()}
        counts, e_inc, impact = counts[keep], e_inc[keep], impact[keep]
        direction = direction[keep] if direction is not None else None
        stats_extra = {"n_skipped": int((~keep).sum()), "skipped_reasons": reasons}
    showers, vstats = voxelise(jag, counts, impact, direction, check=False)
    return e_inc, showers, _chunk_stats(vstats, inp, entry_start, n, **stats_extra)


def _chunk_stats(vstats: VoxeliseStats, inp: RootInput, entry_start: int, n: int, **extra: Any) -> ChunkStats:
    return ChunkStats(
        n_events=vstats.n_events,
        n_hits=vstats.n_hits,
        n_hits_outside=vstats.n_hits_outside,
        e_hits=vstats.e_hits,
        e_outside=vstats.e_outside,
        path=inp.path,
        entry_start=entry_start,
        entry_stop=entry_start + n,
        **extra,
    )


def read_root_showers(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    geometry: Geometry,
    spec: RootSpec,
    **kwargs: Any,
) -> tuple[np.ndarray, np.ndarray, VoxeliseStats]:
    """Read all showers at once (small inputs, tests): :func:`iter_root_showers` concatenated.

    Returns:
        ``(e_inc (N,) float64 MeV, showers (N, V) float32 MeV, total stats)``.
    """
    e_parts, s_parts = [], []
    total = VoxeliseStats()
    for e_inc, showers, stats in iter_root_showers(paths, geometry, spec, **kwargs):
        e_parts.append(e_inc)
        s_parts.append(showers)
        total = total + stats
    if not e_parts:
        return np.zeros(0), np.zeros((0, geometry.n_voxels), dtype=np.float32), total
    return np.concatenate(e_parts), np.concatenate(s_parts), total
