"""``fastsim generate``: energies (pure), streamed atomic HDF5 output, reproducibility, several devices, bad input.

The generator checkpoints are real: a tiny WGAN-GP trained for a couple of batches with a real
``lightning.Trainer`` on CPU and saved with ``trainer.save_checkpoint`` (module-scoped fixture).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers_signals import press_ctrl_c, restore_sigint

from fastsim.cli import main as fastsim_main
from fastsim.errors import FastsimError
from fastsim.generation.energies import (
    LOG_UNIFORM_BLOCK,
    MAX_ENERGY_MEV,
    ArrayEnergies,
    DiscreteEnergies,
    LogUniformEnergies,
    TimePerEnergy,
    check_energies,
    energy_key,
    parse_energy_list,
    parse_points,
)
from fastsim.geometry import Geometry


# ---------------------------------------------------------------------------------- energies (pure)
class TestEnergies:
    def test_parse_list_and_points(self) -> None:
        assert parse_energy_list("1024, 2048,4096") == [1024.0, 2048.0, 4096.0]
        assert parse_points("1024:1000,2048:5e2") == [(1024.0, 1000), (2048.0, 500)]

    @pytest.mark.parametrize(
        "text", ["", "1024,abc", "0", "-5", "nan", "inf", f"{MAX_ENERGY_MEV * 10:g}", "1024,-1"]
    )
    def test_bad_energy_lists(self, text: str) -> None:
        with pytest.raises(FastsimError, match="--energies"):
            parse_energy_list(text)

    @pytest.mark.parametrize("text", ["1024", "1024:0", "1024:-3", "1024:2.5", "x:3", "0:10", "1024:10:3"])
    def test_bad_points(self, text: str) -> None:
        with pytest.raises(FastsimError, match="--points"):
            parse_points(text)

    def test_check_energies(self) -> None:
        np.testing.assert_array_equal(check_energies([1.0, 2.0]), [1.0, 2.0])
        for bad, message in (
            ([1.0, np.nan], "1 value\\(s\\) are NaN or infinite"),
            ([0.0], "must be > 0 MeV, got minimum 0"),
            ([-1.0], "must be > 0 MeV, got minimum -1"),
            ([MAX_ENERGY_MEV * 2], "above the 1e\\+08 MeV limit"),
        ):
            with pytest.raises(FastsimError, match=message):
                check_energies(bad)

    def test_discrete_each_and_total(self) -> None:
        plan = DiscreteEnergies.each([100.0, 200.0, 300.0], 4)
        assert len(plan) == 12
        np.testing.assert_array_equal(plan.slice(0, 12), np.repeat([100.0, 200.0, 300.0], 4))
        np.testing.assert_array_equal(plan.slice(3, 6), [100.0, 200.0, 200.0])
        total = DiscreteEnergies.total([100.0, 200.0, 300.0], 8)
        assert total.counts == (3, 3, 2)
        with pytest.raises(FastsimError, match=r"--n 2 is smaller than the number of energies \(3\)"):
            DiscreteEnergies.total([1.0, 2.0, 3.0], 2)

    def test_discrete_batches_never_mix_energies(self) -> None:
        plan = DiscreteEnergies.from_points([(100.0, 5), (200.0, 3), (300.0, 7)])
        batches = list(plan.batches(4))
        assert batches == [(0, 4), (4, 5), (5, 8), (8, 12), (12, 15)]
        assert plan.n_batches(4) == len(batches)
        for start, stop in batches:
            assert len(np.unique(plan.slice(start, stop))) == 1
        # the batches tile the run exactly, in order
        np.testing.assert_array_equal(
            np.concatenate([plan.slice(a, b) for a, b in batches]), plan.slice(0, 15)
        )

    def test_log_uniform_range_seed_and_index_determinism(self) -> None:
        n = LOG_UNIFORM_BLOCK + 1000  # crosses a block boundary
        plan = LogUniformEnergies(1000.0, 1.0e6, n, seed=3)
        full = plan.slice(0, n)
        assert full.min() >= 1000.0 and full.max() <= 1.0e6
        # the value of an index does not depend on how the run is cut into slices
        parts = np.concatenate([plan.slice(a, min(a + 777, n)) for a in range(0, n, 777)])
        np.testing.assert_array_equal(parts, full)
        # log-uniform: log E is uniform, so its mean is the midpoint (σ of the mean ≈ 0.0011 here)
        u = np.log(full / 1000.0) / np.log(1000.0)
        assert abs(u.mean() - 0.5) < 0.01 and abs(u.std() - 1 / np.sqrt(12)) < 0.01
        assert not np.array_equal(LogUniformEnergies(1000.0, 1.0e6, 100, seed=4).slice(0, 100), full[:100])
        with pytest.raises(FastsimError, match=r"EMAX \(10\) must be above EMIN \(1000\)"):
            LogUniformEnergies(1000.0, 10.0, 5, seed=0)

    def test_array_energies_keep_order_and_detect_discrete(self) -> None:
        e = np.array([[4096.0], [256.0], [4096.0], [1024.0]])
        plan = ArrayEnergies(e, source="ref.h5")
        np.testing.assert_array_equal(plan.slice(0, 4), e[:, 0])
        assert plan.discrete_values == [256.0, 1024.0, 4096.0]
        continuous = ArrayEnergies(np.linspace(1.0, 2.0, 500))
        assert continuous.discrete_values is None
        with pytest.raises(FastsimError, match="ref.h5"):
            ArrayEnergies(np.array([1.0, -1.0]), source="ref.h5")

    def test_time_per_energy(self) -> None:
        timer = TimePerEnergy([256.0, 1024.0])
        timer.add(np.array([256.0, 256.0]), 2.0)  # 1 s per shower at 256
        timer.add(np.array([1024.0, 256.0, 1024.0, 1024.0]), 4.0)  # 1 s per shower, shared
        other = TimePerEnergy.from_state(json.loads(json.dumps(timer.to_state())))
        timer.merge(other)
        assert timer.per_shower() == {"256": 1.0, "1024": 1.0}
        assert timer.counts.tolist() == [6, 6]
        assert energy_key(1536.5) == "1536.5" and energy_key(4194304.0) == "4194304"
        assert TimePerEnergy(None).per_shower() == {}


# ---------------------------------------------------------------------------------- real checkpoints
#: 3 layers x 2 alpha x 3 r = 18 voxels: tiny, so a Trainer step takes milliseconds
TINY_GEOMETRY = Geometry.regular(3, 2, [0.0, 5.0, 20.0, 60.0], name="tiny")
#: the energy range the tiny models are trained on (MeV)
TRAIN_ENERGIES = (256.0, 1024.0, 4096.0, 16384.0)


#: (seed, epochs of 4 batches) per model: a second of training after which the tiny model deposits
#: about the right fraction of E_inc at this seed, so its output also passes validation's unit
#: check. A barely trained generator can deposit several times E_inc (other seeds do), which
#: validation rightly reports: these runs are for testing generation, not training.
TRAINING = {"wgan": (1, 5), "wgan_hier": (1, 5), "vae": (3, 15), "vae_energy": (3, 15)}


def train_tiny_checkpoint(model_name: str, path: Path) -> Path:
    """Train a tiny WGAN-GP or VAE for a few dozen batches with a real Lightning Trainer and save it.

    The toy showers deposit a random ~90 % of E_inc with a depth profile; the energy condition and
    the default voxel transform (showers / E_inc) are fitted on them, as the data module would.
    """
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from fastsim.data.transforms import EnergyCondition, build_transform

    seed, epochs = TRAINING[model_name]
    rng = np.random.default_rng(seed)
    n, v = 64, TINY_GEOMETRY.n_voxels
    e_inc = rng.choice(TRAIN_ENERGIES, size=n)
    # a fixed radial/depth profile with 20 % log-normal fluctuations, summing to 85-95 % of E_inc
    profile = np.exp(-0.5 * (np.arange(v) % 3)) * np.exp(-0.3 * (np.arange(v) // 6))
    frac = profile * rng.lognormal(0.0, 0.2, size=(n, v))
    frac *= rng.uniform(0.85, 0.95, size=(n, 1)) / frac.sum(axis=1, keepdims=True)
    showers = (frac * e_inc[:, None]).astype(np.float32)
    condition = EnergyCondition().fit(e_inc)
    transform = build_transform({"class": "DivideByIncident"})
    e_t = torch.as_tensor(e_inc)
    x = transform(torch.as_tensor(showers), e_t).to(torch.float32)
    cond = condition(e_t).to(torch.float32)
    data = [{"x": x[i], "cond": cond[i]} for i in range(n)]
    common = {"geometry": TINY_GEOMETRY.to_dict(), "condition": condition.config(), "seed": seed}
    torch.manual_seed(seed)  # the initial weights
    if model_name.startswith("wgan"):
        from fastsim.models.wgan_gp import WGANGP

        # "wgan_hier": hierarchical outputs with a readout threshold (E_tot/E_inc fitted per energy),
        # per-voxel and E_tot draws (noise input latent_dim + V + 1) and a log-voxel critic
        hier = (
            dict(output="hierarchical", readout_threshold=1.0, voxel_noise=0.5, energy_noise=True, critic_voxels="log")
            if model_name == "wgan_hier"
            else {}
        )
        model = WGANGP(
            **common,
            **hier,
            latent_dim=6,
            generator_hidden=(16, 16),
            critic_hidden=(16,),
            n_critic=2,
            lr_generator=1e-3,
            lr_critic=1e-3,
        )
    else:
        from fastsim.models.vae import ShowerVAE

        # "vae_energy": the energy head and sampled voxels (noise = z, ε_u, 2·V observation noise)
        energy = model_name == "vae_energy"
        model = ShowerVAE(
            **common,
            latent_dim=4,
            encoder_hidden=(16,),
            decoder_hidden=(16,),
            n_importance_samples=2,
            lr=3e-2,
            energy_head=energy,
            energy_hidden=(8,),
            decode="sample" if energy else "mean",
        )
        if energy:  # what setup() does from a ShowerDataModule's file
            model.features.fit_stream([(x, cond[:, 0].numpy())])
    if model_name == "wgan_hier":
        model.generator.total.fit_stream([(x, cond[:, 0].numpy())])
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=epochs, limit_train_batches=4, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=str(path.parent),
    )  # fmt: skip
    trainer.fit(model, DataLoader(data, batch_size=16, shuffle=False))
    assert trainer.global_step > 0  # the optimisers really stepped
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def wgan_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_checkpoint("wgan", tmp_path_factory.mktemp("ckpt") / "wgan.ckpt")


@pytest.fixture(scope="module")
def vae_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_checkpoint("vae", tmp_path_factory.mktemp("ckpt") / "vae.ckpt")


def run_cli(*args: str | os.PathLike) -> int:
    """``fastsim generate ...`` in-process, as the console script runs it."""
    return fastsim_main(["generate", *map(str, args)])


def read(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    with h5py.File(path, "r") as f:
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        return f["incident_energies"][:], f["showers"][:], attrs


# ---------------------------------------------------------------------------------- generate
class TestGenerate:
    @pytest.mark.parametrize("model_name", ["wgan", "vae"])
    def test_discrete_energies_file_is_valid_with_provenance(
        self, model_name: str, request: pytest.FixtureRequest, tmp_path: Path
    ) -> None:
        from fastsim.data.hdf5 import validate_calochallenge
        from fastsim.models.io import load_generator
        from fastsim.provenance import file_sha256

        ckpt = request.getfixturevalue(f"{model_name}_ckpt")
        out = tmp_path / "gen.h5"
        rc = run_cli("--checkpoint", ckpt, "-o", out, "--energies", "512,2048,8192", "--n", 50,
                     "--batch-size", 16, "--seed", 5, "--device", "cpu")  # fmt: skip
        assert rc == 0
        model = load_generator(ckpt)
        assert validate_calochallenge(out, model.geometry) == []
        e_inc, showers, attrs = read(out)
        assert e_inc.shape == (150, 1) and showers.shape == (150, TINY_GEOMETRY.n_voxels)
        assert showers.dtype == np.float32 and (showers >= 0).all()
        np.testing.assert_array_equal(e_inc[:, 0], np.repeat([512.0, 2048.0, 8192.0], 50))
        assert showers.sum(axis=1).max() > 0  # not an empty file of zeros
        with h5py.File(out, "r") as f:
            assert f["showers"].compression == "gzip"
            # appended batch by batch into a growable chunked dataset
            assert f["showers"].chunks is not None and f["showers"].maxshape == (None, TINY_GEOMETRY.n_voxels)
        assert attrs["producer"] == "fastsim-generate"
        assert attrs["checkpoint_sha256"] == file_sha256(ckpt)
        assert attrs["checkpoint"] == str(ckpt.resolve())
        assert attrs["model_class"].endswith("WGANGP" if model_name == "wgan" else "ShowerVAE")
        assert json.loads(attrs["hparams"])["latent_dim"] == model.latent_dim
        assert (attrs["seed"], attrs["batch_size"], attrs["device"]) == (5, 16, "cpu")
        assert attrs["fastsim_version"] and attrs["time_per_shower_s"] > 0
        by_energy = json.loads(attrs["time_per_shower_by_energy"])
        assert set(by_energy) == {"512", "2048", "8192"} and all(t > 0 for t in by_energy.values())
        assert Geometry.from_json(attrs["geometry"]) == model.geometry
        assert not [p for p in os.listdir(tmp_path) if p != "gen.h5"]  # no temporary left

    def test_reproducible_and_seed_dependent(self, wgan_ckpt: Path, tmp_path: Path) -> None:
        from fastsim.generation.generate import generate_showers
        from fastsim.models.io import load_generator

        model = load_generator(wgan_ckpt)
        plan = LogUniformEnergies(300.0, 10000.0, 200, seed=1)
        runs = {}
        for name, seed in (("a", 7), ("b", 7), ("c", 8)):
            generate_showers(model, plan, tmp_path / f"{name}.h5", seed=seed, batch_size=32, device="cpu")
            runs[name] = read(tmp_path / f"{name}.h5")
        np.testing.assert_array_equal(runs["a"][1], runs["b"][1])
        np.testing.assert_array_equal(runs["a"][0], runs["b"][0])
        assert not np.array_equal(runs["a"][1], runs["c"][1])
        np.testing.assert_array_equal(runs["a"][0], runs["c"][0])  # energies do not depend on the noise seed
        # the CLI gives the same file as the library call
        assert run_cli("-c", wgan_ckpt, "-o", tmp_path / "cli.h5", "--log-uniform", 300, 10000, "--n", 200,
                       "--seed", 1, "--batch-size", 32, "--device", "cpu") == 0  # fmt: skip
        cli = read(tmp_path / "cli.h5")
        np.testing.assert_array_equal(cli[0], runs["a"][0])
        assert "time_per_shower_by_energy" not in cli[2]  # continuous energies: no per-energy timing

    def test_like_reference_keeps_energies_in_order(self, wgan_ckpt: Path, tmp_path: Path) -> None:
        from fastsim.data.hdf5 import validate_calochallenge, write_calochallenge

        rng = np.random.default_rng(3)
        ref_e = rng.permutation(np.repeat([256.0, 1024.0, 4096.0], 20))  # shuffled, as in dataset 1
        ref_s = rng.random((60, TINY_GEOMETRY.n_voxels)).astype(np.float32)
        write_calochallenge(tmp_path / "ref.h5", ref_e, ref_s)
        out = tmp_path / "gen.h5"
        assert run_cli("-c", wgan_ckpt, "-o", out, "--like", tmp_path / "ref.h5", "--batch-size", 25) == 0
        e_inc, showers, attrs = read(out)
        np.testing.assert_array_equal(e_inc[:, 0], ref_e)
        assert validate_calochallenge(out, TINY_GEOMETRY) == []
        assert set(json.loads(attrs["time_per_shower_by_energy"])) == {"256", "1024", "4096"}
        assert json.loads(attrs["energies"])["kind"] == "like"

    def test_points_and_total(self, wgan_ckpt: Path, tmp_path: Path) -> None:
        assert run_cli("-c", wgan_ckpt, "-o", tmp_path / "p.h5", "--points", "1000:7,3000:3") == 0
        np.testing.assert_array_equal(read(tmp_path / "p.h5")[0][:, 0], [1000.0] * 7 + [3000.0] * 3)
        assert (
            run_cli("-c", wgan_ckpt, "-o", tmp_path / "t.h5", "--energies", "1000,3000", "--n-total", 5) == 0
        )
        np.testing.assert_array_equal(read(tmp_path / "t.h5")[0][:, 0], [1000.0] * 3 + [3000.0] * 2)

    def test_bad_input_one_line_exit_2_no_output(
        self, wgan_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        corrupt = tmp_path / "corrupt.ckpt"
        corrupt.write_bytes(wgan_ckpt.read_bytes()[:2000])  # a truncated checkpoint
        not_calo = tmp_path / "notcalo.h5"
        with h5py.File(not_calo, "w") as f:
            f["something"] = np.zeros(3)
        out = tmp_path / "out.h5"
        good = ["-c", wgan_ckpt, "-o", out]
        cases = {
            "missing checkpoint": (
                ["-c", tmp_path / "nope.ckpt", "-o", out, "--energies", "1000", "--n", 5],
                "nope.ckpt",
            ),
            "corrupt checkpoint": (
                ["-c", corrupt, "-o", out, "--energies", "1000", "--n", 5],
                "corrupt.ckpt",
            ),
            "missing reference": ([*good, "--like", tmp_path / "nope.h5"], "nope.h5"),
            "invalid reference": ([*good, "--like", not_calo], "notcalo.h5"),
            "zero energy": ([*good, "--energies", "1000,0", "--n", 5], "> 0"),
            "negative point": ([*good, "--points=-5:10"], "--points: energies must be > 0 MeV, got minimum -5"),
            "absurd energy": ([*good, "--energies", "1e12", "--n", 5], "MeV"),
            "n zero": ([*good, "--energies", "1000", "--n", 0], "--n"),
            "n negative": ([*good, "--log-uniform", 100, 1000, "--n", -3], "--n"),
            "no count": ([*good, "--energies", "1000"], "--n"),
            "batch size zero": ([*good, "--energies", "1000", "--n", 5, "--batch-size", 0], "--batch-size"),
            "no energies": (good, "required"),
        }
        for name, (args, expected) in cases.items():
            capsys.readouterr()
            assert run_cli(*args) == 2, name
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and expected in err, (name, err)
            assert not out.exists(), name
        assert sorted(os.listdir(tmp_path)) == ["corrupt.ckpt", "notcalo.h5"]
        # an existing output is kept unless --overwrite
        out.write_bytes(b"keep me")
        capsys.readouterr()
        assert run_cli(*good, "--energies", "1000", "--n", 5) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"fastsim generate: error: {out}: already exists (pass --overwrite to replace it)"
        assert out.read_bytes() == b"keep me"
        assert run_cli(*good, "--energies", "1000", "--n", 5, "--overwrite") == 0
        assert read(out)[1].shape == (5, TINY_GEOMETRY.n_voxels)

    def test_reference_with_other_geometry_is_refused(self, wgan_ckpt: Path, tmp_path: Path) -> None:
        from fastsim.data.hdf5 import write_calochallenge

        write_calochallenge(tmp_path / "ref.h5", np.full(4, 1000.0), np.zeros((4, 368), np.float32))
        with pytest.raises(FastsimError, match="368 voxels"):
            from fastsim.generation.generate import energies_like

            energies_like(tmp_path / "ref.h5", n_voxels=TINY_GEOMETRY.n_voxels)

    def test_ctrl_c_leaves_no_file(self, wgan_ckpt: Path, tmp_path: Path) -> None:
        """Ctrl-C (SIGINT) half-way: exit 130, nothing under the final name and no temporary."""
        proc = start_big_run(wgan_ckpt, tmp_path)
        err = press_ctrl_c(proc)
        assert proc.returncode == 130 and "interrupted" in err, err
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.slow
    def test_sigkill_leaves_nothing_under_the_final_name(self, wgan_ckpt: Path, tmp_path: Path) -> None:
        proc = start_big_run(wgan_ckpt, tmp_path)
        proc.kill()
        proc.communicate(timeout=60)
        # SIGKILL cannot clean up: only the hidden temporary stays, never a truncated big.h5
        assert [p.name.startswith(".big.h5.partial-") for p in tmp_path.iterdir()] == [True]


def start_big_run(ckpt: Path, tmp_path: Path) -> subprocess.Popen:
    """Start ``fastsim generate`` of 5e7 showers into tmp_path/big.h5; return once rows are being written."""
    cmd = [sys.executable, "-m", "fastsim.cli", "generate", "-c", str(ckpt), "-o", str(tmp_path / "big.h5"),
           "--log-uniform", "300", "10000", "--n", "50000000", "--batch-size", "1000", "--device", "cpu"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=restore_sigint)
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".big.h5.") and p.stat().st_size > 100_000 for p in tmp_path.iterdir()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"generation did not start: {proc.communicate()}")
        time.sleep(0.2)
    assert not (tmp_path / "big.h5").exists()
    return proc


# ---------------------------------------------------------------------------------- several devices
@pytest.mark.parametrize(
    "strategy",
    ["auto", pytest.param("ddp_spawn", marks=pytest.mark.slow), pytest.param("ddp", marks=pytest.mark.slow)],
)
def test_two_cpu_processes_merge_in_order_and_match_one_device(
    wgan_ckpt: Path, tmp_path: Path, strategy: str
) -> None:
    """``--accelerator cpu --devices 2`` (Lightning predict loop; auto = ddp_fork; ddp re-runs the command
    per rank): the merged file has every energy in order, validates, and equals the one-device file
    with the same seed and batch size."""
    from fastsim.data.hdf5 import validate_calochallenge

    args = ["-c", str(wgan_ckpt), "--points", "500:70,2000:45,8000:30", "--seed", "11", "--batch-size", "16"]
    assert run_cli(*args, "-o", tmp_path / "one.h5", "--device", "cpu") == 0
    cmd = [sys.executable, "-m", "fastsim.cli", "generate", *args, "-o", str(tmp_path / "two.h5"),
           "--accelerator", "cpu", "--devices", "2", "--strategy", strategy]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    e1, s1, a1 = read(tmp_path / "one.h5")
    e2, s2, a2 = read(tmp_path / "two.h5")
    np.testing.assert_array_equal(e2[:, 0], [500.0] * 70 + [2000.0] * 45 + [8000.0] * 30)
    np.testing.assert_array_equal(e2, e1)
    np.testing.assert_array_equal(s2, s1)
    assert validate_calochallenge(tmp_path / "two.h5", TINY_GEOMETRY) == []
    assert (
        a2["device"] == "cpu x2"
        and a2["strategy"] == ("ddp_fork" if strategy == "auto" else strategy)
        and a2["time_per_shower_s"] > 0
    )
    assert set(json.loads(a2["time_per_shower_by_energy"])) == {"500", "2000", "8000"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.h5", "two.h5"]  # shards removed


class TestMergeShards:
    @staticmethod
    def write_shards(
        tmp_path: Path, sizes: list[int], rows: int = 8
    ) -> tuple[list[Path], np.ndarray, np.ndarray]:
        from fastsim.data.hdf5 import ShowerWriter

        rng = np.random.default_rng(sum(sizes))
        paths, es, ss = [], [], []
        for i, n in enumerate(sizes):
            e = rng.uniform(100.0, 1000.0, n)
            s = (rng.random((n, TINY_GEOMETRY.n_voxels)) * e[:, None] / 40).astype(np.float32)
            with ShowerWriter(tmp_path / f"shard{i}.h5", TINY_GEOMETRY.n_voxels, chunk_rows=rows) as w:
                w.append(e[: n // 2], s[: n // 2])  # appended in pieces, as the ranks do
                w.append(e[n // 2 :], s[n // 2 :])
            paths.append(tmp_path / f"shard{i}.h5")
            es.append(e)
            ss.append(s)
        return paths, np.concatenate(es), np.concatenate(ss)

    @pytest.mark.parametrize(
        ("sizes", "raw_chunks", "recompressed"),
        [([16, 16, 5], 5, 0), ([16, 5, 16], 3, 16), ([3, 16], 1, 16), ([0, 8, 9], 3, 0)],
    )
    def test_merge_equals_concatenation(
        self, tmp_path: Path, sizes: list[int], raw_chunks: int, recompressed: int
    ) -> None:
        from fastsim.data.hdf5 import validate_calochallenge
        from fastsim.data.shards import merge_shards

        shards, e, s = self.write_shards(tmp_path, sizes)
        stats = merge_shards(
            shards, tmp_path / "out.h5", {"producer": "test"}, final_attrs=lambda: {"x": 1.5}
        )
        assert (stats.n_showers, stats.raw_chunks, stats.recompressed_rows) == (
            sum(sizes),
            raw_chunks,
            recompressed,
        )
        e_out, s_out, attrs = read(tmp_path / "out.h5")
        np.testing.assert_array_equal(e_out[:, 0], e)
        np.testing.assert_array_equal(s_out, s)
        assert (attrs["producer"], attrs["x"]) == ("test", 1.5)
        assert validate_calochallenge(tmp_path / "out.h5", TINY_GEOMETRY) == []
        with h5py.File(tmp_path / "out.h5") as f:
            assert f["showers"].compression == "gzip" and f["showers"].chunks == (8, TINY_GEOMETRY.n_voxels)

    def test_bad_shard_leaves_no_output(self, tmp_path: Path) -> None:
        from fastsim.data.shards import merge_shards

        shards, _, _ = self.write_shards(tmp_path, [8, 8])
        shards[1].unlink()
        with pytest.raises(FastsimError, match="shard1.h5"):
            merge_shards(shards, tmp_path / "out.h5")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["shard0.h5"]

    def test_aligned_chunk_rows(self) -> None:
        from fastsim.generation.batches import aligned_chunk_rows

        assert aligned_chunk_rows(10_000, 368) == 625  # 1 MiB holds 712 rows of 368 float32
        assert aligned_chunk_rows(16, 18) == 16
        assert aligned_chunk_rows(9973, 368) == 712  # a prime batch size: no useful divisor
        for bs in (1, 7, 100, 1000, 4096, 10_000):
            rows = aligned_chunk_rows(bs, 368)
            assert 1 <= rows * 368 * 4 <= 1 << 20


def test_model_with_extra_conditions_is_refused(tmp_path: Path) -> None:
    """A generator conditioned on more than the energy cannot be driven by energies alone: clear error, no file."""
    from fastsim.generation.export import export_onnx
    from fastsim.generation.generate import generate_showers
    from fastsim.models.wgan_gp import WGANGP

    condition = {"class": "EnergyCondition", "e_min": 256.0, "e_max": 16384.0}
    model = WGANGP(geometry=TINY_GEOMETRY.to_dict(), condition=condition, n_conditions=2, latent_dim=4)
    with pytest.raises(FastsimError, match="1 extra condition"):
        generate_showers(model, DiscreteEnergies.each([1000.0], 5), tmp_path / "g.h5", seed=0, device="cpu")
    with pytest.raises(FastsimError, match="1 extra condition"):
        export_onnx(tmp_path / "none.ckpt", tmp_path / "m.onnx", model=model)
    assert list(tmp_path.iterdir()) == []
