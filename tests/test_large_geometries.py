"""Datasets 2 and 3 (6480 and 40500 voxels): the committed configs train, generate and benchmark
end to end through the command line on a synthetic file of a few hundred showers (slow)."""

from __future__ import annotations

import glob
import os

import h5py
import numpy as np
import pytest
from conftest import toy_showers

from fastsim.cli import main
from fastsim.data.hdf5 import write_calochallenge
from fastsim.geometry import Geometry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def synthetic_showers(geo: Geometry, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shower-like MeV deposits for any binning: a longitudinal gamma profile over the layers, an
    exponential radial fall-off, uniform in α, ~50 % of voxels empty, E_tot/E_inc ≈ 0.95 ± 3 %."""
    layer = np.repeat(np.arange(geo.n_layers), np.diff(geo.layer_offsets))
    r_mid = np.concatenate([np.tile(0.5 * (np.asarray(ly.r_edges[1:]) + ly.r_edges[:-1]), ly.n_alpha) for ly in geo.layers])
    depth = (layer + 0.5) / geo.n_layers
    profile = depth**1.5 * np.exp(-4 * depth) * np.exp(-r_mid / (0.3 * r_mid.max() + 1e-9))
    return toy_showers(geo, n, seed, (1024.0, 8192.0, 65536.0), profile=profile, empty=0.5, response=0.95,
                       spread=0.95 * 0.03)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(("dataset", "model"), [("2", "wgan_gp"), ("2", "vae"), ("3", "wgan_gp"), ("3", "vae")])
def test_committed_large_config_trains_generates_and_benchmarks(dataset, model, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    geo = Geometry.builtin(dataset)
    e, s = synthetic_showers(geo, 240, seed=int(dataset))
    src = str(tmp_path / "showers.h5")
    write_calochallenge(src, e, s, attrs={"energy_scale": "em"})
    tensors = str(tmp_path / "tensors.h5")
    assert main(["prep-train", src, "-o", tensors, "--geometry", dataset]) == 0
    cfg = os.path.join(REPO, "configs")
    assert main([
        "fit", "--config", f"{cfg}/model/{model}_ds{dataset}.yaml", "--config", f"{cfg}/data/ds{dataset}.yaml",
        "--config", f"{cfg}/trainer/cpu.yaml", "--data.train_file", tensors, "--data.num_workers", "0",
        "--trainer.max_steps", "24", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
    ]) == 0  # fmt: skip
    (ckpt,) = glob.glob(str(tmp_path / "logs" / "fastsim" / "*" / "checkpoints" / "last.ckpt"))
    gen = tmp_path / "gen.h5"
    assert main(["generate", "--checkpoint", ckpt, "--like", src, "-o", str(gen), "--seed", "0"]) == 0
    with h5py.File(gen) as f:
        assert f["showers"].shape == (240, geo.n_voxels)
        showers = f["showers"][:]
    assert np.all(np.isfinite(showers)) and np.all(showers >= 0)
    # a few steps from the mean-shower / energy-head start: energies in the right range already
    ratio = showers.sum(1) / e
    assert 0.3 < np.median(ratio) < 3.0, np.median(ratio)
    out = tmp_path / "report"
    assert main(["benchmark", "--generated", str(gen), "--reference", src, "--out", str(out),
                 "--protocol", "quick", "--classifier-inputs", "high", "--no-plots"]) in (0, 1)  # fmt: skip
    import json

    m = json.loads((out / "metrics.json").read_text())
    assert m["geometry"]["n_voxels"] == geo.n_voxels
    assert m["classifier"], m.keys()
