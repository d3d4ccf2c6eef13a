"""The "training tensors" file: model-space showers, conditions and energies, shuffled, on disk.

One HDF5 file holding

- ``x`` (N, V) float32: voxels after the fitted voxel transform (model space);
- ``cond`` (N, C) float32: conditions, column 0 the scaled incident energy (:class:`EnergyCondition`),
  column 1 (when every input has ``incident_angles``) the scaled incidence angle (:class:`AngleCondition`);
- ``e_inc`` (N,) float64: incident energies in MeV;

rows globally shuffled with a seed, so a streaming DataModule can read contiguous blocks. Its
attributes: ``format = "fastsim-training-tensors"``, ``format_version``, ``geometry`` (JSON),
``transform`` and ``condition`` (JSON configs with the fitted values, for
:func:`fastsim.data.transforms.build_transform`: an ``EnergyCondition`` for one column, a
``ConditionSet`` of the energy and the angle for two), ``sources`` (JSON list of the input files with
their SHA-256 and row counts), ``seed``, the skip counts and :func:`fastsim.provenance.provenance`.

:func:`prepare_training_tensors` builds it in streamed passes, never holding more than one chunk
plus one shuffle bucket in memory:

0. check the structure of every input against the geometry (metadata only, so a broken last file
   fails before any work);
1. one streamed pass per input: validate all values (:func:`fastsim.data.hdf5.validate_detailed`),
   mask unusable rows (dropped and counted with ``skip_bad=True``; otherwise the file's problems
   stop everything with one :class:`InputFileError`), accumulate the incident-energy range, apply
   the leading transform stages that need no fit (e.g. :class:`DivideByIncident`, :class:`LogTransform`)
   and scatter every row to one of K temporary bucket datasets, the bucket given by a hash of
   (seed, global row index); K is chosen so one bucket fits in ``bucket_bytes``;
2. fit the remaining stages (e.g. :class:`Standardize`), streaming over the buckets;
3. gather: read each bucket, permute it with a generator seeded by (seed, bucket), apply the
   remaining stages and the energy condition, and write it.

Reading each input once keeps the cost near one read of the inputs plus one write and one read of
the (uncompressed) bucket file. Uniform bucket choice followed by a uniform shuffle inside each
bucket gives a uniformly random permutation of all rows (the classic two-pass shuffle). Because the
bucket of a row depends only on its global index and the seed, the output is identical for any
``chunk_size``.

Voxel values in [-NEGATIVE_TOLERANCE_MEV, 0) (float noise the validator tolerates) are clipped to
0 before the transform, since a log transform of a negative fraction would be NaN.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from fastsim.data.hdf5 import (
    ANGLES_DATASET,
    RowInfo,
    auto_chunk_size,
    decode_attrs,
    default_chunk_rows,
    open_calochallenge,
    open_h5,
    validate_detailed,
)
from fastsim.errors import FastsimError, InputFileError
from fastsim.geometry import Geometry
from fastsim.outputs import check_target, discard, publish, temporary_path

FORMAT = "fastsim-training-tensors"
FORMAT_VERSION = 1
#: Memory one shuffle bucket may take (x + cond + e_inc), bytes.
DEFAULT_BUCKET_BYTES = 256 << 20

#: Kinds of validation problems that can be dropped row by row with ``skip_bad``.
_SKIPPABLE = {"nonfinite", "energy", "negative"}


def _progress(iterable: Any = None, **kwargs: Any) -> Any:
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)


# --------------------------------------------------------------------------- shuffle keys


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 (Steele, Lea & Flood 2014): a well-mixed hash per value."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def bucket_of(rows: np.ndarray, seed: int, n_buckets: int) -> np.ndarray:
    """Shuffle bucket (0..n_buckets-1) of global row indices ``rows`` (int (n,)), fixed by ``seed``."""
    key = _splitmix64(np.asarray(rows, dtype=np.uint64) ^ _splitmix64(np.array([seed], dtype=np.uint64)))
    return (key % np.uint64(n_buckets)).astype(np.int64)


def shuffle_order(n_rows: int, seed: int, n_buckets: int) -> np.ndarray:
    """The permutation :func:`prepare_training_tensors` applies, computed in memory (for checks).

    Returns:
        int64 (n_rows,): output row i holds the usable input row ``order[i]`` (rows counted over
        all inputs in order, skipped rows excluded).
    """
    b = bucket_of(np.arange(n_rows), seed, n_buckets)
    parts = []
    for k in range(n_buckets):
        rows = np.flatnonzero(b == k)
        parts.append(rows[np.random.default_rng([seed, k]).permutation(len(rows))])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


# --------------------------------------------------------------------------- preparation


@dataclass
class _Source:
    path: str
    n_showers: int
    n_written: int = 0
    angles: np.ndarray | None = None  # (n_showers,) degrees, when the angle is a condition
    skipped: dict[str, int] = field(default_factory=dict)


def _good_rows(masks: dict[str, np.ndarray], skipped: dict[str, int]) -> np.ndarray:
    """Boolean (n,) mask of usable rows; counts each unusable row once, under its first reason."""
    bad = np.zeros(len(next(iter(masks.values()))), dtype=bool)
    for reason, m in masks.items():
        new = m & ~bad
        if new.any():
            skipped[reason] = skipped.get(reason, 0) + int(new.sum())
        bad |= m
    return ~bad


def _create(
    f: h5py.File, name: str, shape: tuple[int, ...], dtype: Any, rows: int, compression: str | None
) -> h5py.Dataset:
    """A chunked dataset of ``rows`` rows per chunk, resizable along axis 0."""
    opts: dict[str, Any] = {}
    if compression == "gzip":
        opts = {"compression": "gzip", "compression_opts": 4}
    elif compression == "lzf":
        opts = {"compression": "lzf"}
    elif compression is not None:
        raise FastsimError(f"compression must be 'gzip', 'lzf' or None, got {compression!r}")
    return f.create_dataset(
        name, shape=shape, maxshape=(None, *shape[1:]), dtype=dtype, chunks=(max(1, rows), *shape[1:]), **opts
    )


class _Buckets:
    """K shuffle buckets in a temporary uncompressed HDF5 file: ``x{k}`` (n, V) float32, ``e{k}`` (n,) float64
    (and ``a{k}`` (n,) float64 angles in degrees, ``with_angles``).

    Rows are appended in input order; the bucket of a row is :func:`bucket_of` its global index.
    """

    def __init__(self, f: h5py.File, n_buckets: int, n_voxels: int, seed: int, with_angles: bool = False) -> None:
        self.n_buckets, self.seed, self.n_rows = n_buckets, seed, 0
        rows = default_chunk_rows(n_voxels)
        self.x = [_create(f, f"x{k}", (0, n_voxels), np.float32, rows, None) for k in range(n_buckets)]
        self.e = [_create(f, f"e{k}", (0,), np.float64, 4096, None) for k in range(n_buckets)]
        self.a = [_create(f, f"a{k}", (0,), np.float64, 4096, None) for k in range(n_buckets)] if with_angles else None

    def scatter(self, x: np.ndarray, e: np.ndarray, a: np.ndarray | None = None) -> None:
        b = bucket_of(np.arange(self.n_rows, self.n_rows + len(e)), self.seed, self.n_buckets)
        self.n_rows += len(e)
        order = np.argsort(b, kind="stable")  # stable: rows keep input order within a bucket
        bounds = np.searchsorted(b[order], np.arange(self.n_buckets + 1))
        for k in range(self.n_buckets):
            sel = order[bounds[k] : bounds[k + 1]]
            if len(sel) == 0:
                continue
            m = self.e[k].shape[0]
            pairs = [(self.x[k], x), (self.e[k], e)]
            if self.a is not None and a is not None:
                pairs.append((self.a[k], a))
            for ds, arr in pairs:
                ds.resize(m + len(sel), axis=0)
                ds[m:] = arr[sel]

    def size(self, k: int) -> int:
        return int(self.e[k].shape[0])

    def read(self, k: int, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``start:stop`` of bucket k: x (n, V) float32, e_inc (n,) float64 MeV."""
        return self.x[k][start:stop], self.e[k][start:stop]

    def read_angles(self, k: int) -> np.ndarray:
        """All angles of bucket k, (n,) float64 degrees (``with_angles`` only)."""
        assert self.a is not None
        return self.a[k][...]


def _stages(vt: Any) -> list[Any]:
    from fastsim.data.transforms import Chain

    return list(vt.transforms) if isinstance(vt, Chain) else [vt]


def prepare_training_tensors(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    geometry: Geometry | str | dict,
    transform_config: Any = None,
    seed: int = 0,
    chunk_size: int | None = None,
    progress: bool = True,
    skip_bad: bool = False,
    condition_config: dict[str, Any] | None = None,
    overwrite: bool = False,
    compression: str | None = None,
    bucket_bytes: int = DEFAULT_BUCKET_BYTES,
    threshold: float = 0.0,
    angles: bool | None = None,
) -> dict[str, Any]:
    """Turn CaloChallenge files into one shuffled training tensors file (see the module docstring).

    Args:
        inputs: CaloChallenge HDF5 files (MeV), all of ``geometry``'s voxel count.
        output: the training tensors file; written atomically (temporary name, then rename).
        geometry: Geometry, built-in name ("1-photons"), XML path or dict.
        transform_config: voxel transform: a preset name ("divide", "log", "standardize",
            "log-standardize"), a config dict/JSON or a VoxelTransform; None = "divide". Stages
            that are already fitted (a config carrying fitted values) are not refitted.
        seed: shuffle seed; the same inputs and seed give an identical ``x``/``cond``/``e_inc``.
        chunk_size: rows read at a time (None: 10 000, fewer for wide geometries; see
            :func:`fastsim.data.hdf5.auto_chunk_size`). The output does not depend on it.
        progress: show tqdm progress bars (stderr).
        skip_bad: drop (and count) showers with NaN/inf, incident energies <= 0 or > 1e8 MeV, or
            voxel energies below -1e-3 MeV instead of stopping; file-wide problems still stop.
        condition_config: an :class:`EnergyCondition` config to use instead of fitting one, or a
            ``ConditionSet`` config (energy and angle ranges both given; needs inputs with angles).
        overwrite: replace an existing ``output``.
        compression: for ``x``/``cond``/``e_inc``: None (default: training re-reads the file every
            epoch and uncompressed reads are ~10x faster than gzip/lzf), "lzf" or "gzip".
        bucket_bytes: memory budget of one shuffle bucket (peak use is about twice this).
        threshold: readout threshold in MeV: voxels below it are set to 0 before the transform, as
            the CaloChallenge evaluation does to every sample it compares (1 MeV for dataset 1), so
            a model learns the showers the benchmark sees. Recorded as the ``readout_threshold``
            attribute. 0 (default): the deposits as they are.
        angles: the incidence angle (``incident_angles``, degrees) as the second ``cond`` column,
            scaled by an :class:`AngleCondition` fitted on its range (recorded in the ``condition``
            attribute as a ``ConditionSet``). None (default): when every input has angles (some
            with and some without is an error naming the file); False: ignore any angles (one
            column, as before); True: every input must have them.

    Returns:
        Summary: ``n_read``, ``n_written``, ``n_skipped``, ``skipped`` {reason: count},
        ``files`` (per input: path, n_read, n_written, skipped), ``n_buckets``, ``seed``,
        ``output``, ``angle_range`` ([θ_min, θ_max] degrees, or None without the angle), ``seconds``.

    Raises:
        InputFileError: an input fails validation (all its problems in one line), or ``output`` exists.
    """
    import torch

    from fastsim.data.transforms import (
        AngleCondition,
        ConditionSet,
        EnergyCondition,
        build_transform,
        voxel_transform,
    )
    from fastsim.provenance import file_sha256, provenance

    t0 = time.perf_counter()
    if not (math.isfinite(threshold) and threshold >= 0):
        raise FastsimError(f"threshold must be a finite energy >= 0 MeV, got {threshold}")
    paths = [os.fspath(p) for p in inputs]
    output = os.fspath(output)
    if not paths:
        raise FastsimError("prepare_training_tensors: no input files")
    out_abs = os.path.abspath(output)
    for p in paths:
        if os.path.abspath(p) == out_abs:
            raise InputFileError(output, "output file is also an input")
    check_target(output, overwrite)
    geo = Geometry.resolve(geometry)
    try:
        chunk_size = auto_chunk_size(geo.n_voxels, chunk_size)
    except ValueError as err:
        raise FastsimError(str(err)) from None
    angle_t: Any = None  # the AngleCondition of column 1, when the angle is a condition
    if condition_config is not None:
        given = build_transform(condition_config)
        if isinstance(given, ConditionSet) and [type(t) for t in given.extra] == [AngleCondition]:
            cond_t, angle_t = given.energy, given.extra[0]
            if angles is False:
                raise FastsimError("condition_config has an angle condition but angles=False")
            angles = True
        elif isinstance(given, EnergyCondition):
            cond_t = given
        else:
            raise FastsimError(
                f"condition_config must be an EnergyCondition config (or a ConditionSet of the energy and "
                f"an AngleCondition), got {condition_config!r:.200}"
            )
    else:
        cond_t = EnergyCondition()
    vt = voxel_transform(transform_config)
    stages = _stages(vt)
    # Stages already fitted at the front (stateless ones, or given with their values) run while
    # reading; the rest (e.g. Standardize) are fitted on the bucket file and applied when writing.
    n_pre = 0
    while n_pre < len(stages) and stages[n_pre].is_fitted:
        n_pre += 1
    pre, post = stages[:n_pre], stages[n_pre:]

    # Structure of every input first (metadata only): a broken last file fails before any work.
    sources = []
    scales: dict[str, str] = {}
    has_angles: dict[str, bool] = {}
    for p in paths:
        with open_calochallenge(p, geo) as cf:
            sources.append(_Source(p, cf.n_showers))
            scale = cf.attrs.get("energy_scale")
            if scale:
                scales[p] = str(scale)
            has_angles[p] = cf.has_angles
            if cf.has_angles and angles is not False:
                sources[-1].angles = cf.incident_angles_deg()
    use_angles = _use_angles(has_angles, angles)
    if not use_angles:
        for src in sources:
            src.angles = None
    elif angle_t is None:
        angle_t = AngleCondition()
    if len(set(scales.values())) > 1:
        (p0, s0), (p1, s1) = next(iter(scales.items())), next((k, v) for k, v in scales.items() if v != next(iter(scales.values())))
        raise InputFileError(p1, f"is on the {s1} energy scale but {p0} is on the {s0} scale: convert one with fastsim em-scale")
    energy_scale = next(iter(scales.values()), "")
    n_read = sum(src.n_showers for src in sources)
    row_bytes = 4 * geo.n_voxels + 8
    n_buckets = max(1, math.ceil(n_read * row_bytes / max(1, bucket_bytes)))

    tmp_out = temporary_path(output)
    tmp_buckets = temporary_path(output, tag="buckets")
    try:
        # No chunk cache: HDF5 2.0 gives every dataset an 8 MiB cache, which with K bucket datasets
        # held ~K x 8 MiB resident (measured: 36 buckets, 314 MB vs 25 MB, and no slower).
        with h5py.File(tmp_buckets, "w", rdcc_nbytes=0) as fb, torch.no_grad():
            buckets = _Buckets(fb, n_buckets, geo.n_voxels, seed, with_angles=use_angles)

            # 1. one streamed pass per input: validate, mask bad rows, fit E range, transform, scatter
            bar = _progress(total=n_read, desc="validate+scatter", unit="shower", disable=not progress)
            for src in sources:

                def on_chunk(
                    lo: int, e: np.ndarray, s: np.ndarray, info: RowInfo, src: _Source = src
                ) -> None:
                    keep = _good_rows(info.masks, src.skipped)
                    bar.update(len(e))
                    if not keep.any():
                        return
                    a = None if src.angles is None else src.angles[lo : lo + len(e)]
                    if not keep.all():
                        e, s = e[keep], s[keep]
                        a = None if a is None else a[keep]
                    if a is not None and not angle_t.is_fitted:
                        angle_t.partial_fit(a)
                    np.maximum(s, 0.0, out=s)  # tolerated float noise below 0 -> 0
                    if threshold > 0:
                        s[s < threshold] = 0.0  # the readout: a voxel equal to it is kept
                    if condition_config is None:
                        cond_t.partial_fit(e)
                    x = torch.from_numpy(s)
                    for t in pre:
                        x = t(x, torch.from_numpy(e))
                    x = x.to(torch.float32).numpy()
                    if not np.isfinite(x).all():
                        raise FastsimError(
                            f"transform {json.dumps(vt.config())[:120]} produced non-finite values for "
                            f"{int((~np.isfinite(x)).any(axis=1).sum())} showers of {src.path}"
                        )
                    buckets.scatter(x, e, a)
                    src.n_written += len(e)

                try:
                    problems, _ = validate_detailed(src.path, geo, chunk_size, on_chunk=on_chunk)
                except BaseException:
                    bar.close()
                    raise
                fatal = [msg for kind, msg in problems if not (skip_bad and kind in _SKIPPABLE)]
                if fatal:
                    bar.close()
                    hint = ""
                    if not skip_bad and all(kind in _SKIPPABLE for kind, _ in problems):
                        hint = " (pass --skip-bad / skip_bad=True to drop these showers)"
                    raise InputFileError(src.path, "; ".join(fatal) + hint)
            bar.close()
            n_good = buckets.n_rows
            skipped: dict[str, int] = {}
            for src in sources:
                for k, v in src.skipped.items():
                    skipped[k] = skipped.get(k, 0) + v
            if n_good == 0:
                raise InputFileError(paths[0], f"no usable showers left in the inputs (skipped: {skipped})")
            if condition_config is None:
                cond_t.finish_fit()
            if angle_t is not None and not angle_t.is_fitted:
                angle_t.finish_fit()
            # what the file records: the energy alone, or the energy and the angle
            cond_out = ConditionSet(cond_t, [angle_t]) if use_angles else cond_t
            n_cond = 2 if use_angles else 1

            # 2. fit the remaining stages, streaming over the buckets (each fits in memory)
            for j, stage in enumerate(post):
                if stage.is_fitted:
                    continue

                def bucket_chunks(j: int = j) -> Iterator[tuple[Any, Any]]:
                    for k in _progress(range(n_buckets), desc="fit", unit="bucket", disable=not progress):
                        for lo in range(0, buckets.size(k), chunk_size):  # chunks: fits work in float64
                            x, e = buckets.read(k, lo, lo + chunk_size)
                            xt, et = torch.from_numpy(x), torch.from_numpy(e)
                            for t in post[:j]:
                                xt = t(xt, et)
                            yield xt, et

                stage.fit_stream(bucket_chunks)

            # 3. gather: shuffle each bucket in memory, apply the remaining stages, write
            with h5py.File(tmp_out, "w", rdcc_nbytes=0) as fo:  # written in whole-bucket slabs
                rows = default_chunk_rows(geo.n_voxels)
                ox = _create(fo, "x", (n_good, geo.n_voxels), np.float32, rows, compression)
                oc = _create(fo, "cond", (n_good, n_cond), np.float32, 65536, compression)
                oe = _create(fo, "e_inc", (n_good,), np.float64, 65536, compression)
                pos = 0
                for k in _progress(
                    range(n_buckets), desc="shuffle+write", unit="bucket", disable=not progress
                ):
                    x, e = buckets.read(k)
                    n_k = len(e)
                    if n_k == 0:
                        continue
                    perm = np.random.default_rng([seed, k]).permutation(n_k)
                    xt, et = torch.from_numpy(x[perm]), torch.from_numpy(e[perm])
                    del x
                    for t in post:
                        xt = t(xt, et)
                    ox[pos : pos + n_k] = xt.to(torch.float32).numpy()
                    c = cond_t(et)
                    if use_angles:
                        c = torch.cat([c, angle_t(torch.from_numpy(buckets.read_angles(k)[perm]))], dim=1)
                    oc[pos : pos + n_k] = c.to(torch.float32).numpy()
                    oe[pos : pos + n_k] = et.numpy()
                    pos += n_k
                assert pos == n_good
                files = [
                    {
                        "path": os.path.abspath(src.path),
                        "sha256": file_sha256(src.path),
                        "n_read": src.n_showers,
                        "n_written": src.n_written,
                        "skipped": src.skipped,
                    }
                    for src in sources
                ]
                fo.attrs.update(
                    provenance(
                        format=FORMAT,
                        format_version=FORMAT_VERSION,
                        geometry=geo.to_json(),
                        transform=json.dumps(vt.config()),
                        condition=json.dumps(cond_out.config()),
                        sources=files,
                        seed=int(seed),
                        energy_scale=energy_scale,  # "" when the inputs do not say
                        readout_threshold=float(threshold),  # MeV, 0: none
                        n_read=n_read,
                        n_written=n_good,
                        n_skipped=n_read - n_good,
                        skipped=skipped,
                    )
                )
        publish(tmp_out, output, overwrite)
    finally:
        discard(tmp_buckets)
        discard(tmp_out)
    return {
        "output": output,
        "n_read": n_read,
        "n_written": n_good,
        "n_skipped": n_read - n_good,
        "skipped": skipped,
        "files": [{k: v for k, v in f.items() if k != "sha256"} for f in files],
        "n_buckets": n_buckets,
        "seed": int(seed),
        "angle_range": list(angle_t.range) if use_angles else None,
        "seconds": time.perf_counter() - t0,
    }


def _use_angles(has_angles: dict[str, bool], angles: bool | None) -> bool:
    """Whether the angle is a condition column: every input has ``incident_angles`` (None: decide from
    the inputs, True: required, False: ignored); some with and some without is an error."""
    if angles is False:
        return False
    first, first_has = next(iter(has_angles.items()))
    if angles is True and not all(has_angles.values()):
        missing = next(p for p, h in has_angles.items() if not h)
        raise InputFileError(missing, f"has no {ANGLES_DATASET} dataset, and the angle was asked for as a condition")
    odd = next((p for p, h in has_angles.items() if h != first_has), None)
    if odd is not None:
        what = f"has no {ANGLES_DATASET} dataset but {first} has one" if first_has else (
            f"has an {ANGLES_DATASET} dataset but {first} has none"
        )
        raise InputFileError(odd, f"{what}: give every input the incidence angle or none (--no-angle ignores them)")
    return first_has


# --------------------------------------------------------------------------- reading


class TrainingTensors:
    """Read a training tensors file written by :func:`prepare_training_tensors`.

    The HDF5 handle is opened lazily and reopened in a new process (DataLoader workers), since
    an h5py handle must not cross a fork; the object pickles without it.

    Raises:
        InputFileError: missing file, not HDF5, not a training tensors file, unsupported
            ``format_version``, missing datasets or inconsistent shapes.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self._f: h5py.File | None = None
        self._pid = -1
        f = self._file()
        a = decode_attrs(f.attrs)
        if a.get("format") != FORMAT:
            raise InputFileError(
                self.path,
                f"not a fastsim training tensors file (format attribute {a.get('format')!r}, expected {FORMAT!r})",
            )
        version = a.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise InputFileError(
                self.path, f"unsupported format_version {version!r} (this fastsim reads <= {FORMAT_VERSION})"
            )
        for name in ("x", "cond", "e_inc"):
            if name not in f or not isinstance(f[name], h5py.Dataset):
                raise InputFileError(self.path, f"missing dataset {name!r}")
        x, c, e = f["x"], f["cond"], f["e_inc"]
        if x.ndim != 2 or c.ndim != 2 or e.ndim != 1 or not (x.shape[0] == c.shape[0] == e.shape[0]):
            raise InputFileError(
                self.path,
                f"inconsistent shapes: x {x.shape}, cond {c.shape}, e_inc {e.shape} (expected (N, V), (N, C), (N,))",
            )
        try:
            self.geometry = Geometry.from_json(a["geometry"])
            self.transform_config: dict[str, Any] = json.loads(a["transform"])
            self.condition_config: dict[str, Any] = json.loads(a["condition"])
        except (KeyError, ValueError, TypeError) as err:
            raise InputFileError(self.path, f"bad geometry/transform/condition attribute ({err})") from None
        if self.geometry.n_voxels != x.shape[1]:
            raise InputFileError(
                self.path, f"x has {x.shape[1]} voxels but the stored geometry has {self.geometry.n_voxels}"
            )
        n_recorded = 1 + len(self.condition_config.get("extra", [])) if isinstance(self.condition_config, dict) else 1
        if self.condition_config.get("class") == "ConditionSet" and n_recorded != c.shape[1]:
            raise InputFileError(
                self.path, f"cond has {c.shape[1]} columns but the condition attribute describes {n_recorded}"
            )
        self.attrs = a
        self.n_voxels = int(x.shape[1])
        self.n_conditions = int(c.shape[1])
        self._len = int(x.shape[0])

    def _file(self) -> h5py.File:
        if self._f is None or self._pid != os.getpid():
            self._f = open_h5(self.path)
            self._pid = os.getpid()
        return self._f

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_f"], state["_pid"] = None, -1
        return state

    def __len__(self) -> int:
        return self._len

    def read(self, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
        """Rows ``start:stop``: ``x`` (n, V) float32, ``cond`` (n, C) float32, ``e_inc`` (n,) float64 MeV."""
        start, stop, _ = slice(start, self._len if stop is None else stop).indices(self._len)
        stop = max(start, stop)
        f = self._file()
        try:
            return {
                "x": np.asarray(f["x"][start:stop], dtype=np.float32),
                "cond": np.asarray(f["cond"][start:stop], dtype=np.float32),
                "e_inc": np.asarray(f["e_inc"][start:stop], dtype=np.float64),
            }
        except OSError as err:
            raise InputFileError(
                self.path, f"cannot read rows {start}:{stop}, file damaged? ({err})"
            ) from None

    def build_transform(self) -> Any:
        """The fitted voxel transform (a torch module) stored in the file."""
        from fastsim.data.transforms import build_transform

        return build_transform(self.transform_config)

    @property
    def condition_names(self) -> list[str]:
        """Names of the ``cond`` columns: ``["energy"]`` or ``["energy", "angle"]``."""
        from fastsim.data.transforms import condition_parts

        return ["energy"] + [str(c.get("class", "")).removesuffix("Condition").lower() for c in condition_parts(self.condition_config)[1]]

    def build_condition(self) -> Any:
        """The fitted :class:`EnergyCondition` stored in the file (a :class:`ConditionSet` when
        ``cond`` has an angle column)."""
        from fastsim.data.transforms import build_transform

        return build_transform(self.condition_config)

    def close(self) -> None:
        if self._f is not None and self._pid == os.getpid():
            self._f.close()
        self._f = None

    def __enter__(self) -> TrainingTensors:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "TrainingTensors",
    "bucket_of",
    "prepare_training_tensors",
    "shuffle_order",
]
