"""Peak memory and training steps/s of the committed dataset-2 and dataset-3 configs (CPU).

    OMP_NUM_THREADS=1 python benchmarks/bench_large_geometries.py [--steps 30] [--showers 512]

For each model (WGAN-GP, VAE) and CaloChallenge dataset (2: 6480 voxels, 3: 40500 voxels) a fresh
process prepares training tensors from synthetic showers of that binning, trains the committed
config (``configs/model/<model>_ds<N>.yaml`` with ``configs/data/ds<N>.yaml``: batch 128 / 64)
under a real Lightning Trainer, and reports the batches/s after the first few (warm-up) and the
process's peak resident memory. A WGAN-GP batch is n_critic + 1 = 6 optimiser steps. Printed as
one table; parameters counted from the built model.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def synthetic_file(path: str, dataset: str, n: int, seed: int = 0) -> None:
    """Shower-like MeV deposits in the dataset's binning (profile × gamma fluctuations, ~50 % empty)."""
    import numpy as np

    from fastsim.data.hdf5 import write_calochallenge
    from fastsim.geometry import Geometry

    geo = Geometry.builtin(dataset)
    rng = np.random.default_rng(seed)
    e = rng.choice([1024.0, 8192.0, 65536.0], n)
    layer = np.repeat(np.arange(geo.n_layers), np.diff(geo.layer_offsets))
    depth = (layer + 0.5) / geo.n_layers
    profile = depth**1.5 * np.exp(-4 * depth) * np.exp(-np.arange(geo.n_voxels) % 9 / 3.0)
    x = profile * rng.gamma(2.0, 0.5, (n, geo.n_voxels)) * (rng.random((n, geo.n_voxels)) > 0.5)
    x /= x.sum(axis=1, keepdims=True)
    write_calochallenge(path, e, (x * (0.95 * e)[:, None]).astype(np.float32), attrs={"energy_scale": "em"})


def run_case(model: str, dataset: str, steps: int, showers: int) -> dict:
    """One measurement (in this process): prep-train, then fit for ``steps`` batches."""
    import lightning as L
    import yaml

    from fastsim.data.datamodule import ShowerDataModule
    from fastsim.data.tensors import prepare_training_tensors
    from fastsim.models.vae import ShowerVAE
    from fastsim.models.wgan_gp import WGANGP

    with tempfile.TemporaryDirectory() as d:
        src, tensors = os.path.join(d, "s.h5"), os.path.join(d, "t.h5")
        synthetic_file(src, dataset, showers)
        prepare_training_tensors([src], tensors, dataset, progress=False)
        cfg = yaml.safe_load(open(os.path.join(REPO, "configs", "model", f"{model}_ds{dataset}.yaml")))["model"]
        data = yaml.safe_load(open(os.path.join(REPO, "configs", "data", f"ds{dataset}.yaml")))["data"]
        dm = ShowerDataModule(tensors, batch_size=data["batch_size"], num_workers=0, val_fraction=0.1)
        cls = {"WGANGP": WGANGP, "ShowerVAE": ShowerVAE}[cfg["class_path"].rsplit(".", 1)[1]]
        net = cls(geometry=dm.geometry_config, transform=dm.transform_config, condition=dm.condition_config,
                  **cfg["init_args"])
        n_params = sum(p.numel() for p in net.parameters())
        times: list[float] = []

        class Clock(L.Callback):
            def on_train_batch_end(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
                times.append(time.perf_counter())

        per_batch = net.hparams.get("n_critic", 0) + 1 if cls is WGANGP else 1
        trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps * per_batch, limit_val_batches=0,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, callbacks=[Clock()])
        trainer.fit(net, dm)
    warm = min(5, len(times) - 2)
    rate = (len(times) - 1 - warm) / (times[-1] - times[warm])
    return {"model": model, "dataset": dataset, "batch": data["batch_size"], "params_M": n_params / 1e6,
            "batches_per_s": rate, "peak_rss_GB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "batches": len(times)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30, help="training batches per case")
    p.add_argument("--showers", type=int, default=512, help="synthetic showers per case")
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)  # model:dataset, run in a child
    args = p.parse_args()
    if args.case:
        model, dataset = args.case.split(":")
        print(json.dumps(run_case(model, dataset, args.steps, args.showers)))
        return 0
    rows = []
    for dataset in ("2", "3"):
        for model in ("wgan_gp", "vae"):
            out = subprocess.run([sys.executable, __file__, "--case", f"{model}:{dataset}", "--steps", str(args.steps),
                                  "--showers", str(args.showers)], capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"  {rows[-1]}", file=sys.stderr)
    print(f"threads {os.environ.get('OMP_NUM_THREADS', 'default')}, load average {os.getloadavg()[0]:.1f}")
    print("| model | dataset (voxels) | batch | parameters | batches/s | showers/s | peak memory |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        n_vox = {"2": 6480, "3": 40500}[r["dataset"]]
        print(f"| {r['model']} | {r['dataset']} ({n_vox}) | {r['batch']} | {r['params_M']:.1f} M | "
              f"{r['batches_per_s']:.2f} | {r['batches_per_s'] * r['batch']:.0f} | {r['peak_rss_GB']:.2f} GB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
