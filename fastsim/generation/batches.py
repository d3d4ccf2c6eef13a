"""One batch of generated showers, and how a run is cut into batches and devices.

What one device and several share, so both produce the same numbers: the device choice, the
per-batch seeds, one batch (:func:`generate_batch`), the contiguous share of batches of each rank
(:func:`split_batches`) and chunk sizes that divide the batch size (:func:`aligned_chunk_rows`).

Reproducibility: batch ``b`` draws its noise from a CPU ``torch.Generator`` seeded with
``SeedSequence([seed, b])``, and the batches are fixed by the energy plan and the batch size
alone. So the same seed and batch size give identical files, whatever the number of devices
(and the same noise on CPU and GPU).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from fastsim.errors import FastsimError
from fastsim.generation.energies import EnergyPlan

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "aligned_chunk_rows",
    "batch_seed",
    "check_generator",
    "generate_batch",
    "resolve_device",
    "split_batches",
]

#: Showers per batch unless told otherwise: large enough to amortise Python overhead on CPU.
DEFAULT_BATCH_SIZE = 10_000


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


def check_generator(model: Any, plan: EnergyPlan | None = None) -> None:
    """Refuse a model and plan that do not fit: angles for a model not conditioned on the angle, none
    for one that is, or extra condition columns whose scaling the checkpoint does not record.

    Args:
        model: the generator.
        plan: the run's energies (and angles); None checks the model alone (export).

    Raises:
        FastsimError: one line saying what to change.
    """
    n_conditions = int(getattr(model, "n_conditions", 1))
    angle_range = getattr(model, "angle_range", None)
    if n_conditions != 1 and (angle_range is None or n_conditions != 2):
        names = ", ".join(getattr(model, "condition_names", [])[1:])
        raise FastsimError(
            f"the model takes {n_conditions - 1} extra condition(s) besides the energy ({names}) whose scaling its "
            "checkpoint does not record; generation and export support models conditioned on the energy, or on "
            "the energy and the incidence angle"
        )
    if plan is None:
        return
    if angle_range is not None and not plan.has_angles:
        raise FastsimError(
            f"the model is conditioned on the incidence angle (trained on {angle_range[0]:g}–{angle_range[1]:g} deg): "
            "give --angles DEG[,DEG...] or --like a reference file with incident_angles"
        )
    if angle_range is None and plan.has_angles:
        raise FastsimError("the model is not conditioned on the incidence angle: drop --angles")


def generate_batch(
    model: Any,
    e_inc: np.ndarray,
    seed: int,
    batch_index: int,
    device: str | torch.device,
    threshold: float = 0.0,
    angles: np.ndarray | None = None,
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
        angles: incidence angles (n,) in degrees, for a model conditioned on the angle (scaled by
            the model's own :class:`AngleCondition`).

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
        if angles is None:
            showers = model.generate(e, generator=generator)
        else:
            extra = model.scale_extra_conditions(torch.as_tensor(np.asarray(angles, dtype=np.float64)[:, None]))
            showers = model.generate(e, generator=generator, extra_conditions=extra)
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


def aligned_chunk_rows(batch_size: int, n_voxels: int, target_bytes: int = 1 << 20) -> int:
    """Rows per HDF5 chunk: a divisor of ``batch_size`` near ``target_bytes`` per chunk.

    With chunks that divide the batch size, every appended batch fills whole chunks: no chunk is
    left half-written at a batch boundary, to be decompressed and recompressed when the next batch
    completes it. Several devices: ranks start on batch boundaries, so every shard of a run with
    equal-sized batches starts on a chunk boundary of the merged file and is merged by raw chunk
    copy (:func:`fastsim.data.shards.merge_shards`). The divisor is the largest one whose float32 chunk fits ``target_bytes`` (1 MiB,
    HDF5's default chunk cache, as :class:`ShowerWriter` chooses); a batch size with no divisor
    between a quarter of that and the target (a large prime) keeps the plain choice.
    """
    target = max(1, target_bytes // (4 * max(1, n_voxels)))
    best = max((d for d in range(1, min(batch_size, target) + 1) if batch_size % d == 0), default=1)
    return best if best * 4 >= min(target, batch_size) else target
