"""The incidence angle as a second condition column, end to end (issue 14): prep-train, fit,
generate (``--like`` and ``--angles``), export (an ``angle`` input) and benchmark (per energy ×
angle), on the committed Geant4 reference at 0°, 20° and 40° (450 showers).

One tiny real ``fastsim fit`` (two batches, one validation: the χ² model selection and the
benchmark callback generate at the validation events' angles) serves the whole module.
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
import torch
from helpers_cli import fastsim, small_model_args, tiny_checkpoint

import fastsim as fastsim_pkg
from fastsim.cli import main

REF = os.path.join(os.path.dirname(fastsim_pkg.__file__), "refdata", "photons_ds1_g4_angles.h5")
PLAIN = os.path.join(os.path.dirname(fastsim_pkg.__file__), "refdata", "photons_ds1_g4.h5")


def _read(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    with h5py.File(path, "r") as f:
        angles = f["incident_angles"][:, 0] if "incident_angles" in f else None
        if angles is not None:
            assert f["incident_angles"].shape == (f["showers"].shape[0], 1)
            assert f["incident_angles"].attrs["units"] == "deg"
        return f["incident_energies"][:, 0], f["showers"][...], angles


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, str]:
    """prep-train of the angle reference (read out at 1 MeV, as the WGAN-GP config's generator
    expects), and one tiny fit of it (cwd: its directory)."""
    d = tmp_path_factory.mktemp("angles")
    tensors = str(d / "train.h5")
    assert main(["prep-train", REF, "-o", tensors, "--geometry", "1-photons", "--no-progress", "--threshold", "1"]) == 0
    cwd = os.getcwd()
    os.chdir(d)
    try:
        rc = main(["fit", *small_model_args(tensors), "--trainer.max_epochs", "1",
                   "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
                   "--benchmark.reference", REF, "--benchmark.max_showers", "60"])  # fmt: skip
    finally:
        os.chdir(cwd)
    assert rc == 0
    ckpt = str(d / "logs" / "fastsim" / "version_0" / "checkpoints" / "last.ckpt")
    assert os.path.exists(ckpt)
    return {"dir": str(d), "tensors": tensors, "ckpt": ckpt}


def test_prep_train_adds_the_scaled_angle_column(run) -> None:
    """Column 1 of cond is (θ − 0°)/(40° − 0°) of each shower's own angle, through the shuffle."""
    from fastsim.data.tensors import TrainingTensors

    e_ref, s_ref, a_ref = _read(REF)
    with TrainingTensors(run["tensors"]) as tt:
        assert tt.n_conditions == 2 and tt.condition_names == ["energy", "angle"]
        assert tt.condition_config["class"] == "ConditionSet"
        assert tt.condition_config["extra"] == [{"class": "AngleCondition", "angle_min": 0.0, "angle_max": 40.0}]
        cond = tt.build_condition()
        b = tt.read()
    # find each output row's source shower (x = showers read out at 1 MeV / E_inc, bit for bit, float32)
    s_ref = np.where(s_ref < 1.0, np.float32(0), s_ref)
    source = {(s / np.float32(e)).astype(np.float32).tobytes(): i for i, (e, s) in enumerate(zip(e_ref, s_ref, strict=True))}
    rows = np.array([source[x.tobytes()] for x in b["x"]])
    assert sorted(rows) == list(range(len(e_ref)))  # shuffled, every shower once
    assert not np.array_equal(rows, np.arange(len(rows)))
    np.testing.assert_allclose(b["cond"][:, 1], a_ref[rows] / 40.0, atol=1e-7)
    np.testing.assert_allclose(b["e_inc"], e_ref[rows])
    scaled = cond.scale_extra(torch.tensor([[0.0], [20.0], [40.0]], dtype=torch.float64))
    assert scaled[:, 0].tolist() == [0.0, 0.5, 1.0]


def test_prep_train_mixed_inputs_and_no_angle(tmp_path, capsys) -> None:
    """Inputs with and without angles: one line naming the file without; --no-angle: one column."""
    out = str(tmp_path / "t.h5")
    assert main(["prep-train", REF, PLAIN, "-o", out, "--geometry", "1-photons", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and PLAIN in err[0] and "has no incident_angles" in err[0] and REF in err[0], err
    assert not os.path.exists(out) and os.listdir(tmp_path) == []
    assert main(["prep-train", REF, "-o", out, "--geometry", "1-photons", "--no-progress", "--no-angle"]) == 0
    from fastsim.data.tensors import TrainingTensors

    with TrainingTensors(out) as tt:
        assert tt.n_conditions == 1 and tt.condition_config["class"] == "EnergyCondition"


def test_the_checkpoint_scales_raw_angles(run) -> None:
    from fastsim.models.io import load_generator

    model = load_generator(run["ckpt"])
    assert model.n_conditions == 2 and model.condition_names == ["energy", "angle"]
    assert model.angle_range == (0.0, 40.0)
    assert model.hparams["condition"]["class"] == "ConditionSet"
    scaled = model.scale_extra_conditions(torch.tensor([[10.0], [40.0]]))
    assert scaled[:, 0].tolist() == [0.25, 1.0]
    # the angle reaches the network: same noise and energy, another angle, other showers
    e = torch.full((4,), 1024.0)
    a = model.generate(e, torch.Generator().manual_seed(0), extra_conditions=model.scale_extra_conditions(torch.zeros(4, 1)))
    b = model.generate(e, torch.Generator().manual_seed(0), extra_conditions=model.scale_extra_conditions(torch.full((4, 1), 40.0)))
    assert not torch.equal(a, b)


def test_generate_like_carries_the_reference_angles(run, capsys) -> None:
    out = os.path.join(run["dir"], "like.h5")
    assert main(["generate", "-c", run["ckpt"], "-o", out, "--like", REF, "--device", "cpu", "--batch-size", "100"]) == 0
    e, s, a = _read(out)
    e_ref, _, a_ref = _read(REF)
    np.testing.assert_array_equal(e, e_ref)
    np.testing.assert_array_equal(a, a_ref)
    assert s.shape == (450, 368) and np.isfinite(s).all()
    with h5py.File(out, "r") as f:
        assert json.loads(f.attrs["energies"])["angles_deg"] == [0.0, 20.0, 40.0]


def test_generate_explicit_angles(run, capsys) -> None:
    """--angles repeats the energies once per angle, angle-major; outside the trained range: a warning."""
    out = os.path.join(run["dir"], "explicit.h5")
    capsys.readouterr()
    assert main(["generate", "-c", run["ckpt"], "-o", out, "--energies", "256,4096", "--n", "3",
                 "--angles", "0,40,50", "--device", "cpu"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "angles 0–50 deg reach outside the model's training angles 0–40 deg" in err
    e, s, a = _read(out)
    np.testing.assert_array_equal(a, [0.0] * 6 + [40.0] * 6 + [50.0] * 6)
    np.testing.assert_array_equal(e, ([256.0] * 3 + [4096.0] * 3) * 3)
    # each batch at its own angle: the 0° showers are the ones a 0°-only run makes (same seeds by batch)
    only0 = os.path.join(run["dir"], "only0.h5")
    assert main(["generate", "-c", run["ckpt"], "-o", only0, "--energies", "256,4096", "--n", "3",
                 "--angles", "0", "--device", "cpu"]) == 0  # fmt: skip
    np.testing.assert_array_equal(_read(only0)[1], s[:6])


def test_two_cpu_processes_carry_the_angles_and_match_one_device(run, tmp_path) -> None:
    """``--devices 2`` (Lightning's predict loop, ddp_fork, one shard per rank, merged): each event's angle
    reaches the model as on one device (showers equal bit for bit, the ranks using one thread each as
    in tests/test_generate.py) and the merged file has incident_angles in the reference's order."""
    args = ["-c", run["ckpt"], "--like", REF, "--batch-size", "64", "--seed", "3"]
    one = fastsim("generate", *args, "-o", tmp_path / "one.h5", "--device", "cpu")
    assert one.returncode == 0, one.stderr[-3000:]
    two = fastsim("generate", *args, "-o", tmp_path / "two.h5", "--accelerator", "cpu", "--devices", "2")
    assert two.returncode == 0, two.stderr[-3000:]
    e1, s1, a1 = _read(str(tmp_path / "one.h5"))
    e2, s2, a2 = _read(str(tmp_path / "two.h5"))
    e_ref, _, a_ref = _read(REF)
    np.testing.assert_array_equal(a2, a_ref)
    np.testing.assert_array_equal(e2, e_ref)
    np.testing.assert_array_equal(s2, s1)
    with h5py.File(tmp_path / "one.h5") as f1, h5py.File(tmp_path / "two.h5") as f2:
        assert f2.attrs["device"] == "cpu x2"
        assert f2["incident_angles"].dtype == f1["incident_angles"].dtype == np.float64
        assert dict(f2["incident_angles"].attrs) == dict(f1["incident_angles"].attrs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.h5", "two.h5"]  # shards removed


def test_merge_shards_concatenates_the_angles_and_refuses_a_shard_without(tmp_path) -> None:
    """merge_shards carries incident_angles rank by rank (dtype, shape, units kept); a shard without
    them (or with them where the first has none) is refused naming that shard, no output left."""
    from fastsim.data.hdf5 import ShowerWriter
    from fastsim.data.shards import merge_shards
    from fastsim.errors import InputFileError

    e_ref, s_ref, a_ref = _read(REF)
    cuts = [(0, 100), (100, 300), (300, 450)]
    shards = []
    for i, (lo, hi) in enumerate(cuts):
        shards.append(str(tmp_path / f"rank{i}.h5"))
        with ShowerWriter(shards[-1], s_ref.shape[1], chunk_rows=50) as w:
            w.append(e_ref[lo:hi], s_ref[lo:hi])
            if i != 2:
                w.add_dataset("incident_angles", a_ref[lo:hi, None], units="deg")
    with pytest.raises(InputFileError, match="rank2.h5: per-event datasets"):
        merge_shards(shards, tmp_path / "bad.h5")
    assert sorted(os.listdir(tmp_path)) == ["rank0.h5", "rank1.h5", "rank2.h5"]  # nothing half-written
    with ShowerWriter(shards[2], s_ref.shape[1], chunk_rows=50, overwrite=True) as w:
        w.append(e_ref[300:], s_ref[300:])
        w.add_dataset("incident_angles", a_ref[300:, None], units="deg")
    merge_shards(shards, tmp_path / "merged.h5")
    e, s, a = _read(str(tmp_path / "merged.h5"))  # checks (N, 1) and units
    np.testing.assert_array_equal(a, a_ref)
    np.testing.assert_array_equal(e, e_ref)
    np.testing.assert_array_equal(s, s_ref)


def test_export_has_an_angle_input_matching_pytorch(run) -> None:
    import onnxruntime as ort

    from fastsim.models.io import load_generator

    out = os.path.join(run["dir"], "angle.onnx")
    assert main(["export", "-c", run["ckpt"], "-o", out]) == 0  # verified against PyTorch inside, too
    session = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["noise", "e_inc", "angle"]
    model = load_generator(run["ckpt"])
    noise = model.sample_noise(5, torch.Generator().manual_seed(3))
    e = torch.tensor([256.0, 1024.0, 4096.0, 1024.0, 300.0])
    angle = torch.tensor([0.0, 20.0, 40.0, 35.0, 5.0])
    got = session.run(["showers"], {"noise": noise.numpy(), "e_inc": e[:, None].numpy(), "angle": angle[:, None].numpy()})[0]
    with torch.no_grad():
        expected = model.to_showers(model.decode(noise, model.conditions(e, model.scale_extra_conditions(angle[:, None]))), e)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-6)
    meta = {p.key: p.value for p in __import__("onnx").load(out).metadata_props}
    assert meta["input_names"] == "noise,e_inc,angle" and "degrees" in json.loads(meta["inputs"])["angle"]


def test_benchmark_per_energy_and_angle(run, capsys) -> None:
    from fastsim.report.result import load_result

    gen = os.path.join(run["dir"], "bench_gen.h5")
    assert main(["generate", "-c", run["ckpt"], "-o", gen, "--like", REF, "--device", "cpu"]) == 0
    report = os.path.join(run["dir"], "report")
    capsys.readouterr()
    assert main(["benchmark", "--generated", gen, "--reference", REF, "--out", report, "--protocol", "quick",
                 "--no-classifier", "--no-plots"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "per energy × angle" in out and "20°" in out and "40°" in out
    result = load_result(os.path.join(report, "metrics.json"))
    rows = result.per_energy_angle
    assert [r.key for r in rows] == [f"{e}@{a}" for e in (256, 1024, 4096) for a in (0, 20, 40)]
    assert all(r.generated.n == 50 and r.reference.n == 50 for r in rows)
    ref_only = [r for r in rows if r.key == "4096@40"][0].reference
    e_ref, s_ref, a_ref = _read(REF)
    sel = (e_ref == 4096) & (a_ref == 40)
    with_thr = np.where(s_ref[sel] >= 1.0, s_ref[sel], 0).sum(axis=1, dtype=np.float64) / 4096  # 1 MeV readout
    assert ref_only.mean == pytest.approx(with_thr.mean(), rel=1e-6)
    with open(os.path.join(report, "report.md")) as f:
        assert "Agreement per incident energy × angle" in f.read()


def test_benchmark_refuses_disjoint_angles(run, capsys) -> None:
    gen = os.path.join(run["dir"], "at10.h5")
    assert main(["generate", "-c", run["ckpt"], "-o", gen, "--energies", "256,1024,4096", "--n", "5",
                 "--angles", "10", "--device", "cpu"]) == 0  # fmt: skip
    report = os.path.join(run["dir"], "report10")
    capsys.readouterr()
    assert main(["benchmark", "--generated", gen, "--reference", REF, "--out", report, "--protocol", "quick",
                 "--no-classifier", "--no-plots"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and gen in err[0] and "share none with the reference" in err[0], err
    assert not os.path.exists(report)


def test_generate_errors_through_the_command_line(run, tmp_path, capsys) -> None:
    """One line, exit 2, no traceback and no output: a 2-condition model without angles, angles for a
    1-condition model (subprocesses, as a user runs them), and the in-process option clashes."""
    one_col = str(tmp_path / "one.h5")
    assert main(["prep-train", REF, "-o", one_col, "--geometry", "1-photons", "--no-progress", "--no-angle"]) == 0
    plain_ckpt = tiny_checkpoint(str(tmp_path), one_col)
    out = str(tmp_path / "gen.h5")
    cases = [
        (["-c", run["ckpt"], "--energies", "1024", "--n", "4"], "conditioned on the incidence angle"),
        (["-c", plain_ckpt, "--energies", "1024", "--n", "4", "--angles", "20"], "not conditioned on the incidence angle"),
    ]
    for args, message in cases:
        proc = fastsim("generate", "-o", out, "--device", "cpu", *args)
        err = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(err) == 1 and message in err[0] and "Traceback" not in proc.stderr, proc.stderr
        assert not os.path.exists(out)
    for args, message in [
        (["-c", run["ckpt"], "--like", REF, "--angles", "20"], "drop --angles"),
        (["-c", run["ckpt"], "--energies", "1024", "--n", "4", "--angles", "-5"], "not an incidence angle"),
    ]:
        capsys.readouterr()
        assert main(["generate", "-o", out, "--device", "cpu", *args]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert not os.path.exists(out)
    # a 1-condition model with an angle reference: generated at the energies, angles dropped with a warning
    assert main(["generate", "-c", plain_ckpt, "-o", out, "--like", REF, "--device", "cpu"]) == 0
    assert _read(out)[2] is None
