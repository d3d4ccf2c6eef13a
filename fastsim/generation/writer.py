"""Several devices: Lightning's predict loop and a per-rank shard writer.

Each rank generates a contiguous share of the run's batches
(:func:`fastsim.generation.batches.split_batches`) and streams it into its own shard,
``<dir>/.<output name>.shards/rank<r>-of-<w>.h5``, through an atomic
:class:`~fastsim.data.hdf5.ShowerWriter`. After a barrier rank 0 concatenates the shards, rank by
rank, into the final file (:func:`fastsim.data.shards.merge_shards`, atomic) and deletes them.
Shards use chunks that divide the batch size (:func:`fastsim.generation.batches.aligned_chunk_rows`)
and ranks start on batch boundaries, so a shard usually starts on a chunk boundary of the merged
file and its gzip-compressed chunks are copied as they are; only a shard that starts mid-chunk
(discrete energies whose counts are not multiples of the batch size) is recompressed. A plan with
incidence angles gives each shard an ``incident_angles`` dataset (its rank's events, degrees), which
the merge concatenates in rank order like the energies.

The launcher, :func:`fastsim.generation.generate.generate_showers_distributed`, imports this
module; this module imports none of its callers.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any

import h5py
import lightning as L
import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset

from fastsim.data.hdf5 import ANGLES_DATASET, ShowerWriter
from fastsim.data.shards import merge_shards
from fastsim.generation.batches import generate_batch, split_batches
from fastsim.generation.energies import EnergyPlan, TimePerEnergy


def shard_dir_for(output: str | os.PathLike) -> str:
    """The hidden directory next to ``output`` that holds its shards while a run is going."""
    output = os.path.abspath(os.fspath(output))
    return os.path.join(os.path.dirname(output), f".{os.path.basename(output)}.shards")


def shard_path(shard_dir: str, rank: int, world_size: int) -> str:
    return os.path.join(shard_dir, f"rank{rank}-of-{world_size}.h5")


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
        plan: the run's incident energies (and incidence angles, passed to an angle-conditioned model
            as on one device).
        batch_size: showers per batch.
        seed: the run's seed; batch ``b`` is seeded by ``(seed, b)`` as on one device.
        threshold: readout threshold in MeV (0: none), see :func:`generate_batch`.
    """

    def __init__(
        self, model: Any, plan: EnergyPlan, batch_size: int, seed: int, threshold: float = 0.0
    ) -> None:
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
            e_inc, angles = self.plan.slice(start, stop), self.plan.angles(start, stop)
            generate_batch(self.model, e_inc, self.seed, b, self.device, 0.0, angles)

    def predict_step(self, batch: tuple[int, int, int]) -> dict[str, Any]:
        b, start, stop = (int(v) for v in batch)
        e_inc, angles = self.plan.slice(start, stop), self.plan.angles(start, stop)
        t = time.perf_counter()
        showers = generate_batch(self.model, e_inc, self.seed, b, self.device, self.threshold, angles)
        return {"e_inc": e_inc, "angles": angles, "showers": showers, "seconds": time.perf_counter() - t}

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
        self._angles: list[np.ndarray] = []

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
        self._angles = []
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
        if prediction.get("angles") is not None:  # 8 bytes a shower: kept, written with the shard
            self._angles.append(prediction["angles"])
        if self._bar is not None:
            self._bar.update(len(prediction["e_inc"]))

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert self._writer is not None and self._timer is not None
        if pl_module.plan.has_angles:  # (n, 1) degrees as on one device; merge_shards concatenates it
            angles = np.concatenate(self._angles) if self._angles else np.zeros(0)
            self._writer.add_dataset(ANGLES_DATASET, angles[:, None], units="deg")
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
