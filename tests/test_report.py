"""``fastsim benchmark`` end to end on real HDF5 files in tmp_path, and the Lightning callback."""

from __future__ import annotations

import functools
import json
import math
import os

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from conftest import toy_showers, trainer_kwargs

from fastsim.cli import main as fastsim_main
from fastsim.data.hdf5 import write_calochallenge
from fastsim.errors import InputFileError
from fastsim.geometry import Geometry
from fastsim.report.callback import BenchmarkCallback
from fastsim.report.tolerances import Tolerances, load_tolerances
from fastsim.report.tolerances import status as _status

ENERGIES = (1024.0, 16384.0, 262144.0)


#: toy showers: radial exponential profile modulated in α, ~90 % sampled response
make_showers = functools.partial(toy_showers, energies=ENERGIES, alpha_mod=0.3)


@pytest.fixture
def pair(tmp_path, geo_photons):
    """A generated/reference pair of dataset-1 photon files (368 voxels) that agree."""
    ref, gen = str(tmp_path / "ref.h5"), str(tmp_path / "gen.h5")
    write_calochallenge(ref, *make_showers(geo_photons, 600, 0),
                        attrs={"producer": "geant4", "time_per_shower_s": 0.2,
                               "time_per_shower_by_energy": json.dumps({"1024": 0.01, "16384": 0.1, "262144": 1.0})})  # fmt: skip
    write_calochallenge(gen, *make_showers(geo_photons, 500, 1),
                        attrs={"producer": "fastsim-generate", "time_per_shower_s": 2e-4, "device": "cpu"})  # fmt: skip
    return gen, ref


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = fastsim_main(["benchmark", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


FAST = ("--classifier-epochs", "3", "--max-showers", "300", "--protocol", "quick")


def test_good_pair_writes_metrics_plots_and_report(pair, tmp_path, capsys):
    gen, ref = pair
    out = tmp_path / "report"
    code, stdout, _ = run(capsys, "--generated", gen, "--reference", ref, "--out", str(out), *FAST)
    assert code == 0
    assert "report.md" in stdout
    m = json.loads((out / "metrics.json").read_text())
    for key in ("inputs", "geometry", "energy_groups", "tolerances", "response", "layers", "shapes",
                "voxel_spectrum", "classifier", "summary", "timing"):  # fmt: skip
        assert key in m
    assert m["geometry"]["name"] == "1-photons"  # inferred from the 368 voxels
    assert m["energy_groups"]["kind"] == "discrete" and m["energy_groups"]["keys"] == ["1024", "16384", "262144"]
    rows = m["response"]["per_energy"]
    assert len(rows) == 3
    assert sum(r["generated"]["n"] for r in rows) == 500 and sum(r["reference"]["n"] for r in rows) == 600
    for r in rows:
        # same distribution: the ratio is 1 within its (few-per-mille) uncertainty
        assert abs(r["response_ratio"] - 1) < 4 * r["response_ratio_unc"]
        assert 0 <= r["e_ratio"]["separation_power"] < 0.2
    assert set(m["shapes"]) == {"center_x", "center_y", "center_r", "width_x", "width_y", "width_r", "sparsity"}
    assert len(m["shapes"]["center_r"]["layers"]) == 5
    assert m["classifier"]["low_level"]["n_per_class"] == 300
    # the same distribution: both classifiers within 2 standard errors of 0.5
    for kind in ("low_level", "high_level"):
        c = m["classifier"][kind]
        assert abs(c["auc"] - 0.5) < 2 * c["auc_unc"], (kind, c["auc"], c["auc_unc"])
    assert m["timing"]["speedup"] == pytest.approx(1000.0)
    assert [t["reference_s"] for t in m["timing"]["by_energy"]] == [0.01, 0.1, 1.0]
    assert m["summary"]["n_checks"] == 2 * 3 + 1 + 2
    for png in ("response.png", "resolution.png", "e_ratio.png", "layer_energies.png", "layer_fractions.png",
                "shape_center_r.png", "shape_width_x.png", "voxel_spectrum.png", "mean_images.png"):  # fmt: skip
        assert (out / png).stat().st_size > 5000, png
    md = (out / "report.md").read_text()
    assert "| 1.024 GeV |" in md and "![response](response.png)" in md and "speed-up 1000" in md
    assert "<table>" in (out / "report.html").read_text()
    # nothing half-written left behind
    assert not [f for f in os.listdir(out) if f.startswith(".")]


def test_scaled_generator_fails_the_response_check(tmp_path, geo_photons, capsys):
    ref, gen = str(tmp_path / "ref.h5"), str(tmp_path / "gen.h5")
    write_calochallenge(ref, *make_showers(geo_photons, 900, 0))
    write_calochallenge(gen, *make_showers(geo_photons, 900, 1, scale=1.05))
    out = tmp_path / "rep"
    code, stdout, _ = run(capsys, "--generated", gen, "--reference", ref, "--out", str(out),
                          "--no-classifier", "--no-plots", "--strict")  # fmt: skip
    assert code == 1 and "FAIL" in stdout
    m = json.loads((out / "metrics.json").read_text())
    for r in m["response"]["per_energy"]:
        assert abs(r["response_ratio"] - 1.05) < 4 * r["response_ratio_unc"]
        assert r["pass_response"] is False
        assert r["status_response"] == "fail"  # 5 % off with a ~0.3 % uncertainty: significant
        # the scale leaves σ/μ alone (~6 % statistical uncertainty with 300 showers per energy)
        assert abs(r["resolution_ratio"] - 1) < 4 * r["resolution_ratio_unc"]
    assert m["classifier"] == {"run": False}
    assert m["timing"] is None
    assert not list(out.glob("*.png"))


def test_report_status_distinguishes_significant_failures():
    assert _status(1.004, 0.001, 0.01) == "pass"
    assert _status(1.05, 0.003, 0.01) == "fail"
    assert _status(1.03, 0.015, 0.01) == "not significant"  # 2 σ reach the band
    assert _status(math.nan, 0.01, 0.01) == "fail"


def one_line_error(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_missing_file(pair, tmp_path, capsys):
    gen, _ = pair
    missing = str(tmp_path / "nope.h5")
    code, _, err = run(capsys, "--generated", gen, "--reference", missing, "--out", str(tmp_path / "r"))
    assert code == 2
    one_line_error(err, missing, "not found")
    assert not (tmp_path / "r").exists()


def test_output_path_that_is_a_file(pair, tmp_path, capsys):
    gen, ref = pair
    f = tmp_path / "file.txt"
    f.write_text("x")
    code, _, err = run(capsys, "--generated", gen, "--reference", ref, "--out", str(f))
    assert code == 2
    one_line_error(err, str(f), "not a directory")


def test_voxel_mismatch_between_files(pair, tmp_path, capsys, geo_small):
    _, ref = pair
    gen = str(tmp_path / "small.h5")
    write_calochallenge(gen, *make_showers(geo_small, 50, 3))
    code, _, err = run(capsys, "--generated", gen, "--reference", ref, "--out", str(tmp_path / "r"))
    assert code == 2
    one_line_error(err, gen, "60 voxels", "368")


def test_geometry_mismatch(pair, tmp_path, capsys):
    gen, ref = pair
    # --geometry that does not fit the files
    code, _, err = run(capsys, "--generated", gen, "--reference", ref, "--out", str(tmp_path / "r"), "--geometry", "1-pions")
    assert code == 2
    one_line_error(err, ref, "368 voxels", "1-pions")
    # a file whose geometry attribute describes another binning with the same voxel count
    other = Geometry.regular(4, 2, list(np.linspace(0, 100, 47)), name="other")  # 4 × 2 × 46 = 368
    assert other.n_voxels == 368
    odd, tagged = str(tmp_path / "odd.h5"), str(tmp_path / "tagged.h5")
    e, s = make_showers(Geometry.builtin("1-photons"), 100, 5)
    write_calochallenge(odd, e, s, attrs={"geometry": other.to_json()})
    write_calochallenge(tagged, e, s, attrs={"geometry": Geometry.builtin("1-photons").to_json()})
    code, _, err = run(capsys, "--generated", odd, "--reference", tagged, "--out", str(tmp_path / "r"))
    assert code == 2
    one_line_error(err, odd, "geometry attribute 'other' differs", "'1-photons'")
    # and against --geometry
    code, _, err = run(capsys, "--generated", odd, "--reference", ref, "--out", str(tmp_path / "r"), "--geometry", "1-photons")
    assert code == 2
    one_line_error(err, odd, "geometry attribute 'other' differs from --geometry '1-photons'")


def test_different_energy_sets(pair, tmp_path, capsys, geo_photons):
    _, ref = pair
    gen = str(tmp_path / "gev.h5")
    e, s = make_showers(geo_photons, 100, 2)
    write_calochallenge(gen, e / 1000.0 * 1.0001, s / 1000.0)  # GeV, and not on the exact values
    code, _, err = run(capsys, "--generated", gen, "--reference", ref, "--out", str(tmp_path / "r"))
    assert code == 2
    one_line_error(err, gen, "incident energies differ", "GeV instead of MeV")
    # a subset of the energies is also an error
    sub = str(tmp_path / "subset.h5")
    write_calochallenge(sub, *make_showers(geo_photons, 100, 2, energies=ENERGIES[:2]))
    code, _, err = run(capsys, "--generated", sub, "--reference", ref, "--out", str(tmp_path / "r"))
    assert code == 2
    one_line_error(err, sub, "missing from the generated file", "262144")


def test_continuous_spectra_compared_with_ks(tmp_path, capsys, geo_photons):
    rng = np.random.default_rng(0)

    def write(path: str, lo: float, n: int, seed: int) -> None:
        e = np.exp(rng.uniform(np.log(lo), np.log(1e6), size=n))
        _, s = make_showers(geo_photons, n, seed)
        frac = s.sum(axis=1) / s.sum(axis=1)  # keep the voxel split, rescale to the new energies
        write_calochallenge(path, e, s / s.sum(axis=1, keepdims=True) * (0.9 * e * frac)[:, None])

    ref, same, other = (str(tmp_path / f) for f in ("ref.h5", "same.h5", "other.h5"))
    write(ref, 1e3, 800, 0)
    write(same, 1e3, 500, 1)
    write(other, 1e4, 500, 2)
    code, _, err = run(capsys, "--generated", other, "--reference", ref, "--out", str(tmp_path / "r"))
    assert code == 2
    one_line_error(err, other, "incident-energy spectrum differs", "KS")
    code, _, _ = run(capsys, "--generated", same, "--reference", ref, "--out", str(tmp_path / "r"),
                     "--no-classifier", "--no-plots")  # fmt: skip
    assert code == 0
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["energy_groups"]["kind"] == "binned" and len(m["response"]["per_energy"]) == 10
    assert m["inputs"]["energy_check"]["kind"] == "continuous"


def test_bad_values_are_reported_with_the_file(pair, tmp_path, capsys, geo_photons):
    _, ref = pair
    gen = str(tmp_path / "nan.h5")
    e, s = make_showers(geo_photons, 100, 4)
    s[3, 7] = np.nan
    write_calochallenge(gen, e, s)
    code, _, err = run(capsys, "--generated", gen, "--reference", ref, "--out", str(tmp_path / "r"), "--no-plots")
    assert code == 2
    one_line_error(err, gen, "non-finite")
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_voxels_in_gev_are_refused(pair, tmp_path, capsys, geo_photons):
    _, ref = pair
    gen = str(tmp_path / "gev_voxels.h5")
    e, s = make_showers(geo_photons, 100, 6)
    write_calochallenge(gen, e, s / 1000.0)
    code, _, err = run(capsys, "--generated", gen, "--reference", ref, "--out", str(tmp_path / "r"), "--no-plots")
    assert code == 2
    one_line_error(err, gen, "median E_tot/E_inc is 0.0009", "GeV instead of MeV")


def test_an_overshooting_generator_gets_a_report_not_a_refusal(pair, tmp_path, capsys, geo_photons):
    # E_tot = 1.8 E_inc trips the per-file unit heuristic, but for a generated file it is a bad
    # model, not a bad input; the same showers as a reference are refused
    _, ref = pair
    over = str(tmp_path / "over.h5")
    write_calochallenge(over, *make_showers(geo_photons, 200, 7, scale=2.0))
    out = tmp_path / "r"
    code, stdout, _ = run(capsys, "--generated", over, "--reference", ref, "--out", str(out), "--no-plots", *FAST,
                          "--threshold", "0")  # fmt: skip
    assert code == 0 and "FAIL" in stdout
    m = json.loads((out / "metrics.json").read_text())
    assert all(r["response_ratio"] == pytest.approx(2.0, rel=0.02) for r in m["response"]["per_energy"])
    # twice the energy: the classifiers separate the samples and the report's AUC checks fail
    auc_checks = [c for c in m["summary"]["checks"] if c["name"].startswith("classifier AUC")]
    assert len(auc_checks) == 2 and all(c["value"] > 0.95 and not c["pass"] for c in auc_checks), auc_checks
    code, _, err = run(capsys, "--generated", ref, "--reference", over, "--out", str(tmp_path / "r2"), "--no-plots")
    assert code == 2
    one_line_error(err, over, "units")


def test_a_dead_generator_is_reported_with_plots(pair, tmp_path, capsys, geo_photons):
    # all-zero showers (an untrained generator behind a ReLU): every check fails, nothing crashes
    _, ref = pair
    dead = str(tmp_path / "dead.h5")
    e, s = make_showers(geo_photons, 200, 8)
    write_calochallenge(dead, e, np.zeros_like(s))
    out = tmp_path / "r"
    code, stdout, _ = run(capsys, "--generated", dead, "--reference", ref, "--out", str(out), "--no-classifier", "--no-plots",
                          "--protocol", "quick")  # fmt: skip
    assert code == 0 and "FAIL" in stdout
    m = json.loads((out / "metrics.json").read_text())
    assert all(r["response_ratio"] == 0 and r["status_response"] == "fail" for r in m["response"]["per_energy"])
    # clipped into the first bin, which the reference also populates a little: close to 1
    assert all(r["e_ratio"]["separation_power"] > 0.9 for r in m["response"]["per_energy"])
    assert m["voxel_spectrum"]["separation_power"] == 1.0
    # the figures most exposed to empty data, drawn from metrics.json (NaN already turned to null)
    from fastsim.report import plots

    rows = m["response"]["per_energy"]
    plots.plot_response(m, str(out / "response.png"))
    plots.plot_distribution_grid([r["e_ratio"] for r in rows], [r["label"] for r in rows], "E_tot/E_inc", str(out / "e.png"))
    images = np.load(out / "mean_images.npz")
    assert not np.any(images["generated"])
    plots.plot_mean_images(images["generated"], images["reference"], geo_photons, str(out / "img.png"))
    for png in ("response.png", "e.png", "img.png"):
        assert (out / png).stat().st_size > 5000


def test_unknown_geometry_needs_the_option(tmp_path, capsys, geo_small):
    a, b = str(tmp_path / "a.h5"), str(tmp_path / "b.h5")
    write_calochallenge(a, *make_showers(geo_small, 50, 0))
    write_calochallenge(b, *make_showers(geo_small, 50, 1))
    code, _, err = run(capsys, "--generated", a, "--reference", b, "--out", str(tmp_path / "r"))
    assert code == 2
    one_line_error(err, "60-voxel", "--geometry")


def test_tolerances_from_yaml_and_options(tmp_path, capsys, pair):
    good = tmp_path / "tol.yaml"
    good.write_text(yaml.safe_dump({"response": 0.02, "auc": 0.7}))
    tol = load_tolerances(good, resolution=0.1)
    assert tol == Tolerances(response=0.02, resolution=0.1, separation=0.003, auc=0.7)
    bad = tmp_path / "bad.yaml"
    bad.write_text("respnse: 0.02\n")
    gen, ref = pair
    code, _, err = run(capsys, "--generated", gen, "--reference", ref, "--out", str(tmp_path / "r"), "--tolerances", str(bad))
    assert code == 2
    one_line_error(err, str(bad), "unknown tolerance keys")


# ----------------------------------------------------------------------------- callback


class TinyGenerator(L.LightningModule):
    """A real (if small) generator: a learnable voxel profile and energy scale, trained by MSE
    of the mean E_tot/E_inc. Enough to exercise the callback through a real Trainer."""

    def __init__(self, geometry: Geometry, scale: float = 1.0, lr: float = 0.0) -> None:
        super().__init__()
        self._geometry = geometry
        self.logits = torch.nn.Parameter(torch.zeros(geometry.n_voxels))
        self.log_scale = torch.nn.Parameter(torch.tensor(math.log(scale)))
        self.lr = lr

    @property
    def geometry(self) -> Geometry:
        return self._geometry

    def generate(self, e_inc: torch.Tensor) -> torch.Tensor:
        e = e_inc.reshape(-1).float()
        frac = 0.9 * torch.exp(self.log_scale) * (1 + 0.03 / 0.9 * torch.randn(e.shape[0], device=e.device))
        return torch.softmax(self.logits, 0)[None, :] * (frac * e)[:, None]

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        e, s = batch
        target = (s.sum(1) / e).mean()
        return (0.9 * torch.exp(self.log_scale) - target) ** 2

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        e, s = batch
        self.log("val/loss", ((0.9 * torch.exp(self.log_scale) - (s.sum(1) / e).mean()) ** 2).detach())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def test_callback_logs_energy_metrics_in_a_real_trainer(tmp_path, geo_small):
    e, s = make_showers(geo_small, 1500, 0)
    ref = str(tmp_path / "ref.h5")
    write_calochallenge(ref, e, s)
    data = torch.utils.data.TensorDataset(torch.tensor(e, dtype=torch.float32), torch.tensor(s))
    loader = torch.utils.data.DataLoader(data, batch_size=100)
    cb = BenchmarkCallback(ref, max_showers=1200, seed=1)
    model = TinyGenerator(geo_small, scale=1.05)
    trainer = L.Trainer(**trainer_kwargs(max_epochs=2, callbacks=[cb]))
    trainer.fit(model, loader, loader)
    logged = trainer.callback_metrics
    for key in ("1024", "16384", "262144"):
        ratio = float(logged[f"val/response_ratio/{key}"])
        assert ratio == pytest.approx(1.05, abs=0.01)  # lr = 0: the scale stays 1.05
        assert f"val/resolution_ratio/{key}" in logged and f"val/sep_e_ratio/{key}" in logged
        assert f"val/chi2ndf_e_ratio/{key}" in logged
    assert float(logged["val/response_max_dev"]) == pytest.approx(0.05, abs=0.01)
    assert float(logged["val/sep_e_ratio_mean"]) > 0.3  # a 5 % shift is 1.5 σ of E_tot/E_inc
    # seeded: the same model gives the same numbers, and the global RNG is not consumed
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    again = cb.compute(cb.generate_e_tot(model))
    assert torch.rand(1) == before
    assert again == cb.last_metrics
    # a perfect model is recognised as such
    perfect = cb.compute(cb.generate_e_tot(TinyGenerator(geo_small, scale=1.0)))
    assert perfect["val/response_max_dev"] < 0.01
    assert perfect["val/sep_e_ratio_mean"] < 0.05


def test_callback_rejects_a_geometry_mismatch(geo_small, geo_photons):
    e, s = make_showers(geo_photons, 50, 0)
    cb = BenchmarkCallback((e, s), max_showers=40)
    trainer = L.Trainer(**trainer_kwargs(callbacks=[cb], limit_train_batches=None, limit_val_batches=None))
    data = torch.utils.data.TensorDataset(torch.ones(4), torch.ones(4, geo_small.n_voxels))
    loader = torch.utils.data.DataLoader(data, batch_size=2)
    with pytest.raises(InputFileError, match="368 voxels but the model's geometry has 60"):
        trainer.fit(TinyGenerator(geo_small), loader, loader)


# ----------------------------------------------------------------------------- round trip


def test_round_trip_fit_generate_benchmark(tmp_path, geo_small, capsys):
    """A real WGAN-GP trained for a few batches, ``fastsim generate --like`` the reference, then
    ``fastsim benchmark`` on the generator's own output file (its geometry and timing attributes)."""
    from fastsim.data.transforms import EnergyCondition
    from fastsim.models.wgan_gp import WGANGP

    e, s = make_showers(geo_small, 400, 0)
    ref = tmp_path / "ref.h5"
    write_calochallenge(ref, e, s, attrs={"producer": "geant4", "time_per_shower_s": 0.05})
    condition = EnergyCondition().fit(e)
    e_t = torch.as_tensor(e)
    data = [{"x": (torch.as_tensor(s[i]) / e_t[i]).float(), "cond": condition(e_t[i : i + 1])[0].float()}
            for i in range(len(e))]  # fmt: skip
    torch.manual_seed(0)
    model = WGANGP(geometry=geo_small.to_dict(), condition=condition.config(), latent_dim=4,
                   generator_hidden=(16,), critic_hidden=(16,), n_critic=2, seed=0)  # fmt: skip
    trainer = L.Trainer(**trainer_kwargs(limit_train_batches=3, default_root_dir=str(tmp_path)))
    trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=32))
    ckpt = tmp_path / "wgan.ckpt"
    trainer.save_checkpoint(ckpt)
    gen = tmp_path / "gen.h5"
    assert fastsim_main(["generate", "--checkpoint", str(ckpt), "-o", str(gen), "--like", str(ref)]) == 0
    out = tmp_path / "rep"
    code, stdout, _ = run(capsys, "--generated", str(gen), "--reference", str(ref), "--out", str(out),
                          "--no-plots", "--classifier-epochs", "2")  # fmt: skip
    assert code == 0 and "benchmark" in stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["geometry"]["name"] == "small"  # from the generated file's geometry attribute
    assert m["inputs"]["generated"]["attrs"]["producer"] == "fastsim-generate"
    assert m["timing"]["speedup"] > 1
    assert [t["key"] for t in m["timing"]["by_energy"]] == ["1024", "16384", "262144"]
    assert all(t["generated_s"] > 0 for t in m["timing"]["by_energy"])
    assert [r["generated"]["n"] for r in m["response"]["per_energy"]] == [r["reference"]["n"] for r in
                                                                          m["response"]["per_energy"]]  # fmt: skip


# ----------------------------------------------------------------------------- metrics.json versions


def test_metrics_json_round_trip_and_versions(pair, tmp_path, capsys):
    """metrics.json is BenchmarkResult.to_json (version 3): read back it gives the same JSON;
    a version-1 file (before protocol and threshold) is read with defaults; an unknown version is
    refused in one line, also by scripts/results_table.py from the command line."""
    import subprocess
    import sys

    from fastsim.outputs import jsonable
    from fastsim.report.result import load_result

    gen, ref = pair
    out = tmp_path / "rep"
    code, _, _ = run(capsys, "--generated", gen, "--reference", ref, "--out", str(out), "--no-classifier",
                     "--no-plots", "--protocol", "quick")  # fmt: skip
    assert code == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["format"] == "fastsim-benchmark" and m["format_version"] == 3
    result = load_result(out / "metrics.json")
    assert jsonable(result.to_json()) == m
    assert result.summary.n_checks == m["summary"]["n_checks"] and result.row("1024").energy == 1024.0
    old = {k: v for k, v in m.items() if k not in ("protocol", "threshold", "calochallenge")}
    old["format_version"] = 1
    (tmp_path / "v1.json").write_text(json.dumps(old))
    v1 = load_result(tmp_path / "v1.json")
    assert v1.protocol == "quick" and v1.threshold is None and v1.calochallenge is None
    assert [r.response_ratio for r in v1.per_energy] == [r["response_ratio"] for r in m["response"]["per_energy"]]
    future = tmp_path / "v99.json"
    future.write_text(json.dumps({**m, "format_version": 99}))
    with pytest.raises(InputFileError, match="v99.json: metrics.json format_version 99 is not one this fastsim reads"):
        load_result(future)
    with pytest.raises(InputFileError, match="not a fastsim benchmark result"):
        (tmp_path / "other.json").write_text("{}")
        load_result(tmp_path / "other.json")
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "results_table.py")
    done = subprocess.run([sys.executable, script, f"X={future}"], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"{future}: metrics.json format_version 99 is not one this fastsim reads "
                                                "(1, 2, 3); rerun fastsim benchmark, or use the fastsim that wrote it"]  # fmt: skip
