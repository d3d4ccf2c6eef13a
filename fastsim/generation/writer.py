"""Several devices: Lightning's predict loop, a per-rank shard writer, and shard merging.

Each rank generates a contiguous share of the run's batches (:func:`split_batches`) and streams
it into its own shard, ``<dir>/.<output name>.shards/rank<r>-of-<w>.h5``, through an atomic
:class:`~fastsim.data.hdf5.ShowerWriter`. After a barrier rank 0 concatenates the shards, rank by
rank, into the final file (again atomically) and deletes them.

Why merge instead of an HDF5 virtual dataset: a merged file is one self-contained CaloChallenge
file that any reader (the CaloChallenge ``evaluate.py``, h5py without VDS support, a copy to
another machine) handles; a virtual dataset keeps paths to the shards and breaks as soon as the
file is moved without them. Merging need not redo the compression: shards use chunks that
divide the batch size (:func:`fastsim.generation.generate.aligned_chunk_rows`) and ranks start on
batch boundaries, so a shard usually starts on a chunk boundary of the merged file and its
gzip-compressed chunks are copied as they are (:func:`merge_shards`); only a shard that starts
mid-chunk (discrete energies whose counts are not multiples of the batch size) is recompressed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import h5py
import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset

from fastsim.data.hdf5 import ChunkRowWriter, ShowerWriter, open_calochallenge, temporary_path
from fastsim.errors import InputFileError
from fastsim.generation.energies import EnergyPlan, TimePerEnergy
from fastsim.generation.generate import generate_batch, split_batches

#: Rows per step when merging shards row by row.
MERGE_BLOCK_ROWS = 10_000


def shard_dir_for(output: str | os.PathLike) -> str:
    """The hidden directory next to ``output`` that holds its shards while a run is going."""
    output = os.path.abspath(os.fspath(output))
    return os.path.join(os.path.dirname(output), f".{os.path.basename(output)}.shards")


def shard_path(shard_dir: str, rank: int, world_size: int) -> str:
    return os.path.join(shard_dir, f"rank{rank}-of-{world_size}.h5")


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
    (decompressed, and recompressed on every core by :class:`~fastsim.data.hdf5.ChunkRowWriter`). Incident energies (8 bytes a row) are always copied by rows.

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
    output = os.fspath(output)
    if os.path.exists(output) and not overwrite:
        raise InputFileError(output, "output file exists (pass --overwrite to replace it)")
    for shard in shards:
        open_calochallenge(shard).close()  # structure check: raises InputFileError naming the shard
    stats = MergeStats()
    tmp = temporary_path(output, "merging")
    try:
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
            rows = showers.chunks[0]
            for key, value in (attrs or {}).items():
                out.attrs[key] = value
            for shard in shards:
                with h5py.File(shard, "r") as f:
                    src_s, src_e = f["showers"], f["incident_energies"]
                    n, offset = int(src_s.shape[0]), stats.n_showers
                    if n == 0:
                        continue
                    e_inc.resize(offset + n, axis=0)
                    for lo in range(0, n, block_rows):
                        hi = min(lo + block_rows, n)
                        e_inc[offset + lo : offset + hi] = src_e[lo:hi]
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
        os.replace(tmp, output)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    return stats


class _BatchList(Dataset):
    """One item per batch of the run: ``(batch_index, start, stop)``."""

    def __init__(self, items: list[tuple[int, int, int]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, int, int]:
        return self.items[i]


def _only(items: list[tuple[int, int, int]]) -> tuple[int, int, int]:
    return items[0]


class PredictSystem(L.LightningModule):
    """Wraps a generator for ``Trainer.predict``: each predict item is one batch of the run.

    Args:
        model: the generator (``generate(e_inc, generator)``).
        plan: the run's incident energies.
        batch_size: showers per batch.
        seed: the run's seed; batch ``b`` is seeded by ``(seed, b)`` as on one device.
        threshold: readout threshold in MeV (0: none), see :func:`generate_batch`.
    """

    def __init__(self, model: Any, plan: EnergyPlan, batch_size: int, seed: int, threshold: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.plan = plan
        self.batch_size = batch_size
        self.seed = seed
        self.threshold = threshold

    def on_predict_start(self) -> None:
        # untimed warm-up with this rank's first batch, as on one device
        items = self.rank_items()
        if items:
            b, start, stop = items[0]
            generate_batch(self.model, self.plan.slice(start, stop), self.seed, b, self.device)

    def predict_step(self, batch: tuple[int, int, int]) -> dict[str, Any]:
        b, start, stop = (int(v) for v in batch)
        e_inc = self.plan.slice(start, stop)
        t = time.perf_counter()
        showers = generate_batch(self.model, e_inc, self.seed, b, self.device, self.threshold)
        return {"e_inc": e_inc, "showers": showers, "seconds": time.perf_counter() - t}

    def rank_items(self) -> list[tuple[int, int, int]]:
        return split_batches(self.plan, self.batch_size, self.global_rank, self.trainer.world_size)

    def predict_dataloader(self) -> DataLoader:
        # one item per step, unwrapped by _only: every item already is a whole batch of showers
        # (a batch sampler of size 1 also lets Lightning track the batch indices without warning)
        return DataLoader(
            _BatchList(self.rank_items()), batch_size=1, collate_fn=_only, shuffle=False, num_workers=0
        )


class ShardedShowerWriter(BasePredictionWriter):
    """Streams each rank's predictions into its shard; rank 0 merges the shards at the end.

    Args:
        output: the final file.
        shard_dir: where the shards go (:func:`shard_dir_for`).
        n_voxels: voxels per shower.
        attrs: attributes of the final file (provenance); timing is added at the end.
        discrete_values: energies to time separately (``EnergyPlan.discrete_values``).
        t0_wall: ``time.time()`` when the run started, for the whole-run time per shower.
        overwrite: replace an existing final file.
        progress: show a tqdm bar (rank 0's showers/s).
        writer_kwargs: compression and chunking for :class:`ShowerWriter`.
    """

    def __init__(
        self,
        output: str | os.PathLike,
        shard_dir: str,
        *,
        n_voxels: int,
        attrs: dict[str, Any],
        discrete_values: list[float] | None,
        t0_wall: float,
        overwrite: bool = False,
        progress: bool = False,
        writer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(write_interval="batch")
        self.output = os.fspath(output)
        self.shard_dir = shard_dir
        self.n_voxels = n_voxels
        self.attrs = attrs
        self.discrete_values = discrete_values
        self.t0_wall = t0_wall
        self.overwrite = overwrite
        self.progress = progress
        self.writer_kwargs = dict(writer_kwargs or {})
        self._writer: ShowerWriter | None = None
        self._timer: TimePerEnergy | None = None
        self._bar: Any = None
        self._seconds = 0.0

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rank, world = trainer.global_rank, trainer.world_size
        os.makedirs(self.shard_dir, exist_ok=True)
        self._writer = ShowerWriter(
            shard_path(self.shard_dir, rank, world), self.n_voxels,
            attrs={"shard_rank": rank, "shard_world_size": world}, overwrite=True, **self.writer_kwargs,
        )  # fmt: skip
        self._writer.__enter__()
        self._timer = TimePerEnergy(self.discrete_values)
        self._seconds = 0.0
        if self.progress and rank == 0:
            from tqdm.auto import tqdm

            total = sum(stop - start for _, start, stop in pl_module.rank_items())
            self._bar = tqdm(
                total=total, unit="shower", unit_scale=True, desc=f"rank 0/{world}", file=sys.stderr
            )

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: dict[str, Any],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        assert self._writer is not None and self._timer is not None
        self._writer.append(prediction["e_inc"], prediction["showers"])
        self._timer.add(prediction["e_inc"], prediction["seconds"])
        self._seconds += prediction["seconds"]
        if self._bar is not None:
            self._bar.update(len(prediction["e_inc"]))

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert self._writer is not None and self._timer is not None
        self._writer.set_attrs(
            shard_generation_s=self._seconds, shard_time_by_energy=json.dumps(self._timer.to_state())
        )
        self._writer.__exit__(None, None, None)
        self._writer = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        trainer.strategy.barrier("fastsim-generate-shards")
        if trainer.is_global_zero:
            try:
                self._merge(trainer.world_size)
            finally:
                shutil.rmtree(self.shard_dir, ignore_errors=True)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if self._writer is not None:  # the ShowerWriter deletes its temporary file
            self._writer.__exit__(type(exception), exception, exception.__traceback__)
            self._writer = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _merge(self, world_size: int) -> None:
        shards = [shard_path(self.shard_dir, r, world_size) for r in range(world_size)]
        timer = TimePerEnergy(self.discrete_values)
        for shard in shards:
            with h5py.File(shard, "r") as f:
                timer.merge(TimePerEnergy.from_state(json.loads(f.attrs["shard_time_by_energy"])))

        def final_attrs() -> dict[str, Any]:
            wall = time.time() - self.t0_wall
            out: dict[str, Any] = {"time_per_shower_s": wall / n_total, "wall_time_s": wall}
            by_energy = timer.per_shower()
            if by_energy:
                out["time_per_shower_by_energy"] = json.dumps(by_energy, sort_keys=True)
            return out

        n_total = 0
        for shard in shards:
            with h5py.File(shard, "r") as f:
                n_total += int(f["incident_energies"].shape[0])
        self.merge_stats = merge_shards(
            shards, self.output, self.attrs, overwrite=self.overwrite, final_attrs=final_attrs
        )
