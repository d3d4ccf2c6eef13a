"""ShowerDataModule: streams a training tensors file in contiguous blocks, sharded for DDP.

The file (see :mod:`fastsim.data.tensors`) is never loaded whole, so files larger than memory
train. Its rows are already globally shuffled by ``prep-train``, which is what makes contiguous
block reads a valid sampling scheme; on top of that each epoch

1. permutes the order of the training blocks (seeded by ``(seed, epoch)``),
2. gives every DDP rank an equal, disjoint, contiguous slice of that permuted stream (a whole
   number of batches, the same number on every rank so no rank waits for the others),
3. splits a rank's slice between its DataLoader workers (whole batches each), and
4. shuffles rows inside buffers of ``buffer_blocks`` blocks before cutting batches.

Validation is one contiguous window of ``val_fraction`` of the rows, placed by ``seed``, split
evenly between ranks, never shuffled. The same file, seed, batch size, world size and
``num_workers`` give the same batches in the same order, and a checkpoint records how far into
the epoch training got, so a resumed run (at an epoch boundary or mid-epoch) sees exactly the
data an uninterrupted run sees.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from fastsim.errors import FastsimError

#: default block size in bytes of ``x``: large contiguous reads, bounded buffer memory
DEFAULT_BLOCK_BYTES = 16 << 20


@dataclass(frozen=True)
class Split:
    """Row layout of a file: ``n`` rows, validation window ``[val_start, val_start + n_val)``.

    Training rows are addressed by a *virtual* index ``t`` in ``[0, n - n_val)`` that skips the
    validation window.
    """

    n: int
    val_start: int
    n_val: int

    @property
    def n_train(self) -> int:
        return self.n - self.n_val

    def file_ranges(self, start: int, stop: int) -> list[tuple[int, int]]:
        """File row ranges holding virtual training rows ``[start, stop)`` (one or two ranges)."""
        out = []
        if start < self.val_start:
            out.append((start, min(stop, self.val_start)))
        if stop > self.val_start:
            lo = max(start, self.val_start) + self.n_val
            out.append((lo, stop + self.n_val))
        return [(a, b) for a, b in out if b > a]


def make_split(n: int, val_fraction: float, seed: int, world_size: int = 1) -> Split:
    """Place the validation window: ``round(val_fraction·n)`` rows (at least one per rank when
    ``val_fraction > 0``) starting at a seeded position."""
    if not 0.0 <= val_fraction < 1.0:
        raise FastsimError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = 0 if val_fraction == 0 else max(world_size, int(round(val_fraction * n)))
    if n_val >= n:
        raise FastsimError(f"val_fraction {val_fraction} leaves no training rows out of {n}")
    rng = np.random.default_rng([seed, 0x5A11])
    val_start = int(rng.integers(0, n - n_val + 1))
    return Split(n=n, val_start=val_start, n_val=n_val)


def train_batches_per_rank(n_train: int, batch_size: int, world_size: int) -> int:
    """Batches each rank gets per epoch: the stream is cut into ``world_size`` equal slices of
    whole batches; the remainder (< world_size · batch_size rows, different each epoch) is skipped."""
    return n_train // (world_size * batch_size)


def epoch_stream(n_train: int, block_size: int, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """The permuted block order of one epoch.

    Returns:
        (block_starts, stream_offsets): ``block_starts[i]`` is the first virtual row of the i-th
        block in stream order, ``stream_offsets`` (n_blocks + 1,) the stream position where each
        block begins (cumulative sizes; only the last block of the file may be short).
    """
    n_blocks = math.ceil(n_train / block_size)
    order = np.random.default_rng([seed, epoch, 0xB10C]).permutation(n_blocks)
    starts = order.astype(np.int64) * block_size
    sizes = np.minimum(starts + block_size, n_train) - starts
    return starts, np.concatenate([[0], np.cumsum(sizes)])


def stream_ranges(
    block_starts: np.ndarray, stream_offsets: np.ndarray, start: int, stop: int
) -> list[tuple[int, int]]:
    """Virtual row ranges covering stream positions ``[start, stop)``, in stream order."""
    out = []
    i = int(np.searchsorted(stream_offsets, start, side="right")) - 1
    pos = start
    while pos < stop:
        off = pos - int(stream_offsets[i])
        take = min(stop, int(stream_offsets[i + 1])) - pos
        a = int(block_starts[i]) + off
        out.append((a, a + take))
        pos += take
        i += 1
    return out


def worker_batch_range(n_batches: int, worker: int, n_workers: int) -> tuple[int, int]:
    """Contiguous share ``[lo, hi)`` of a rank's batches for one DataLoader worker."""
    per, extra = divmod(n_batches, n_workers)
    lo = worker * per + min(worker, extra)
    return lo, lo + per + (1 if worker < extra else 0)


def _to_torch(block: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in block.items()}


class _TrainStream(IterableDataset):
    """One rank's training batches for one epoch (``epoch`` is set before each iteration)."""

    def __init__(
        self,
        tensors: Any,
        split: Split,
        batch_size: int,
        block_size: int,
        buffer_blocks: int,
        seed: int,
        rank: int,
        world_size: int,
    ) -> None:
        self.tensors = tensors
        self.split = split
        self.batch_size = batch_size
        self.block_size = block_size
        self.buffer_rows = buffer_blocks * block_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.skip = 0  # batches of this epoch already trained on (mid-epoch resume)
        self.n_batches = train_batches_per_rank(split.n_train, batch_size, world_size)

    def __len__(self) -> int:
        return self.n_batches

    def _read(self, ranges: list[tuple[int, int]]) -> dict[str, np.ndarray]:
        parts = [self.tensors.read(a, b) for vr in ranges for a, b in self.split.file_ranges(*vr)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        # DataLoader takes batches from its workers round-robin, starting with worker 0. A run
        # resumed after `skip` batches must continue with the worker whose turn came next, so
        # worker w plays the part ("role") of worker (w + skip) mod n of the uninterrupted epoch
        # and skips that role's share of the first `skip` batches.
        rem = self.skip % n_workers
        role = (worker + rem) % n_workers
        r_lo, b_hi = worker_batch_range(self.n_batches, role, n_workers)
        b_lo = min(b_hi, r_lo + self.skip // n_workers + (1 if role < rem else 0))
        bs = self.batch_size
        rank_start = self.rank * self.n_batches * bs
        start, stop = rank_start + b_lo * bs, rank_start + b_hi * bs
        block_starts, offsets = epoch_stream(self.split.n_train, self.block_size, self.seed, self.epoch)
        # buffers are laid out from the role's first batch, resumed or not, so that a resumed
        # epoch shuffles exactly as the uninterrupted one did
        first = rank_start + r_lo * bs
        for k, lo in enumerate(range(first, stop, self.buffer_rows)):
            hi = min(lo + self.buffer_rows, stop)
            if hi <= start:
                continue
            buf = self._read(stream_ranges(block_starts, offsets, lo, hi))
            perm = np.random.default_rng([self.seed, self.epoch, self.rank, role, k]).permutation(hi - lo)
            # buffer_rows is a multiple of the batch size (see ShowerDataModule), so batches never
            # straddle two buffers
            for b in range(max(0, start - lo), hi - lo, bs):
                idx = perm[b : b + bs]
                yield _to_torch({key: v[idx] for key, v in buf.items()})


class _ValStream(IterableDataset):
    """One rank's validation batches: a contiguous, unshuffled share of the validation window."""

    def __init__(self, tensors: Any, split: Split, batch_size: int, rank: int, world_size: int) -> None:
        self.tensors = tensors
        self.batch_size = batch_size
        per_rank = split.n_val // world_size  # equal shares: ranks gather equal-sized arrays
        self.start = split.val_start + rank * per_rank
        self.stop = self.start + per_rank
        self.n_batches = math.ceil(per_rank / batch_size)

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        lo, hi = worker_batch_range(self.n_batches, worker, n_workers)
        for b in range(lo, hi):
            a = self.start + b * self.batch_size
            yield _to_torch(self.tensors.read(a, min(a + self.batch_size, self.stop)))


class _EpochDataLoader(DataLoader):
    """A DataLoader that tells its dataset the epoch when an iteration starts, and that can
    resume in the middle of an epoch.

    Lightning calls ``set_epoch`` only on samplers, and an IterableDataset has none; the dataset
    copy that workers receive is taken at ``iter()`` time, so setting it here reaches them.
    ``state_dict``/``load_state_dict`` make the loader "stateful" for Lightning: a checkpoint
    records the epoch and the batches already trained on in it, and the resumed epoch skips them.

    Args:
        progress_fn: returns (epoch, batches of this epoch processed so far).
    """

    def __init__(
        self, dataset: _TrainStream, progress_fn: Callable[[], tuple[int, int]], **kwargs: Any
    ) -> None:
        super().__init__(dataset, **kwargs)
        self._progress_fn = progress_fn
        self._resume: tuple[int, int] | None = None

    def __iter__(self):  # noqa: ANN204
        epoch, _ = self._progress_fn()
        skip = 0
        if self._resume is not None and self._resume[0] == epoch:
            skip = self._resume[1]
        self._resume = None
        self.dataset.epoch, self.dataset.skip = int(epoch), int(skip)
        return super().__iter__()

    def state_dict(self) -> dict[str, int]:
        epoch, done = self._progress_fn()
        return {"epoch": int(epoch), "batches_done": int(done)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = (int(state["epoch"]), int(state["batches_done"]))


class ShowerDataModule(L.LightningDataModule):
    """Training and validation batches from a training tensors file.

    Args:
        train_file: the training tensors file (``fastsim prep-train``).
        batch_size: events per training batch (per rank).
        val_fraction: fraction of the rows held out for validation.
        seed: places the validation window and seeds the per-epoch block order and shuffling.
        num_workers: DataLoader worker processes per rank (0: read in the training process).
        block_size: rows per contiguous read; None: about 16 MB of ``x`` (rounded to whole batches).
        buffer_blocks: blocks shuffled together before cutting batches.
        val_batch_size: events per validation batch; None: ``batch_size``.
        pin_memory: page-lock batches for faster host-to-GPU copies.

    Batches are dicts: ``x`` (n, V) float32 model space, ``cond`` (n, C) float32, ``e_inc`` (n,)
    float64 MeV. The file's geometry, transform and condition are exposed for LightningCLI to link
    into the model (``geometry_config``, ``transform_config``, ``condition_config``, ``n_conditions``).

    Raises:
        InputFileError: the file is missing or not a training tensors file.
    """

    def __init__(
        self,
        train_file: str,
        batch_size: int = 128,
        val_fraction: float = 0.1,
        seed: int = 0,
        num_workers: int = 0,
        block_size: int | None = None,
        buffer_blocks: int = 4,
        val_batch_size: int | None = None,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        from fastsim.data.tensors import TrainingTensors

        self.save_hyperparameters()
        if batch_size < 1 or buffer_blocks < 1 or num_workers < 0:
            raise FastsimError("need batch_size >= 1, buffer_blocks >= 1 and num_workers >= 0")
        self.tensors = TrainingTensors(train_file)
        self.train_file = os.fspath(train_file)
        self.batch_size = int(batch_size)
        self.val_batch_size = int(val_batch_size or batch_size)
        self.val_fraction = float(val_fraction)
        self.seed = int(seed)
        self.num_workers = int(num_workers)
        self.buffer_blocks = int(buffer_blocks)
        self.pin_memory = bool(pin_memory)
        if block_size is None:
            block_size = max(1, DEFAULT_BLOCK_BYTES // (4 * self.tensors.n_voxels))
        # whole batches per block, so that shuffle buffers hold whole batches
        self.block_size = max(1, round(block_size / self.batch_size)) * self.batch_size
        make_split(len(self.tensors), self.val_fraction, self.seed)  # fail early on a bad fraction
        self._train: _TrainStream | None = None
        self._val: _ValStream | None = None

    # ------------------------------------------------------------------ what the model links to
    @property
    def geometry_config(self) -> dict[str, Any]:
        """The file's geometry as ``Geometry.to_dict()``."""
        return self.tensors.geometry.to_dict()

    @property
    def geometry(self) -> Any:
        return self.tensors.geometry

    @property
    def transform_config(self) -> dict[str, Any]:
        return self.tensors.transform_config

    @property
    def condition_config(self) -> dict[str, Any]:
        return self.tensors.condition_config

    @property
    def n_conditions(self) -> int:
        return self.tensors.n_conditions

    # ------------------------------------------------------------------ Lightning hooks
    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is not None:
            return int(trainer.global_rank), int(trainer.world_size)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def setup(self, stage: str | None = None) -> None:
        rank, world = self._rank_world()
        split = make_split(len(self.tensors), self.val_fraction, self.seed, world)
        self._train = _TrainStream(
            self.tensors, split, self.batch_size, self.block_size, self.buffer_blocks, self.seed, rank, world
        )
        if self._train.n_batches == 0:
            raise FastsimError(
                f"{self.train_file}: {split.n_train} training rows are fewer than one batch of "
                f"{self.batch_size} per rank for {world} rank(s)"
            )
        self._val = _ValStream(self.tensors, split, self.val_batch_size, rank, world) if split.n_val else None

    def _progress(self) -> tuple[int, int]:
        """(epoch, training batches of it processed so far), from the trainer's loop progress."""
        trainer = self.trainer
        if trainer is None:
            return 0, 0
        loop = trainer.fit_loop
        return int(loop.epoch_progress.current.processed), int(
            loop.epoch_loop.batch_progress.current.processed
        )

    def _loader_kwargs(self) -> dict[str, Any]:
        # batch_size=None: the datasets yield whole batches (contiguous reads, no per-row collation)
        return dict(batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory)

    def train_dataloader(self) -> DataLoader:
        if self._train is None:
            self.setup("fit")
        return _EpochDataLoader(self._train, self._progress, **self._loader_kwargs())

    def val_dataloader(self) -> DataLoader | list:
        if self._train is None:
            self.setup("validate")
        if self._val is None:
            return []
        return DataLoader(self._val, **self._loader_kwargs())

    def teardown(self, stage: str | None = None) -> None:
        self.tensors.close()
