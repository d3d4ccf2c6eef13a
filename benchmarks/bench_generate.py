#!/usr/bin/env python
"""Benchmark ``fastsim generate``: end-to-end throughput against a bare baseline, and time per shower.

1. End to end: :func:`fastsim.generation.generate.generate_showers` (the function the CLI calls)
   writes ``--n`` showers (default 10^6) at dataset-1 photon size (368 voxels) into gzip HDF5,
   with an untrained default-config WGAN-GP. The baseline, measured in the same run, is the bare
   generator forward pass (``model.generate`` on the same batches) plus a raw h5py write of the
   same arrays into a preallocated dataset with the same compression and chunking. The printed
   ratio ``end-to-end showers/s ÷ baseline showers/s`` has a target of >= 0.5. The same call is
   also run with the writer of before issue 16 (h5py compressing every chunk on the calling
   thread, selected by turning off :class:`~fastsim.data.hdf5.ChunkRowWriter`'s own encoding):
   ``ours ÷ single-thread writer`` has a target of >= 1.6 on 2 cores, and the two files must
   decode to identical arrays from identical stored chunks.
2. Time per shower at batch sizes 1, 100 and 10000 (the CaloChallenge timing protocol: wall time
   of generating showers in batches of that size, divided by the showers), per incident energy.
   With ``--reference REF.h5`` (a Geant4 file carrying ``time_per_shower_by_energy``) the full
   simulation's time at the same energies is printed next to it, with the speed-up.

    OMP_NUM_THREADS=1 python benchmarks/bench_generate.py                   # full size
    OMP_NUM_THREADS=1 python benchmarks/bench_generate.py --n 20000 --timing-scale 0.1   # quick
    OMP_NUM_THREADS=1 python benchmarks/bench_generate.py --skip-end-to-end --devices 2  # multi-device

3. With ``--devices N``: the several-devices path (Lightning predict loop, one shard per rank,
   raw-chunk merge) against one device on the same showers, and whether the files are identical.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import tempfile
import time

import h5py
import numpy as np
import torch

from fastsim.data.hdf5 import default_write_threads
from fastsim.generation.batches import batch_seed, generate_batch, resolve_device
from fastsim.generation.energies import DiscreteEnergies, energy_key
from fastsim.generation.generate import generate_showers, generate_showers_distributed
from fastsim.geometry import Geometry

#: Dataset-1 photon energies: 256 MeV … 4.2 TeV in powers of two (CaloChallenge).
DATASET1_ENERGIES = [float(2**k) for k in range(8, 23)]
#: Showers timed per (energy, batch size) at --timing-scale 1.
TIMING_SHOWERS = {1: 1_000, 100: 20_000, 10_000: 100_000}


def build_model(geometry: Geometry, seed: int = 0) -> torch.nn.Module:
    """An untrained WGAN-GP with the default configuration for ``geometry``.

    The speed of a forward pass does not depend on the weights, so no training is needed; the
    energy condition gets dataset 1's fitted range (256 MeV to 4.2 TeV).
    """
    from fastsim.models.wgan_gp import WGANGP

    torch.manual_seed(seed)
    condition = {"class": "EnergyCondition", "e_min": min(DATASET1_ENERGIES), "e_max": max(DATASET1_ENERGIES)}
    return WGANGP(geometry=geometry.to_dict(), condition=condition).eval()


def max_rss_mb() -> float:
    """Peak resident memory of this process so far, MB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_end_to_end(model, plan, path: str, batch_size: int, device: str, seed: int) -> float:
    """``fastsim generate`` as the CLI runs it; returns showers/s."""
    return run_end_to_end_cpu(model, plan, path, batch_size, device, seed)[0]


def run_end_to_end_cpu(model, plan, path: str, batch_size: int, device: str, seed: int) -> tuple[float, float, float]:
    """As :func:`run_end_to_end`; returns (showers/s, CPU seconds of all threads ÷ wall seconds,
    showers/s projected on two otherwise idle cores).

    The projection is for a loaded, shared machine, where wall time measures the other processes:
    with two cores to itself a run takes at least its calling thread's CPU time and at least half
    its total CPU time (the compressing threads share the cores with it), so its rate is
    ``N / max(calling thread CPU, total CPU / 2)``; for the single-thread writer that is N / total CPU.
    """
    t, c, main = time.perf_counter(), time.process_time(), time.thread_time()
    generate_showers(model, plan, path, seed=seed, batch_size=batch_size, device=device, overwrite=True)
    wall, cpu, main = time.perf_counter() - t, time.process_time() - c, time.thread_time() - main
    return len(plan) / wall, cpu / wall, len(plan) / max(main, cpu / 2)


@contextlib.contextmanager
def single_thread_writer():
    """The writer as it was before issue 16: every chunk compressed by h5py on the calling thread.

    ChunkRowWriter falls back to plain h5py writes for layouts it cannot encode itself; claiming
    that of every layout selects exactly that code path.
    """
    import fastsim.data.hdf5 as hdf5

    saved = hdf5._direct_level
    hdf5._direct_level = lambda ds: False
    try:
        yield
    finally:
        hdf5._direct_level = saved


def same_file_content(a_path: str, b_path: str) -> tuple[bool, bool]:
    """(decoded arrays identical, stored showers chunks identical) of two CaloChallenge files."""
    with h5py.File(a_path, "r") as a, h5py.File(b_path, "r") as b:
        decoded = all(
            a[k].dtype == b[k].dtype and np.array_equal(a[k][:], b[k][:]) for k in ("showers", "incident_energies")
        )
        sa, sb = a["showers"], b["showers"]
        layout = (sa.shape, sa.chunks, sa.compression, sa.compression_opts, sa.shuffle)
        chunks = layout == (sb.shape, sb.chunks, sb.compression, sb.compression_opts, sb.shuffle) and all(
            sa.id.read_direct_chunk((lo, 0)) == sb.id.read_direct_chunk((lo, 0))
            for lo in range(0, sa.shape[0], sa.chunks[0])
        )
    return decoded, chunks


def run_baseline(
    model, plan, path: str, batch_size: int, device: str, seed: int, chunks, compression, opts
) -> float:
    """Bare forward pass + raw h5py write (preallocated, same compression/chunks); returns showers/s."""
    n, v = len(plan), model.geometry.n_voxels
    t = time.perf_counter()
    with h5py.File(path, "w") as f:
        ds = f.create_dataset(
            "showers",
            shape=(n, v),
            dtype=np.float32,
            chunks=chunks,
            compression=compression,
            compression_opts=opts,
        )
        de = f.create_dataset(
            "incident_energies", shape=(n, 1), dtype=np.float64, chunks=(max(chunks[0], 4096), 1),
            compression=compression, compression_opts=opts,
        )  # fmt: skip
        with torch.inference_mode():
            for b, (start, stop) in enumerate(plan.batches(batch_size)):
                e = plan.slice(start, stop)
                g = torch.Generator().manual_seed(batch_seed(seed, b))  # as generate_batch: CPU noise
                x = model.generate(torch.as_tensor(e, dtype=torch.float32, device=device), generator=g)
                ds[start:stop] = x.cpu().numpy()
                de[start:stop, 0] = e
    return n / (time.perf_counter() - t)


def compare_devices(model, args: argparse.Namespace, device: str) -> dict:
    """``generate_showers_distributed`` on ``args.devices`` devices against ``generate_showers`` on one.

    Wall time of the whole call each (process start-up, shards and merge included).
    """
    plan = DiscreteEnergies.total(DATASET1_ENERGIES, args.devices_n)
    accelerator = "gpu" if device.startswith("cuda") else "cpu"
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        t = time.perf_counter()
        generate_showers(
            model, plan, os.path.join(tmp, "one.h5"), seed=1, batch_size=args.batch_size, device=device
        )
        one = args.devices_n / (time.perf_counter() - t)
        t = time.perf_counter()
        generate_showers_distributed(model, plan, os.path.join(tmp, "many.h5"), seed=1, batch_size=args.batch_size,
                                     devices=args.devices, accelerator=accelerator)  # fmt: skip
        many = args.devices_n / (time.perf_counter() - t)
        with h5py.File(os.path.join(tmp, "one.h5")) as a, h5py.File(os.path.join(tmp, "many.h5")) as b:
            identical = bool(np.array_equal(a["showers"][:], b["showers"][:]))
    print(
        f"\n{args.devices} devices ({accelerator}) vs one, {args.devices_n} showers, whole call (start-up and merge included):"
    )
    print(f"  one device      {one:12.0f} showers/s")
    print(
        f"  {args.devices} devices       {many:12.0f} showers/s   speed-up {many / one:.2f}   files identical: {identical}"
    )
    return {
        "one_showers_per_s": one,
        "many_showers_per_s": many,
        "speedup": many / one,
        "identical": identical,
    }


def time_per_shower(model, energies: list[float], batch_sizes: list[int], device: str, scale: float) -> dict:
    """``{batch_size: {energy_key: seconds per shower}}`` measured with :func:`generate_batch`."""
    out: dict[int, dict[str, float]] = {}
    for bs in batch_sizes:
        n = max(bs, int(TIMING_SHOWERS.get(bs, 10 * bs) * scale))
        out[bs] = {}
        for e in energies:
            plan = DiscreteEnergies.each([e], n)
            generate_batch(model, plan.slice(0, min(bs, n)), 0, 0, device)  # warm-up (allocations, kernels)
            t = time.perf_counter()
            for b, (start, stop) in enumerate(plan.batches(bs)):
                generate_batch(model, plan.slice(start, stop), 0, b, device)
            out[bs][energy_key(e)] = (time.perf_counter() - t) / n
    return out


def reference_times(path: str) -> dict[str, float]:
    """The full simulation's ``time_per_shower_by_energy`` of a reference file, keys normalised."""
    with h5py.File(path, "r") as f:
        if "time_per_shower_by_energy" not in f.attrs:
            sys.exit(f"{path}: no time_per_shower_by_energy attribute")
        raw = f.attrs["time_per_shower_by_energy"]
        producer = f.attrs.get("producer", "?")
    raw = raw.decode() if isinstance(raw, bytes) else raw
    print(f"reference {path}: producer {producer}")
    return {energy_key(float(k)): float(v) for k, v in json.loads(raw).items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="showers for the end-to-end run (default 10^6)")
    p.add_argument("--batch-size", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=2, help="end-to-end runs of ours and of the single-thread writer")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--reference", help="Geant4 CaloChallenge file with time_per_shower_by_energy")
    p.add_argument(
        "--timing-scale", type=float, default=1.0, help="scale the number of showers timed per batch size"
    )
    p.add_argument("--batch-sizes", default="1,100,10000")
    p.add_argument("--skip-end-to-end", action="store_true")
    p.add_argument("--workdir", help="where to write the HDF5 files (default: a temporary directory)")
    p.add_argument("--json", help="also write the numbers to this JSON file")
    p.add_argument(
        "--devices",
        type=int,
        default=0,
        help="also compare --devices N (Lightning predict loop, shards merged) with one device",
    )
    p.add_argument("--devices-n", type=int, default=300_000, help="showers for the --devices comparison")
    args = p.parse_args()

    device = resolve_device(args.device)
    geometry = Geometry.builtin("1-photons")
    model = build_model(geometry).to(device)
    print(f"fastsim generate benchmark: {geometry.name} ({geometry.n_voxels} voxels), {type(model).__name__} "
          f"untrained default config, device {device}, torch threads {torch.get_num_threads()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load avg {os.getloadavg()[0]:.2f}")  # fmt: skip
    results: dict = {"device": device, "n": args.n, "batch_size": args.batch_size}

    if not args.skip_end_to_end:
        plan = DiscreteEnergies.total(DATASET1_ENERGIES, args.n)
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            e2e_path = os.path.join(tmp, "e2e.h5")
            # a tenth of the run first: if memory is flat, the full run adds nothing to this peak
            rss0 = max_rss_mb()
            # (at least one full batch per energy, so the peak includes full-size batches)
            n_tenth = max(args.n // 10, len(DATASET1_ENERGIES) * args.batch_size)
            tenth = DiscreteEnergies.total(DATASET1_ENERGIES, n_tenth)
            run_end_to_end(model, tenth, e2e_path, args.batch_size, device, seed=1)
            rss_tenth = max_rss_mb()
            # ours and the single-thread writer alternate; the best of each is the least disturbed
            # by other processes on a shared machine
            serial_path = os.path.join(tmp, "serial.h5")
            e2e, serial, cpu_e2e, cpu_serial, proj_e2e, proj_serial = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
            for _ in range(args.repeats):
                rate, cpu, proj = run_end_to_end_cpu(model, plan, e2e_path, args.batch_size, device, seed=1)
                proj_e2e = max(proj_e2e, proj)
                if rate > e2e:
                    e2e, cpu_e2e = rate, cpu
                with single_thread_writer():
                    rate, cpu, _ = run_end_to_end_cpu(model, plan, serial_path, args.batch_size, device, seed=1)
                    proj = rate / cpu  # one thread: N / CPU seconds
                proj_serial = max(proj_serial, proj)
                if rate > serial:
                    serial, cpu_serial = rate, cpu
            rss1 = max_rss_mb()
            size_mb = os.path.getsize(e2e_path) / 1e6
            # the baseline writes exactly the layout fastsim generate chose
            with h5py.File(e2e_path, "r") as f:
                ds = f["showers"]
                chunks, compression, opts = ds.chunks, ds.compression, ds.compression_opts
            decoded_same, chunks_same = same_file_content(e2e_path, serial_path)
            os.remove(e2e_path)
            os.remove(serial_path)
            raw_path = os.path.join(tmp, "raw.h5")
            base = run_baseline(model, plan, raw_path, args.batch_size, device, 1, chunks, compression, opts)
            print(
                f"\nend to end, {args.n} showers, batch {args.batch_size}, {compression} {opts}, chunks {chunks}:"
            )
            print(f"  fastsim generate (library call)   {e2e:12.0f} showers/s   file {size_mb:.0f} MB   "
                  f"(chunks compressed on {default_write_threads()} threads; CPU/wall {cpu_e2e:.2f})")  # fmt: skip
            print(f"  same, single-thread h5py writer   {serial:12.0f} showers/s   "
                  f"(the writer before issue 16; CPU/wall {cpu_serial:.2f})")  # fmt: skip
            print(f"  bare forward + raw h5py write     {base:12.0f} showers/s")
            print(f"  ratio ours / single-thread writer {e2e / serial:12.2f}   (target >= 1.6 on 2 cores)")
            print(f"  ratio ours / bare                 {e2e / base:12.2f}   (target >= 0.5)")
            print(f"  files identical: decoded arrays {decoded_same}, stored chunks {chunks_same}")
            print(f"  from CPU times, on 2 idle cores: ours {proj_e2e:.0f}, single-thread writer {proj_serial:.0f} "
                  f"showers/s, ratio {proj_e2e / proj_serial:.2f} (a projection for a loaded machine, not a measurement)")
            print(f"  peak RSS: {rss0:.0f} MB before, {rss_tenth:.0f} MB after a run of {n_tenth}, {rss1:.0f} MB after "
                  f"the full run (its showers alone would be {args.n * geometry.n_voxels * 4 / 1e6:.0f} MB)")  # fmt: skip
            results["end_to_end"] = {"showers_per_s": e2e, "baseline_showers_per_s": base, "ratio": e2e / base,
                                     "single_thread_writer_showers_per_s": serial, "ratio_vs_single_thread": e2e / serial,
                                     "cpu_per_wall": cpu_e2e, "single_thread_cpu_per_wall": cpu_serial,
                                     "projected_2core_ratio": proj_e2e / proj_serial,
                                     "decoded_identical": decoded_same, "chunks_identical": chunks_same,
                                     "max_rss_mb_tenth": rss_tenth, "max_rss_mb": rss1, "file_mb": size_mb}  # fmt: skip

    if args.devices > 1:
        results["devices"] = compare_devices(model, args, device)

    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    g4 = reference_times(args.reference) if args.reference else {}
    energies = [float(k) for k in g4] if g4 else [65536.0]
    timing = time_per_shower(model, sorted(energies), batch_sizes, device, args.timing_scale)
    results["time_per_shower"] = {str(k): v for k, v in timing.items()}
    print("\ntime per shower (s), CaloChallenge protocol: wall time of the batches / showers")
    head = f"  {'E (MeV)':>10}" + "".join(f"{'bs ' + str(b):>12}" for b in batch_sizes)
    if g4:
        head += f"{'Geant4':>12}" + "".join(f"{'speed-up bs ' + str(b):>18}" for b in batch_sizes)
    print(head)
    for e in sorted(energies):
        k = energy_key(e)
        row = f"  {k:>10}" + "".join(f"{timing[b][k]:12.3g}" for b in batch_sizes)
        if g4:
            row += f"{g4[k]:12.3g}" + "".join(f"{g4[k] / timing[b][k]:18.3g}" for b in batch_sizes)
        print(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
