"""Concatenating CaloChallenge shards into one file, compressed chunks copied as they are.

Several writers (the ranks of a multi-device generation run, :mod:`fastsim.generation.writer`)
each stream their share into a shard; :func:`merge_shards` concatenates them into one
self-contained CaloChallenge file. Why merge instead of an HDF5 virtual dataset: a merged file is
one file that any reader (the CaloChallenge ``evaluate.py``, h5py without VDS support, a copy to
another machine) handles; a virtual dataset keeps paths to the shards and breaks as soon as the
file is moved without them. Merging need not redo the compression when a shard starts on a chunk
boundary of the merged file with the same storage layout.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import h5py

from fastsim.data.hdf5 import ChunkRowWriter, open_calochallenge
from fastsim.errors import InputFileError
from fastsim.outputs import atomic_output, check_target

__all__ = ["MERGE_BLOCK_ROWS", "MergeStats", "merge_shards"]

#: Rows per step when merging shards row by row.
MERGE_BLOCK_ROWS = 10_000


@dataclass
class MergeStats:
    """What :func:`merge_shards` did: showers written, chunks copied raw, rows recompressed."""

    n_showers: int = 0
    raw_chunks: int = 0
    recompressed_rows: int = 0


def _layout(ds: h5py.Dataset) -> tuple:
    """Everything that must agree for a stored chunk to be valid in another dataset."""
    return (
        ds.dtype,
        ds.shape[1:],
        ds.chunks,
        ds.compression,
        ds.compression_opts,
        ds.shuffle,
        ds.fletcher32,
        ds.scaleoffset,
    )


def _per_event_extras(f: h5py.File) -> list[str]:
    """Datasets of a CaloChallenge file besides showers and energies with one row per shower."""
    n = f["showers"].shape[0]
    return [
        name for name, ds in f.items()
        if name not in ("showers", "incident_energies") and isinstance(ds, h5py.Dataset) and ds.shape[:1] == (n,)
    ]  # fmt: skip


def _create_like(out: h5py.File, src: h5py.Dataset, compressed_as: h5py.Dataset) -> h5py.Dataset:
    """An empty resizable copy of ``src``'s dtype, row shape and attributes, compressed as ``compressed_as``."""
    ds = out.create_dataset(src.name, shape=(0, *src.shape[1:]), maxshape=(None, *src.shape[1:]), dtype=src.dtype,
                            chunks=True, compression=compressed_as.compression,
                            compression_opts=compressed_as.compression_opts)  # fmt: skip
    for key, value in src.attrs.items():
        ds.attrs[key] = value
    return ds


def merge_shards(
    shards: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    attrs: dict[str, Any] | None = None,
    *,
    overwrite: bool = False,
    final_attrs: Callable[[], dict[str, Any]] | None = None,
    block_rows: int = MERGE_BLOCK_ROWS,
) -> MergeStats:
    """Concatenate CaloChallenge shards, in the order given, into one file (atomic).

    The merged file takes the first shard's storage layout (chunking, compression). Where a shard
    starts on a chunk boundary of the merged file and has the same layout, its compressed chunks
    are copied as they are (``read_direct_chunk``/``write_direct_chunk``): no decompression and no
    recompression, so merging costs little more than copying bytes, and the shards' compression
    (done in parallel by the ranks) is not redone. Other shards are copied row block by row block
    (decompressed, and recompressed on every core by :class:`~fastsim.data.hdf5.ChunkRowWriter`). Incident energies (8 bytes a row) are always copied by rows,
    and so are the other per-event datasets of the first shard (``incident_angles`` (N, 1) degrees),
    which every shard must have.

    Args:
        shards: the shard files (CaloChallenge layout, as written by :class:`ShowerWriter`).
        output: the merged file; it appears only when every shard was copied.
        attrs: attributes of the merged file.
        overwrite: replace an existing ``output``.
        final_attrs: called after the copy; its attributes are added (e.g. timing that includes the merge).
        block_rows: rows per step of the row-by-row copy (memory ~ block_rows × n_voxels × 4 bytes).

    Returns:
        a :class:`MergeStats`.
    """
    if not shards:
        raise ValueError("merge_shards: no shards")
    output = check_target(output, overwrite)
    for shard in shards:
        open_calochallenge(shard).close()  # structure check: raises InputFileError naming the shard
    stats = MergeStats()
    with atomic_output(output, overwrite, tag="merging") as tmp:
        with h5py.File(tmp, "w") as out, h5py.File(shards[0], "r") as first:
            dsets = {}
            for name in ("showers", "incident_energies"):
                src = first[name]
                dsets[name] = out.create_dataset(
                    name, shape=(0, *src.shape[1:]), maxshape=(None, *src.shape[1:]), dtype=src.dtype,
                    chunks=src.chunks, compression=src.compression, compression_opts=src.compression_opts,
                    shuffle=src.shuffle, fletcher32=src.fletcher32,
                )  # fmt: skip
            showers, e_inc = dsets["showers"], dsets["incident_energies"]
            # optional per-event datasets (incident_angles): concatenated by rows, attributes kept
            extras = {name: _create_like(out, first[name], e_inc) for name in _per_event_extras(first)}
            rows = showers.chunks[0]
            for key, value in (attrs or {}).items():
                out.attrs[key] = value
            for shard in shards:
                with h5py.File(shard, "r") as f:
                    src_s = f["showers"]
                    n, offset = int(src_s.shape[0]), stats.n_showers
                    if sorted(_per_event_extras(f)) != sorted(extras):
                        raise InputFileError(os.fspath(shard), f"per-event datasets {sorted(_per_event_extras(f))} "
                                             f"differ from the first shard's {sorted(extras)}")  # fmt: skip
                    if n == 0:
                        continue
                    for name, ds in [("incident_energies", e_inc), *extras.items()]:
                        ds.resize(offset + n, axis=0)
                        for lo in range(0, n, block_rows):
                            hi = min(lo + block_rows, n)
                            ds[offset + lo : offset + hi] = f[name][lo:hi]
                    if offset % rows == 0 and _layout(src_s) == _layout(showers):
                        # the shard's last chunk may be partial: it is stored padded, and rows past
                        # the end are either outside the final extent or rewritten by the next shard
                        showers.resize(offset + n, axis=0)
                        for lo in range(0, n, rows):
                            mask, chunk = src_s.id.read_direct_chunk((lo, 0))
                            showers.id.write_direct_chunk((offset + lo, 0), chunk, mask)
                            stats.raw_chunks += 1
                    else:  # recompressed on every core, as ShowerWriter does
                        with ChunkRowWriter(showers) as rows_out:
                            for lo in range(0, n, block_rows):
                                rows_out.append(src_s[lo : min(lo + block_rows, n)])
                        stats.recompressed_rows += n
                    stats.n_showers += n
            if final_attrs is not None:
                for key, value in final_attrs().items():
                    out.attrs[key] = value
    return stats
