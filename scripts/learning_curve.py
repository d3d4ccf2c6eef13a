"""Learning curve of a training run: classifier AUC and E_tot/E_inc agreement against training time.

    fastsim demo --models wgan_gp --minutes 10 --out outputs/curve \
        --fit-arg=--checkpoint.save_top_k=-1 --fit-arg=--checkpoint.every_n_train_steps=3000
    python scripts/learning_curve.py --run outputs/curve/wgan_gp --heldout outputs/curve/g4_heldout.h5

Every periodic checkpoint of the run (``checkpoints/periodic-*.ckpt``) generates as many showers
as the held-out file (``fastsim generate --like``) and is benchmarked against it
(``fastsim benchmark``, by default ``--protocol quick`` — the official classifier costs minutes
per point), or with ``--protocol hlf`` scored in a second by the high-level-feature separation
that selects checkpoints (:func:`fastsim.metrics.selection.high_level_separation`, after the
geometry's readout threshold: 1 MeV for dataset 1); the training time of each checkpoint is the Lightning Timer's elapsed training time
stored in it (the demo sets ``--trainer.max_time``), else its file time since the run's first
checkpoint. Prints a Markdown table and writes ``learning_curve.json`` and ``learning_curve.png``
into the run directory.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

from fastsim.report.result import BenchmarkResult, load_result


def training_seconds(path: str) -> float | None:
    """Elapsed training time stored in a checkpoint by Lightning's Timer callback, or None."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    for key, state in (ckpt.get("callbacks") or {}).items():
        if "Timer" in str(key) and isinstance(state, dict):
            elapsed = state.get("time_elapsed", {})
            if "train" in elapsed:
                return float(elapsed["train"])
    return None


def point(metrics: BenchmarkResult) -> dict[str, Any]:
    """The numbers of one benchmark that the curve shows."""
    out: dict[str, Any] = {}
    for kind, res in metrics.classifier.results().items():
        if res.auc is not None:
            out[f"auc_{kind}"] = float(res.auc)
    s = metrics.summary
    out["mean_separation_power"] = s.mean_separation_power_e_ratio
    out["checks"] = f"{s.n_passed}/{s.n_checks}"
    return out


def hlf_score(generated: str, reference: str, geometry: str) -> float:
    """Mean high-level-feature separation of two CaloChallenge files after the geometry's readout threshold."""
    from fastsim.data.hdf5 import open_calochallenge
    from fastsim.geometry import Geometry
    from fastsim.metrics.calochallenge import default_threshold
    from fastsim.metrics.selection import high_level_separation

    geometry = Geometry.resolve(geometry)
    with open_calochallenge(generated) as f:
        eg, sg = f.read()
    with open_calochallenge(reference) as f:
        er, sr = f.read()
    return high_level_separation(sg, eg, sr, er, geometry, default_threshold(geometry))[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="model directory of the run (holds checkpoints/)")
    p.add_argument("--heldout", required=True, help="held-out Geant4 showers (CaloChallenge HDF5)")
    p.add_argument("--protocol", default="quick", choices=["quick", "calochallenge", "hlf"],
                   help="benchmark protocol of each point, or hlf: the high-level-feature score only (fast)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--geometry", default="1-photons", help="binning of the files (--protocol hlf; default 1-photons)")
    p.add_argument("--set-hparam", action="append", default=[], metavar="KEY=VALUE",
                   help="generate from a copy of each checkpoint with this hyper-parameter changed, e.g. "
                   "decode=sample_zeros (a generation-time choice of the VAE); repeatable")
    args = p.parse_args(argv)
    overrides = dict(kv.split("=", 1) for kv in args.set_hparam)
    ckpts = sorted(glob.glob(os.path.join(args.run, "**", "periodic-*.ckpt"), recursive=True))
    if not ckpts:
        print(f"learning_curve: error: {args.run}: no periodic-*.ckpt checkpoints (train with "
              "--checkpoint.save_top_k=-1 and --checkpoint.every_n_train_steps)", file=sys.stderr)
        return 2
    t0 = min(os.path.getmtime(c) for c in ckpts)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for c in ckpts:
            gen, rep = os.path.join(d, "gen.h5"), os.path.join(d, "report")
            source = c
            if overrides:
                import torch

                ckpt = torch.load(c, map_location="cpu", weights_only=False)
                ckpt["hyper_parameters"].update(overrides)
                source = os.path.join(d, "patched.ckpt")
                torch.save(ckpt, source)
            fastsim = [sys.executable, "-m", "fastsim.cli"]
            subprocess.run([*fastsim, "generate", "--checkpoint", source, "--like", args.heldout, "-o", gen,
                            "--seed", str(args.seed), "--overwrite"], check=True, capture_output=True)
            if args.protocol == "hlf":
                numbers = {"hlf_separation": hlf_score(gen, args.heldout, args.geometry)}
            else:
                subprocess.run([*fastsim, "benchmark", "--generated", gen, "--reference", args.heldout, "--out",
                                rep, "--protocol", args.protocol, "--no-plots", "--overwrite", "--seed",
                                str(args.seed)], check=False, capture_output=True)  # exit 1: a tolerance failed
                numbers = point(load_result(os.path.join(rep, "metrics.json")))
            secs = training_seconds(c)
            rows.append({"checkpoint": os.path.basename(c),
                         "train_seconds": secs if secs is not None else os.path.getmtime(c) - t0,
                         "time_source": "timer" if secs is not None else "mtime", **numbers})
            print(f"  {rows[-1]}", file=sys.stderr)
    rows.sort(key=lambda r: r["train_seconds"])
    keys = sorted({k for r in rows for k in r if k.startswith("auc_")})
    if args.protocol == "hlf":
        print("| training time (min) | checkpoint | hlf separation |\n|---|---|---|")
        for r in rows:
            print(f"| {r['train_seconds'] / 60:.1f} | {r['checkpoint']} | {r['hlf_separation']:.4f} |")
        keys = ["hlf_separation"]
    else:
        print(f"| training time (min) | checkpoint | {' | '.join(k.replace('auc_', 'AUC ') for k in keys)} "
              "| mean sep. power E_tot/E_inc | checks |")
        print("|---|---|" + "---|" * (len(keys) + 2))
    for r in rows if args.protocol != "hlf" else []:
        aucs = " | ".join(f"{r[k]:.3f}" if k in r else "–" for k in keys)
        sep = r.get("mean_separation_power")
        print(f"| {r['train_seconds'] / 60:.1f} | {r['checkpoint']} | {aucs} | "
              f"{sep:.3f} | {r['checks']} |" if sep is not None else f"| {r['train_seconds'] / 60:.1f} | "
              f"{r['checkpoint']} | {aucs} | – | {r['checks']} |")
    with open(os.path.join(args.run, "learning_curve.json"), "w") as f:
        json.dump({"protocol": args.protocol, "heldout": args.heldout, "hparam_overrides": overrides,
                   "points": rows}, f, indent=1)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for k in keys:
        ax.plot([r["train_seconds"] / 60 for r in rows], [r.get(k) for r in rows], "o-", label=k.replace("auc_", "AUC "))
    ax.set_xlabel("training time (min)")
    if args.protocol == "hlf":
        ax.set_ylabel("high-level-feature separation")
        ax.set_yscale("log")
    else:
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_ylabel(f"classifier AUC ({args.protocol})")
        ax.set_ylim(0.45, 1.02)
    ax.legend()
    ax.set_title(os.path.basename(os.path.normpath(args.run)))
    fig.tight_layout()
    fig.savefig(os.path.join(args.run, "learning_curve.png"), dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
