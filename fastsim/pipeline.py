"""``fastsim demo``: the main job end to end on the embedded Geant4 photon reference.

Steps, each with visible progress, all outputs under ``--out`` (default ``outputs/demo``):

1. split the embedded Geant4 showers (``fastsim/refdata/photons_ds1_g4.h5``) per energy into a
   training part and a held-out part that no model sees;
2. ``fastsim prep-train``: training part -> training tensors;
3. ``fastsim fit`` with the committed configs (``configs/model/<model>.yaml``,
   ``configs/data/photons.yaml``, ``configs/trainer/cpu.yaml``) for a wall-clock budget per model;
4. ``fastsim generate --like heldout.h5`` from the best checkpoint (lowest summed χ²/ndf);
5. ``fastsim benchmark`` generated vs held-out Geant4 -> ``report.md``/``metrics.json``/PNGs;
6. a short summary: response and resolution agreement per energy, classifier AUC.

Steps 3-5 run for each model; on a machine with several cores the models run side by side, one
process each (``--jobs``), the cores shared between them, each printing its latest progress line
every 30 s (full logs in ``<out>/<model>/log.txt``).

Every step goes through the same command functions a user runs, so the demo exercises them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from fastsim.errors import FastsimError, InputFileError

REFERENCE_NAME = "photons_ds1_g4.h5"
GEOMETRY = "1-photons"  # the embedded reference's binning
MODELS = ("wgan_gp", "vae")


def reference_file() -> Path:
    """Path of the embedded Geant4 photon reference (dataset-1 photon binning, 368 voxels)."""
    path = Path(str(resources.files("fastsim") / "refdata" / REFERENCE_NAME))
    if not path.exists():
        raise FastsimError(f"{path}: embedded reference data set missing (reinstall fastsim)")
    return path


def configs_dir() -> Path:
    """The packaged configs (``fastsim/configs`` when installed, the checkout's ``configs/``)."""
    from fastsim.training.configs import config_dir

    return Path(config_dir())


def split_reference(
    reference: str | os.PathLike, train_out: str | os.PathLike, heldout_out: str | os.PathLike,
    heldout_fraction: float, seed: int, leave_out: tuple[float, ...] = (),
) -> tuple[int, int]:
    """Split a CaloChallenge file per incident energy into training and held-out files.

    Args:
        reference: CaloChallenge HDF5 file (small enough to read whole: the embedded set is ~10⁴ showers).
        train_out, heldout_out: files to write (atomic).
        heldout_fraction: fraction of the showers of each energy held out, in (0, 1).
        seed: seed of the random split.
        leave_out: incident energies (MeV) kept out of training entirely: all their showers go
            to the held-out file (the interpolation study).

    Returns:
        (number of training showers, number of held-out showers).
    """
    from fastsim.data.hdf5 import open_calochallenge, write_calochallenge
    from fastsim.provenance import provenance

    if not 0 < heldout_fraction < 1:
        raise FastsimError(f"--heldout-fraction must be in (0, 1), got {heldout_fraction}")
    with open_calochallenge(reference) as f:
        e_inc, showers = f.read()
        src_attrs = dict(f.attrs)
    rng = np.random.default_rng(seed)
    held = np.zeros(len(e_inc), dtype=bool)
    energies = np.unique(e_inc)
    for e_out in leave_out:
        match = np.isclose(energies, e_out, rtol=1e-6, atol=0.0)
        if not match.any():
            raise FastsimError(
                f"{reference}: --leave-out {e_out:g} MeV is not one of its incident energies "
                f"({', '.join(f'{e:g}' for e in energies)} MeV)"
            )
        held |= np.isclose(e_inc, energies[match][0], rtol=1e-6, atol=0.0)
    if held.all():
        raise FastsimError(f"{reference}: --leave-out leaves no energy to train on")
    for energy in energies:
        if np.isclose(energy, np.asarray(leave_out, dtype=float), rtol=1e-6, atol=0.0).any():
            continue
        idx = np.flatnonzero(e_inc == energy)
        k = max(1, int(round(heldout_fraction * len(idx))))
        held[rng.choice(idx, size=k, replace=False)] = True
    keep = {k: v for k, v in src_attrs.items() if k in {"geometry", "producer", "time_per_shower_s",
                                                          "time_per_shower_by_energy", "geant4_version",
                                                          "physics_list", "detector", "particle"}}
    for out, mask, part in ((train_out, ~held, "train"), (heldout_out, held, "heldout")):
        attrs = {**keep, **provenance(source=os.fspath(reference), split=part, split_seed=seed,
                                      heldout_fraction=heldout_fraction)}
        write_calochallenge(out, e_inc[mask], showers[mask], attrs=attrs, overwrite=True)
    return int((~held).sum()), int(held.sum())


def check_extra_training(extra: list[Path], heldout: Path, chunk: int = 50_000) -> int:
    """Refuse extra training files that hold any held-out shower; return their number of showers.

    ``fastsim demo --extra-train`` adds Geant4 showers to the training part only. A file that
    shares showers with the held-out part (the reference itself, a copy, a file made from it)
    would put held-out events into training and make every benchmark number meaningless, so
    every extra shower is compared byte for byte (with its incident energy) with the held-out
    ones, streamed in chunks.

    Args:
        extra: CaloChallenge HDF5 files with the geometry of the held-out file.
        heldout: the held-out CaloChallenge file written by :func:`split_reference`.
        chunk: rows read at a time from each extra file.

    Raises:
        InputFileError: naming the file, when it has another voxel count or shares a shower.
    """
    import hashlib

    from fastsim.data.hdf5 import open_calochallenge

    def keys(e_inc: np.ndarray, showers: np.ndarray) -> list[bytes]:
        rows = np.ascontiguousarray(showers, dtype=np.float32)
        return [hashlib.blake2b(np.float64(e).tobytes() + r.tobytes(), digest_size=16).digest()
                for e, r in zip(np.asarray(e_inc, dtype=np.float64).reshape(-1), rows, strict=True)]

    with open_calochallenge(heldout) as f:
        e_held, s_held = f.read()
        n_voxels = s_held.shape[1]
    held = set(keys(e_held, s_held))
    total = 0
    for path in extra:
        with open_calochallenge(path) as f:
            n, v = f.n_showers, f.n_voxels
            if v != n_voxels:
                raise InputFileError(path, f"--extra-train showers have {v} voxels, the reference {n_voxels}")
            for start in range(0, n, chunk):
                e_inc, showers = f.read(start, min(n, start + chunk))
                if any(k in held for k in keys(e_inc, showers)):
                    raise InputFileError(path, "--extra-train file shares showers with the held-out Geant4 "
                                         "part (the reference or a copy of it?); refusing to train on them")
        total += n
    return total


def _step(title: str) -> float:
    print(f"\n=== {title}", flush=True)
    return time.perf_counter()


def _done(t0: float) -> None:
    print(f"    done in {time.perf_counter() - t0:.0f} s", flush=True)


def _run(argv: list[str]) -> None:
    """Run one ``fastsim`` command in-process; a non-zero status stops the demo."""
    from fastsim.cli import main as cli_main

    print("    $ fastsim " + " ".join(argv), flush=True)
    status = cli_main(argv)
    if status != 0:
        raise FastsimError(f"step 'fastsim {argv[0]}' failed with exit status {status}")


def train_model(model: str, tensors: Path, out: Path, minutes: float, seed: int, extra: list[str]) -> Path:
    """Train one model with the committed configs for ``minutes`` of wall time; return the best checkpoint."""
    from fastsim.training.cli import run_fit

    cfg = configs_dir()
    # the demo's own folder: checkpoints of an earlier demo run there must not mix with this one's
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    args = [
        "--config", str(cfg / "model" / f"{model}.yaml"),
        "--config", str(cfg / "data" / "photons.yaml"),
        "--config", str(cfg / "trainer" / "cpu.yaml"),
        "--config", str(cfg / "logger" / "csv.yaml"),
        "--data.train_file", str(tensors),
        "--data.num_workers", "0",
        "--trainer.default_root_dir", str(out),
        "--trainer.logger.init_args.save_dir", str(out / "logs"),
        "--trainer.max_time", _max_time(minutes),
        "--trainer.max_epochs", "100000",
        "--checkpoint.dirpath", str(out / "checkpoints"),
        "--best_checkpoint.dirpath", str(out / "checkpoints"),
        "--seed_everything", str(seed),
        *extra,
    ]
    print("    $ fastsim fit " + " ".join(args), flush=True)
    cli = run_fit(args)
    best = None
    for cb in cli.trainer.checkpoint_callbacks:
        if getattr(cb, "monitor", None) and cb.best_model_path:
            best = cb.best_model_path
    if not best:
        best = getattr(cli.trainer.checkpoint_callback, "last_model_path", "") or None
    if not best or not Path(best).exists():
        raise FastsimError(f"{out}: training of {model} produced no checkpoint")
    return Path(best)


def run_model(
    model: str, mdir: Path, *, tensors: Path, held_h5: Path, n_held: int, minutes: float, seed: int,
    fit_args: list[str], classifier_epochs: int | None, bench_args: tuple[str, ...] = (), step: int = 3,
    readout_threshold: float | None = None,
) -> Path:
    """Train ``model``, generate like the held-out file and benchmark; return the report folder.
    ``readout_threshold`` (MeV): the training showers' threshold, which the WGAN-GP's generator
    applies too (so that the critic cannot tell the samples apart by their smallest voxels)."""
    t0 = _step(f"{step}. train {model} for {minutes:g} min (configs/model/{model}.yaml)")
    if model == "wgan_gp" and readout_threshold is not None:
        fit_args = [f"--model.init_args.readout_threshold={readout_threshold!r}", *fit_args]
    ckpt = train_model(model, tensors, mdir, minutes, seed, fit_args)
    print(f"    best checkpoint: {ckpt}")
    _done(t0)

    t0 = _step(f"{step + 1}. generate {n_held} showers at the held-out energies with {model}")
    gen = mdir / "generated.h5"
    _run(["generate", "--checkpoint", str(ckpt), "--like", str(held_h5), "-o", str(gen),
          "--seed", str(seed), "--device", "cpu", "--overwrite"])
    _done(t0)

    t0 = _step(f"{step + 2}. benchmark {model} against held-out Geant4")
    report = mdir / "report"
    bench = ["benchmark", "--generated", str(gen), "--reference", str(held_h5), "--out", str(report),
             "--seed", str(seed), "--overwrite"]  # the demo is repeatable into the same --out
    if classifier_epochs is not None:
        bench += ["--classifier-epochs", str(classifier_epochs)]
    _run([*bench, *bench_args])
    _done(t0)
    return report


def _die_with_parent(parent: int) -> None:
    """End this worker now if the demo (pid ``parent``) is already gone, and on Linux have the
    kernel SIGKILL it when the demo dies later (``PR_SET_PDEATHSIG``).

    The polling thread in :func:`_model_job` needs the GIL to notice, and a training loop busy in
    h5py calls was seen to starve it for minutes; the kernel's signal needs nothing from Python.
    Checked after the signal is armed: a demo killed while this worker was still starting would
    otherwise be missed by both.
    """
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass  # the polling thread remains
    if os.getppid() != parent:
        os._exit(3)


def _model_job(model: str, mdir: Path, log: Path, threads: int, kwargs: dict[str, Any]) -> None:
    """:func:`run_model` in a worker process, its output (C level too) into ``log``; a failure
    leaves its one-line message as the log's last line and a non-zero exit status."""
    import multiprocessing
    import threading

    parent_process = multiprocessing.parent_process()  # the demo's pid as it was at spawn time
    parent = parent_process.pid if parent_process is not None else os.getppid()
    _die_with_parent(parent)

    import torch

    def orphan_watch() -> None:  # the demo was killed (even SIGKILL): do not train on alone
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(3)  # every file is written under a temporary name: nothing half-written stays

    threading.Thread(target=orphan_watch, daemon=True).start()
    torch.set_num_threads(threads)
    mdir.mkdir(parents=True, exist_ok=True)
    with open(log, "w", buffering=1) as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        sys.stdout = sys.stderr = f
        try:
            run_model(model, mdir, **kwargs)
        except FastsimError as err:
            print(f"error: {err}", flush=True)
            sys.exit(2)


def _last_line(path: Path, width: int = 110) -> str:
    """The last progress line of a log (tqdm redraws with carriage returns)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 4096))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    parts = [p.strip() for p in tail.replace("\r", "\n").split("\n") if p.strip()]
    return parts[-1][:width] if parts else ""


def run_models_parallel(models: list[str], out: Path, jobs: int, kwargs: dict[str, Any],
                        every: float = 30.0) -> dict[str, Path]:
    """Run :func:`run_model` for several models side by side (spawned processes, ``jobs`` at a
    time, the cores shared out), printing each one's latest progress line every ``every`` seconds.
    A failed model stops the others and raises with the model's last log line."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fresh interpreters: no forked torch/h5py state
    threads = max(1, (os.cpu_count() or 1) // jobs)
    logs = {m: out / m / "log.txt" for m in models}
    t0 = _step(f"3. train, generate and benchmark {', '.join(models)} side by side "
               f"({jobs} processes, {threads} thread(s) each, {kwargs['minutes']:g} min of training each)")
    for m in models:
        print(f"    {m}: configs/model/{m}.yaml, log {logs[m]}")
    queue, running = list(models), {}

    def on_sigterm(signum: int, frame: Any) -> None:
        raise FastsimError("demo stopped by SIGTERM")

    import signal

    previous = signal.signal(signal.SIGTERM, on_sigterm)  # so that `finally` stops the workers
    try:
        while queue or running:
            while queue and len(running) < jobs:
                m = queue.pop(0)
                (out / m).mkdir(parents=True, exist_ok=True)
                running[m] = ctx.Process(target=_model_job, args=(m, out / m, logs[m], threads, kwargs))
                running[m].start()
            deadline = time.monotonic() + every
            while running and time.monotonic() < deadline and all(p.is_alive() for p in running.values()):
                time.sleep(0.5)
            stamp = f"    [{time.perf_counter() - t0:5.0f} s]"
            for m, proc in list(running.items()):
                if proc.is_alive():
                    print(f"{stamp} {m}: {_last_line(logs[m])}", flush=True)
                    continue
                proc.join()
                del running[m]
                if proc.exitcode != 0:
                    raise FastsimError(f"{m} failed (exit status {proc.exitcode}): {_last_line(logs[m], 400)} "
                                       f"(full log: {logs[m]})")
                print(f"{stamp} {m}: done, report {out / m / 'report' / 'report.md'}", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        for proc in running.values():
            proc.kill()  # SIGKILL: Lightning defers SIGTERM to the end of a training step
            proc.join()
    _done(t0)
    return {m: out / m / "report" for m in models}


def _max_time(minutes: float) -> str:
    total = max(1, int(round(minutes * 60)))
    return f"00:{total // 3600:02d}:{(total % 3600) // 60:02d}:{total % 60:02d}"


def _in(energy: Any, energies: tuple[float, ...]) -> bool:
    return energy is not None and bool(np.isclose(float(energy), energies, rtol=1e-6, atol=0.0).any())


def summarize(metrics_path: Path, left_out: tuple[float, ...] = ()) -> list[str]:
    """Short text summary of a benchmark's metrics.json: agreement per energy and classifier AUC;
    energies in ``left_out`` (MeV) are marked "not trained"."""
    from fastsim.report.result import load_result

    m = load_result(metrics_path)

    def fmt(v: Any, u: Any = None) -> str:
        if v is None:
            return "–"
        return f"{v:.3f}" + (f" ± {u:.3f}" if u is not None else "")

    lines = [f"    {'E_inc':>10}  {'response gen/G4':>16}  {'resolution gen/G4':>18}  {'sep. power':>10}"]
    for row in m.per_energy:
        sep = row.e_ratio.separation_power if row.e_ratio is not None else None
        lines.append(
            f"    {row.label:>10}  {fmt(row.response_ratio, row.response_ratio_unc):>16}  "
            f"{fmt(row.resolution_ratio, row.resolution_ratio_unc):>18}  {fmt(sep):>10}"
            + ("  (not trained: interpolated)" if _in(row.energy, left_out) else "")
        )
    for kind, res in m.classifier.results().items():
        if res.auc is not None:
            lines.append(f"    classifier AUC ({kind.replace('_', '-')}): {res.auc:.3f}")
    lines.append(f"    checks passed: {m.summary.n_passed}/{m.summary.n_checks}")
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fastsim demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: wgan_gp, vae (default both)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="training wall time per model (default 10 when the models train side by side, "
                             "5 one after the other)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="models trained side by side, one process each sharing the CPU cores "
                             "(default: as many as models and cores allow; 1 = one after the other)")
    parser.add_argument("--heldout-fraction", type=float, default=0.3,
                        help="fraction of Geant4 showers per energy kept out of training (default 0.3)")
    parser.add_argument("--leave-out", type=float, action="append", default=[], metavar="MEV",
                        help="interpolation study: keep this incident energy (MeV) out of training, "
                             "benchmark the model there (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-threshold", type=float, default=None, metavar="MEV",
                        help="readout threshold of the training showers (fastsim prep-train --threshold) and of "
                             "the WGAN-GP's generator; default: the benchmark's, the CaloChallenge value of the "
                             "geometry (1 MeV for dataset 1); 0: none")
    parser.add_argument("--reference", default=None, help="CaloChallenge file to use instead of the embedded set")
    parser.add_argument("--extra-train", action="append", default=[], metavar="FILE",
                        help="more Geant4 showers (CaloChallenge HDF5, same geometry and energy scale) added to "
                             "the training part only, e.g. ../shared/data/g4/ converted with fastsim em-scale "
                             "(repeatable); refused if it shares a shower with the held-out part")
    parser.add_argument("--classifier-epochs", type=int, default=None, help="passed to fastsim benchmark")
    parser.add_argument("--fit-arg", action="append", default=[],
                        help="extra argument for fastsim fit (repeatable), e.g. --fit-arg=--trainer.max_steps=60")
    parser.add_argument("--bench-arg", action="append", default=[],
                        help="extra argument for fastsim benchmark (repeatable), e.g. --bench-arg=--protocol=quick "
                             "(minutes instead of ~12 CPU-minutes per model for the official classifiers)")
    args = parser.parse_args(argv[1:])

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in MODELS:
            raise FastsimError(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reference = Path(args.reference) if args.reference else reference_file()
    t_start = time.perf_counter()

    t0 = _step(f"1. split {reference} into training and held-out Geant4 showers")
    train_h5, held_h5 = out / "g4_train.h5", out / "g4_heldout.h5"
    n_train, n_held = split_reference(reference, train_h5, held_h5, args.heldout_fraction, args.seed,
                                      tuple(args.leave_out))
    print(f"    {n_train} training showers -> {train_h5}\n    {n_held} held-out showers -> {held_h5}")
    extra = [Path(p) for p in args.extra_train]
    if extra:
        n_extra = check_extra_training(extra, held_h5)
        print(f"    + {n_extra} extra training showers from {', '.join(map(str, extra))} (no held-out shower among them)")
    if args.leave_out:
        print("    left out of training (interpolation): " + ", ".join(f"{e:g} MeV" for e in args.leave_out))
    _done(t0)

    t0 = _step("2. data prep: training tensors")
    tensors = out / "train_tensors.h5"
    threshold = args.train_threshold
    if threshold is None:
        from fastsim.geometry import Geometry
        from fastsim.metrics.calochallenge import default_threshold

        threshold = default_threshold(Geometry.builtin(GEOMETRY))
    _run(["prep-train", str(train_h5), *map(str, extra), "-o", str(tensors), "--geometry", GEOMETRY,
          "--seed", str(args.seed), "--threshold", repr(threshold), "--overwrite"])
    _done(t0)

    jobs = args.jobs if args.jobs is not None else min(len(models), os.cpu_count() or 1)
    jobs = max(1, min(jobs, len(models)))
    minutes = args.minutes if args.minutes is not None else (10.0 if jobs > 1 else 5.0)
    common = dict(tensors=tensors, held_h5=held_h5, n_held=n_held, minutes=minutes, seed=args.seed,
                  fit_args=list(args.fit_arg), classifier_epochs=args.classifier_epochs,
                  bench_args=tuple(args.bench_arg), readout_threshold=threshold)
    if jobs == 1:
        reports = {m: run_model(m, out / m, step=3 + 3 * i, **common) for i, m in enumerate(models)}
    else:
        reports = run_models_parallel(models, out, jobs, common)
    summaries = {
        m: [f"  {m}: report {r / 'report.md'}", *summarize(r / "metrics.json", tuple(args.leave_out))]
        for m, r in reports.items()
    }

    print(f"\n=== summary (total {time.perf_counter() - t_start:.0f} s)")
    for lines in summaries.values():
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
