"""Generate showers from a trained generator into a CaloChallenge HDF5 file.

Two paths share the same per-batch code (:func:`fastsim.generation.batches.generate_batch`) and
therefore produce the same numbers:

- :func:`generate_showers`: one device, a plain loop that streams batches into a
  :class:`fastsim.data.hdf5.ShowerWriter` (memory flat for any N, atomic rename at the end).
- :func:`generate_showers_distributed`: several devices through Lightning's predict loop; each
  rank streams its contiguous share of the batches into a shard and rank 0 merges the shards
  (:mod:`fastsim.generation.writer`, :func:`fastsim.data.shards.merge_shards`).

Imports point one way: this module -> :mod:`~fastsim.generation.writer` ->
:mod:`~fastsim.generation.batches`, :mod:`~fastsim.generation.runinfo`,
:mod:`~fastsim.generation.energies`.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from fastsim.errors import FastsimError
from fastsim.generation.batches import (
    DEFAULT_BATCH_SIZE,
    aligned_chunk_rows,
    check_generator,
    generate_batch,
    resolve_device,
)
from fastsim.generation.energies import EnergyPlan, TimePerEnergy, energies_like
from fastsim.generation.runinfo import GenerateResult, read_result, run_attributes, timing_attributes

#: the per-event incidence angle dataset beside ``incident_energies`` (degrees, (N, 1)), as simulate writes it
ANGLES_DATASET = "incident_angles"

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "GenerateResult",
    "check_output_path",
    "energies_like",
    "generate_showers",
    "generate_showers_distributed",
]


def check_output_path(output: str | os.PathLike, overwrite: bool) -> str:
    """Refuse an existing output (unless ``overwrite``), a missing or unwritable directory,
    before any work (:func:`fastsim.outputs.check_output_file`)."""
    from fastsim.outputs import check_output_file

    return check_output_file(output, overwrite)


# ---------------------------------------------------------------------------------- one device
def generate_showers(
    model: Any,
    plan: EnergyPlan,
    output: str | os.PathLike,
    *,
    seed: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = False,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_sha256: str | None = None,
    compression: str | None = "gzip",
    compression_opts: int | None = 4,
    chunk_rows: int | None = None,
    extra_attrs: dict[str, Any] | None = None,
    threshold: float = 0.0,
) -> GenerateResult:
    """Generate ``len(plan)`` showers on one device and stream them into ``output``.

    Args:
        model: a loaded generator (:func:`fastsim.models.io.load_generator`).
        plan: the incident energies (:mod:`fastsim.generation.energies`).
        output: the CaloChallenge HDF5 file to write; it appears only when the run succeeds.
        seed: the noise seed.
        batch_size: showers per forward pass (also the unit of seeding).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.
        overwrite: replace an existing ``output``.
        progress: show a tqdm progress bar (showers/s) on stderr.
        checkpoint: the checkpoint the model came from, for provenance.
        checkpoint_sha256: its digest if already known (saves reading it twice).
        compression, compression_opts: HDF5 compression of the datasets (gzip level 4: what the
            CaloChallenge readers expect).
        chunk_rows: rows per HDF5 chunk; default :func:`aligned_chunk_rows` (about 1 MiB, dividing
            the batch size).
        extra_attrs: more attributes to store.
        threshold: readout threshold in MeV applied to every shower (0: none); stored as the
            ``readout_threshold_mev`` attribute.

    Returns:
        a :class:`GenerateResult`.
    """
    from tqdm.auto import tqdm

    from fastsim.data.hdf5 import ShowerWriter

    output = check_output_path(output, overwrite)
    check_generator(model, plan)
    device = resolve_device(device)
    n_total = len(plan)
    model = model.to(device).eval()
    attrs = run_attributes(
        model, plan, seed=seed, batch_size=batch_size, device=device, checkpoint=checkpoint,
        checkpoint_sha256=checkpoint_sha256, extra={"readout_threshold_mev": float(threshold), **(extra_attrs or {})},
    )  # fmt: skip
    writer_kwargs: dict[str, Any] = {
        "compression": compression,
        "compression_opts": compression_opts,
        "chunk_rows": chunk_rows or aligned_chunk_rows(batch_size, model.geometry.n_voxels),
    }
    timer = TimePerEnergy(plan.discrete_values)
    # one batch before the clock starts: first calls pay for allocations and lazy initialisation,
    # which would otherwise be booked to the first energy of the run
    first_start, first_stop = next(iter(plan.batches(batch_size)))
    generate_batch(model, plan.slice(first_start, first_stop), seed, 0, device, 0.0, plan.angles(first_start, first_stop))
    t0 = time.perf_counter()
    with (
        ShowerWriter(
            output, model.geometry.n_voxels, attrs=attrs, overwrite=overwrite, **writer_kwargs
        ) as writer,
        tqdm(total=n_total, unit="shower", unit_scale=True, disable=not progress, file=sys.stderr) as bar,
    ):
        for b, (start, stop) in enumerate(plan.batches(batch_size)):
            e_inc = plan.slice(start, stop)
            t_batch = time.perf_counter()
            showers = generate_batch(model, e_inc, seed, b, device, threshold, plan.angles(start, stop))
            timer.add(e_inc, time.perf_counter() - t_batch)
            writer.append(e_inc, showers)
            bar.update(stop - start)
        if plan.has_angles:  # the same dataset as fastsim simulate --angle writes
            writer.add_dataset(ANGLES_DATASET, plan.angles(0, n_total)[:, None], units="deg")
        writer.flush()  # chunks still being compressed on other threads belong to the run's time
        wall = time.perf_counter() - t0
        result = GenerateResult(output, n_total, wall, wall / n_total, timer.per_shower(), device)
        writer.set_attrs(**timing_attributes(result))
    return result


# ---------------------------------------------------------------------------------- several devices
def generate_showers_distributed(
    model: Any,
    plan: EnergyPlan,
    output: str | os.PathLike,
    *,
    seed: int,
    devices: int,
    accelerator: str = "auto",
    strategy: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    overwrite: bool = False,
    progress: bool = False,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_sha256: str | None = None,
    compression: str | None = "gzip",
    compression_opts: int | None = 4,
    chunk_rows: int | None = None,
    extra_attrs: dict[str, Any] | None = None,
    threshold: float = 0.0,
) -> GenerateResult | None:
    """Generate on ``devices`` devices with ``Trainer.predict`` and merge the shards into ``output``.

    Same arguments as :func:`generate_showers`, plus ``devices``, ``accelerator`` (``cpu``,
    ``gpu``/``cuda``, ``auto``) and ``strategy`` (a Lightning strategy name; ``auto`` picks
    ``ddp_fork`` on CPU where the OS can fork, else ``ddp_spawn``, and ``ddp`` on GPUs). Forked
    ranks inherit the imported modules and the model: measured here, 2 CPU ranks for 30k showers
    took 3 s with ``ddp_fork`` and 22 s with ``ddp_spawn``, whose ranks import torch and lightning
    afresh. Files are identical to one device's when the ranks use the same number of torch
    threads (matrix products are summed in a thread-dependent order otherwise: ~1e-4 relative
    differences). With the ``ddp`` launcher the command is re-run for
    every rank; only rank 0 returns a result, the others return None.
    """
    import lightning as L

    from fastsim.generation.writer import PredictSystem, ShardedShowerWriter, shard_dir_for

    output = check_output_path(output, overwrite) if _is_launcher_process() else os.fspath(output)
    check_generator(model, plan)
    accelerator = {"cuda": "gpu"}.get(accelerator, accelerator)
    if accelerator == "auto":
        accelerator = "gpu" if resolve_device("auto") == "cuda" else "cpu"
    if accelerator == "gpu":
        resolve_device("cuda")  # a clear error when there is no GPU
    elif accelerator != "cpu":
        raise FastsimError(f"--accelerator: unknown accelerator {accelerator!r} (choose cpu, cuda or auto)")
    n_batches = plan.n_batches(batch_size)
    if devices < 1:
        raise FastsimError(f"--devices must be >= 1, got {devices}")
    # every rank must get at least one batch: an empty rank has nothing to write
    devices = min(devices, n_batches)
    if strategy == "auto":
        import multiprocessing

        if accelerator == "cpu":
            strategy = "ddp_fork" if "fork" in multiprocessing.get_all_start_methods() else "ddp_spawn"
        else:
            strategy = "ddp"
    device_label = f"{'cuda' if accelerator == 'gpu' else 'cpu'} x{devices}"
    attrs = run_attributes(
        model, plan, seed=seed, batch_size=batch_size, device=device_label, checkpoint=checkpoint,
        checkpoint_sha256=checkpoint_sha256,
        extra={"strategy": strategy, "readout_threshold_mev": float(threshold), **(extra_attrs or {})},
    )  # fmt: skip
    writer_kwargs: dict[str, Any] = {
        "compression": compression,
        "compression_opts": compression_opts,
        # chunks that divide the batch size: shards then merge by raw chunk copy (see writer.py)
        "chunk_rows": chunk_rows or aligned_chunk_rows(batch_size, model.geometry.n_voxels),
    }
    callback = ShardedShowerWriter(
        output,
        shard_dir_for(output),
        n_voxels=model.geometry.n_voxels,
        attrs=attrs,
        discrete_values=plan.discrete_values,
        t0_wall=time.time(),
        overwrite=overwrite,
        progress=progress,
        writer_kwargs=writer_kwargs,
    )
    system = PredictSystem(model.eval(), plan, batch_size=batch_size, seed=seed, threshold=threshold)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        # the rank split is ours (contiguous, in order); a DistributedSampler would interleave and pad
        use_distributed_sampler=False,
        default_root_dir=os.path.dirname(os.path.abspath(output)),
    )
    trainer.predict(system, return_predictions=False)
    if not trainer.is_global_zero or not os.path.exists(output):
        return None
    return read_result(output)


def _is_launcher_process() -> bool:
    """False in a rank the ``ddp`` launcher started (it re-runs the command; rank 0 checked already)."""
    return int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0
