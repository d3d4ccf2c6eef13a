"""Generate showers from a trained generator into a CaloChallenge HDF5 file.

Two paths share the same per-batch code (:func:`generate_batch`) and therefore produce the
same numbers:

- :func:`generate_showers`: one device, a plain loop that streams batches into a
  :class:`fastsim.data.hdf5.ShowerWriter` (memory flat for any N, atomic rename at the end).
- :func:`generate_showers_distributed`: several devices through Lightning's predict loop; each
  rank streams its contiguous share of the batches into a shard and rank 0 merges the shards
  (see :mod:`fastsim.generation.writer`).

Reproducibility: batch ``b`` draws its noise from a CPU ``torch.Generator`` seeded with
``SeedSequence([seed, b])``, and the batches are fixed by the energy plan and the batch size
alone. So the same seed and batch size give identical files, whatever the number of devices
(and the same noise on CPU and GPU).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fastsim.errors import FastsimError, InputFileError
from fastsim.generation.energies import ArrayEnergies, EnergyPlan, TimePerEnergy

if TYPE_CHECKING:
    import torch

#: Showers per batch unless told otherwise: large enough to amortise Python overhead on CPU.
DEFAULT_BATCH_SIZE = 10_000


@dataclass
class GenerateResult:
    """What a generation run produced.

    Attributes:
        path: the output file.
        n_showers: showers written.
        wall_s: wall-clock seconds of the whole run (generation, transfer, compression, writing).
        time_per_shower_s: ``wall_s / n_showers``.
        time_per_shower_by_energy: ``{"<E in MeV>": s}`` generation time per shower, discrete runs only.
        device: the device(s) used, e.g. ``"cpu"``, ``"cuda:0"``, ``"cpu x2"``.
    """

    path: str
    n_showers: int
    wall_s: float
    time_per_shower_s: float
    time_per_shower_by_energy: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"


# ---------------------------------------------------------------------------------- helpers
def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; ``"gpu"`` means cuda.

    Raises:
        FastsimError: for an unknown device or cuda without a GPU.
    """
    import torch

    name = device.lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "gpu":
        name = "cuda"
    if name.split(":")[0] not in {"cpu", "cuda"}:
        raise FastsimError(f"--device: unknown device {device!r} (choose cpu, cuda or auto)")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FastsimError(f"--device {device}: no CUDA GPU is available on this machine")
    return name


def batch_seed(seed: int, batch_index: int) -> int:
    """The 64-bit seed of batch ``batch_index`` of a run seeded with ``seed``."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, int(batch_index)]).generate_state(
        1, np.uint64
    )
    # torch.Generator.manual_seed takes values below 2**63 as they are; keep clear of the sign bit
    return int(state[0] >> np.uint64(1))


def check_output_path(output: str | os.PathLike, overwrite: bool) -> str:
    """Refuse an existing output (unless ``overwrite``), a missing or unwritable directory,
    before any work (:func:`fastsim.outputs.check_output_file`)."""
    from fastsim.outputs import check_output_file

    return check_output_file(output, overwrite)


def energies_like(reference: str | os.PathLike, n_voxels: int | None = None) -> ArrayEnergies:
    """The incident energies of a CaloChallenge reference file, in file order.

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
    try:
        return ArrayEnergies(e_inc, source=reference)
    except FastsimError as err:
        raise InputFileError(reference, f"incident_energies: {err}") from None


def _model_description(model: Any) -> dict[str, Any]:
    """Class and hyper-parameters of a generator, JSON-able, for the provenance attributes."""
    from fastsim.provenance import config_hash

    cls = type(model)
    hparams = dict(getattr(model, "hparams", {}) or {})
    hparams_json = json.loads(json.dumps(hparams, default=str))
    return {
        "model_class": f"{cls.__module__}.{cls.__qualname__}",
        "hparams": hparams_json,
        "config_hash": config_hash(hparams_json),
    }


def run_attributes(
    model: Any,
    plan: EnergyPlan,
    *,
    seed: int,
    batch_size: int,
    device: str,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_sha256: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Provenance attributes of a generated file (the timing attributes are added at the end)."""
    from fastsim.provenance import file_sha256, provenance

    if checkpoint is not None and checkpoint_sha256 is None:
        checkpoint_sha256 = file_sha256(checkpoint)
    return provenance(
        producer="fastsim-generate",
        checkpoint=os.path.abspath(checkpoint) if checkpoint is not None else None,
        checkpoint_sha256=checkpoint_sha256,
        seed=int(seed),
        batch_size=int(batch_size),
        device=device,
        geometry=model.geometry.to_json(),
        latent_dim=int(model.latent_dim),
        noise_dim=int(model.noise_dim),
        energies=plan.describe(),
        n_showers=len(plan),
        # the scale of the showers the model was trained on ("" if the training files did not say)
        energy_scale=str(getattr(model, "energy_scale", "") or ""),
        **_model_description(model),
        **(extra or {}),
    )


def aligned_chunk_rows(batch_size: int, n_voxels: int, target_bytes: int = 1 << 20) -> int:
    """Rows per HDF5 chunk: a divisor of ``batch_size`` near ``target_bytes`` per chunk.

    With chunks that divide the batch size, every appended batch fills whole chunks: no chunk is
    left half-written at a batch boundary, to be decompressed and recompressed when the next batch
    completes it. Several devices: ranks start on batch boundaries, so every shard of a run with
    equal-sized batches starts on a chunk boundary of the merged file and is merged by raw chunk
    copy (:func:`fastsim.generation.writer.merge_shards`). The divisor is the largest one whose float32 chunk fits ``target_bytes`` (1 MiB,
    HDF5's default chunk cache, as :class:`ShowerWriter` chooses); a batch size with no divisor
    between a quarter of that and the target (a large prime) keeps the plain choice.
    """
    target = max(1, target_bytes // (4 * max(1, n_voxels)))
    best = max((d for d in range(1, min(batch_size, target) + 1) if batch_size % d == 0), default=1)
    return best if best * 4 >= min(target, batch_size) else target


def check_generator(model: Any) -> None:
    """Refuse a model ``fastsim generate``/``export`` cannot drive: one with extra condition columns.

    Such a model needs per-shower extra conditions besides the energy (e.g. an angle) that no
    energy option supplies.
    """
    n_conditions = int(getattr(model, "n_conditions", 1))
    if n_conditions != 1:
        raise FastsimError(
            f"the model takes {n_conditions - 1} extra condition(s) besides the energy; "
            "generation and export support energy-conditioned models only"
        )


# ---------------------------------------------------------------------------------- one batch
def generate_batch(
    model: Any, e_inc: np.ndarray, seed: int, batch_index: int, device: str | torch.device, threshold: float = 0.0
) -> np.ndarray:
    """Generate one batch of showers.

    Args:
        model: a generator (``model.generate(e_inc, generator)``), already on ``device``, eval mode.
        e_inc: incident energies in MeV, shape (n,).
        seed: the run's seed.
        batch_index: the batch's index in the run; its noise is seeded by ``(seed, batch_index)``.
        device: where the model lives.
        threshold: readout threshold in MeV: voxels below it are set to 0 (0: none), as
            :func:`fastsim.metrics.calochallenge.apply_threshold`.

    Returns:
        float32 array (n, n_voxels) of voxel energies in MeV, finite and >= 0.

    Raises:
        FastsimError: if the generator returns NaN/inf or negative deposits.
    """
    import torch

    device = torch.device(device)
    # a CPU generator: the noise (drawn on the generator's device, then moved) is then the same
    # numbers on every device, so a GPU run reproduces a CPU run up to float arithmetic
    generator = torch.Generator(device="cpu")
    generator.manual_seed(batch_seed(seed, batch_index))
    with torch.inference_mode():
        e = torch.as_tensor(np.ascontiguousarray(e_inc, dtype=np.float32), device=device)
        showers = model.generate(e, generator=generator)
        out = showers.detach().to("cpu", torch.float32).numpy()
    if out.shape != (len(e_inc), model.geometry.n_voxels):
        raise FastsimError(
            f"generator returned showers of shape {out.shape}, expected ({len(e_inc)}, {model.geometry.n_voxels})"
        )
    # a diverged checkpoint produces NaN; writing it would poison every downstream metric
    if not np.isfinite(out).all():
        raise FastsimError(f"generator produced NaN/inf voxel energies in batch {batch_index}")
    if (out < 0).any():
        raise FastsimError(f"generator produced negative voxel energies in batch {batch_index}")
    if threshold > 0:
        out[out < threshold] = 0.0
    return out


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
    check_generator(model)
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
    generate_batch(model, plan.slice(first_start, first_stop), seed, 0, device)
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
            showers = generate_batch(model, e_inc, seed, b, device, threshold)
            timer.add(e_inc, time.perf_counter() - t_batch)
            writer.append(e_inc, showers)
            bar.update(stop - start)
        writer.flush()  # chunks still being compressed on other threads belong to the run's time
        wall = time.perf_counter() - t0
        result = GenerateResult(output, n_total, wall, wall / n_total, timer.per_shower(), device)
        writer.set_attrs(**timing_attributes(result))
    return result


def timing_attributes(result: GenerateResult) -> dict[str, Any]:
    """The timing attributes of docs/architecture.md for a finished run."""
    attrs: dict[str, Any] = {
        "time_per_shower_s": float(result.time_per_shower_s),
        "wall_time_s": float(result.wall_s),
    }
    if result.time_per_shower_by_energy:
        attrs["time_per_shower_by_energy"] = json.dumps(result.time_per_shower_by_energy, sort_keys=True)
    return attrs


# ---------------------------------------------------------------------------------- several devices
def split_batches(
    plan: EnergyPlan, batch_size: int, rank: int, world_size: int
) -> list[tuple[int, int, int]]:
    """The batches of one rank: a contiguous share, as ``(batch_index, start, stop)``.

    Contiguous shares keep the energies in order when the shards are concatenated rank by rank.
    """
    n_batches = plan.n_batches(batch_size)
    first, last = rank * n_batches // world_size, (rank + 1) * n_batches // world_size
    out = []
    for b, (start, stop) in enumerate(plan.batches(batch_size)):
        if b >= last:
            break
        if b >= first:
            out.append((b, start, stop))
    return out


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
    check_generator(model)
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


def read_result(path: str | os.PathLike) -> GenerateResult:
    """The :class:`GenerateResult` recorded in a generated file's attributes."""
    import h5py

    with h5py.File(path, "r") as f:
        a = dict(f.attrs)
        n = int(f["incident_energies"].shape[0])
    by_energy = json.loads(a["time_per_shower_by_energy"]) if "time_per_shower_by_energy" in a else {}
    return GenerateResult(
        os.fspath(path), n, float(a.get("wall_time_s", np.nan)), float(a["time_per_shower_s"]),
        by_energy, str(a.get("device", "")),
    )  # fmt: skip
