"""The main job (`fastsim demo`) end to end on a small synthetic reference, and its pieces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fastsim.cli import main as cli_main
from fastsim.data.hdf5 import open_calochallenge, write_calochallenge
from fastsim.data.tensors import TrainingTensors
from fastsim.errors import FastsimError
from fastsim.geometry import Geometry
from fastsim.pipeline import split_reference, summarize

REPO = Path(__file__).resolve().parents[1]


def _reference(path, energies=(1024.0, 4096.0), n=120, seed=0):
    """Showers with a longitudinal/transverse profile and ~30% visible fraction, in MeV."""
    geo = Geometry.builtin("1-photons")
    rng = np.random.default_rng(seed)
    e = np.repeat(np.asarray(energies), n)
    profile = np.exp(-np.arange(geo.n_voxels) / 50.0)
    profile /= profile.sum()
    showers = rng.gamma(4.0, 0.25, (len(e), geo.n_voxels)) * profile * e[:, None] * 0.3
    write_calochallenge(path, e, showers.astype(np.float32), attrs={"producer": "test"})
    return e, showers


def test_split_reference_is_a_per_energy_partition(tmp_path):
    e, showers = _reference(tmp_path / "ref.h5", n=50)
    n_train, n_held = split_reference(tmp_path / "ref.h5", tmp_path / "a.h5", tmp_path / "b.h5", 0.3, seed=1)
    assert (n_train, n_held) == (70, 30)
    with open_calochallenge(tmp_path / "a.h5") as fa, open_calochallenge(tmp_path / "b.h5") as fb:
        ea, sa = fa.read()
        eb, sb = fb.read()
    for energy in (1024.0, 4096.0):
        assert (eb == energy).sum() == 15
    # every shower lands in exactly one part
    sums = np.sort(np.concatenate([sa.sum(1), sb.sum(1)]))
    np.testing.assert_allclose(sums, np.sort(showers.astype(np.float32).sum(1)), rtol=1e-5)
    # seeded: the same split again
    split_reference(tmp_path / "ref.h5", tmp_path / "c.h5", tmp_path / "d.h5", 0.3, seed=1)
    with open_calochallenge(tmp_path / "d.h5") as fd:
        np.testing.assert_array_equal(fd.read()[1], sb)
    with pytest.raises(FastsimError, match="heldout-fraction"):
        split_reference(tmp_path / "ref.h5", tmp_path / "e.h5", tmp_path / "f.h5", 1.0, seed=1)


def test_demo_end_to_end(tmp_path, capsys):
    _reference(tmp_path / "ref.h5")
    out = tmp_path / "demo"
    status = cli_main([
        "demo", "--reference", str(tmp_path / "ref.h5"), "--out", str(out), "--minutes", "0.5",
        "--classifier-epochs", "2", "--fit-arg=--trainer.max_steps=60", "--fit-arg=--trainer.max_epochs=3",
        "--jobs", "2", "--bench-arg=--protocol=quick", "--bench-arg=--threshold=0.5",
    ])
    assert status == 0
    text = capsys.readouterr().out
    assert "=== summary" in text and "classifier AUC" in text
    assert "side by side (2 processes" in text  # the two models trained at once, one process each
    for model in ("wgan_gp", "vae"):
        log = (out / model / "log.txt").read_text()
        assert "best checkpoint" in log and "benchmark" in log
    # the WGAN-GP is selected by the χ² of E_tot/E_inc, the VAE by the high-level features of its showers
    assert list((out / "wgan_gp" / "checkpoints").glob("best-epoch*-chi2sum*.ckpt"))
    assert list((out / "vae" / "checkpoints").glob("best-epoch*-hlf*.ckpt"))
    # the training showers are read out like the benchmark's (1 MeV for dataset 1), and the
    # WGAN-GP's generator applies the same threshold
    with TrainingTensors(out / "train_tensors.h5") as tt:
        assert tt.attrs["readout_threshold"] == 1.0
        d = tt.read()
        mev = d["x"] * d["e_inc"][:, None]
        assert mev[mev > 0].min() >= 1.0 - 1e-3 and (mev > 0).any()
    assert "--model.init_args.readout_threshold=1.0" in (out / "wgan_gp" / "log.txt").read_text()
    for model in ("wgan_gp", "vae"):
        metrics = json.loads((out / model / "report" / "metrics.json").read_text())
        labels = [row["label"] for row in metrics["response"]["per_energy"]]
        assert len(labels) == 2
        assert metrics["protocol"] == "quick" and metrics["threshold"]["mev"] == 0.5  # --bench-arg reached it
        assert (out / model / "report" / "report.md").exists()
        with open_calochallenge(out / model / "generated.h5") as f:
            assert f.n_showers == 72 and f.n_voxels == 368
        lines = summarize(out / model / "report" / "metrics.json")
        assert any("checks passed" in ln for ln in lines)
    # the comparison tables of docs/results.md are made from these files
    import runpy
    import sys

    capsys.readouterr()
    argv = sys.argv
    try:
        sys.argv = ["results_table.py", f"G={out / 'wgan_gp/report/metrics.json'}",
                    f"V={out / 'vae/report/metrics.json'}", "--energies"]  # fmt: skip
        with pytest.raises(SystemExit) as done:
            runpy.run_path(str(REPO / "scripts" / "results_table.py"), run_name="__main__")
    finally:
        sys.argv = argv
    assert done.value.code == 0
    table = capsys.readouterr().out
    assert table.count("\n| G |") == 1 and table.count("\n| V |") == 1 and "**V**" in table
    m = json.loads((out / "wgan_gp" / "report" / "metrics.json").read_text())
    first = m["response"]["per_energy"][0]
    assert f"| {first['label']} | {first['response_ratio']:.3f} ± " in table


def test_demo_side_by_side_failure_names_the_model_and_its_log(tmp_path, capsys):
    _reference(tmp_path / "ref.h5")
    out = tmp_path / "demo"
    stale = out / "wgan_gp" / "checkpoints" / "best-epoch099-chi2sum0.001.ckpt"  # from an earlier demo
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    status = cli_main([
        "demo", "--reference", str(tmp_path / "ref.h5"), "--out", str(out), "--minutes", "0.2", "--jobs", "2",
        "--fit-arg=--trainer.no_such_option=1",
    ])  # fmt: skip
    assert status == 2
    err = capsys.readouterr().err
    assert "wgan_gp failed (exit status 2)" in err or "vae failed (exit status 2)" in err
    assert "log.txt" in err and "no_such_option" in (out / "wgan_gp" / "log.txt").read_text()
    assert not (out / "wgan_gp" / "report").exists() and not (out / "vae" / "report").exists()
    assert not stale.exists()  # never picked up as this run's best checkpoint


def test_demo_rejects_unknown_model(tmp_path, capsys):
    assert cli_main(["demo", "--models", "flow", "--out", str(tmp_path)]) == 2
    assert "unknown model 'flow'" in capsys.readouterr().err


def test_split_reference_leave_out_keeps_an_energy_out_of_training(tmp_path):
    ref = tmp_path / "ref.h5"
    _reference(ref, energies=(1024.0, 4096.0, 16384.0))
    train, held = tmp_path / "train.h5", tmp_path / "held.h5"
    n_train, n_held = split_reference(ref, train, held, 0.25, seed=1, leave_out=(4096.0,))
    with open_calochallenge(train) as f:
        e_train = f.read()[0]
    with open_calochallenge(held) as f:
        e_held = f.read()[0]
    assert 4096.0 not in set(e_train.tolist())
    assert int((e_held == 4096.0).sum()) == 120  # every shower of the left-out energy is held out
    assert int((e_held == 1024.0).sum()) == 30 and n_train + n_held == 360
    with pytest.raises(FastsimError, match=r"--leave-out 5000 MeV is not one of its incident energies"):
        split_reference(ref, train, held, 0.25, seed=1, leave_out=(5000.0,))
    with pytest.raises(FastsimError, match="leaves no energy to train on"):
        split_reference(ref, train, held, 0.25, seed=1, leave_out=(1024.0, 4096.0, 16384.0))


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_demo_killed_leaves_no_training_behind(tmp_path, sig):
    """Killing `fastsim demo` (even with SIGKILL) stops the model processes it started."""
    import os
    import signal
    import subprocess
    import sys
    import time

    _reference(tmp_path / "ref.h5")
    out = tmp_path / "demo"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastsim.cli", "demo", "--reference", str(tmp_path / "ref.h5"), "--out", str(out),
         "--minutes", "10", "--jobs", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip

    def workers() -> list[int]:
        found = []
        for pid in os.listdir("/proc"):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read()
            except (OSError, ValueError, IndexError):
                continue
            if ppid == proc.pid and b"spawn_main" in cmd:
                found.append(int(pid))
        return found

    deadline = time.monotonic() + 120
    while len(workers()) < 2 or not (out / "wgan_gp" / "log.txt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the model processes never started"
        time.sleep(0.5)
    kids = workers()
    proc.send_signal(getattr(signal, sig))
    proc.wait(timeout=60)
    deadline = time.monotonic() + 30
    while any(os.path.exists(f"/proc/{k}") and "Z" not in open(f"/proc/{k}/stat").read().rsplit(")", 1)[1][:3]
              for k in kids):  # fmt: skip
        assert time.monotonic() < deadline, f"model processes {kids} outlived the demo ({sig})"
        time.sleep(0.5)


def test_demo_extra_train_adds_showers_to_training_only(tmp_path, capsys):
    """`--extra-train` showers join the training tensors; a file sharing held-out showers is refused."""
    import subprocess
    import sys

    ref, extra = tmp_path / "ref.h5", tmp_path / "extra.h5"
    _reference(ref, n=60)
    _reference(extra, n=40, seed=7)  # independent showers, same geometry and energies
    out = tmp_path / "demo"
    status = cli_main([
        "demo", "--reference", str(ref), "--extra-train", str(extra), "--out", str(out), "--models", "wgan_gp",
        "--minutes", "0.5", "--fit-arg=--trainer.max_steps=4", "--fit-arg=--trainer.max_epochs=1",
        "--classifier-epochs", "1", "--bench-arg=--protocol=quick", "--bench-arg=--no-plots",
    ])  # fmt: skip
    assert status == 0
    assert "+ 80 extra training showers" in capsys.readouterr().out
    with TrainingTensors(out / "train_tensors.h5") as tt:
        assert len(tt) == 84 + 80  # 70 % of 2 × 60, plus every extra shower
    with open_calochallenge(out / "wgan_gp" / "generated.h5") as f:
        assert f.n_showers == 36  # generated like the held-out part, untouched by the extra file

    # the reference itself (or any file holding a held-out shower) would leak the held-out set
    out2 = tmp_path / "demo2"
    proc = subprocess.run(
        [sys.executable, "-m", "fastsim.cli", "demo", "--reference", str(ref), "--extra-train", str(ref),
         "--out", str(out2), "--models", "wgan_gp", "--minutes", "0.1"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert "\n" not in err and "Traceback" not in err
    assert str(ref) in err and "shares showers with the held-out" in err
    assert not (out2 / "train_tensors.h5").exists()
    wrong = tmp_path / "ds2.h5"
    write_calochallenge(wrong, np.full(3, 1024.0), np.ones((3, 10), np.float32))
    proc = subprocess.run(
        [sys.executable, "-m", "fastsim.cli", "demo", "--reference", str(ref), "--extra-train", str(wrong),
         "--out", str(out2), "--models", "wgan_gp", "--minutes", "0.1"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2 and str(wrong) in proc.stderr and "368" in proc.stderr
    assert not (out2 / "train_tensors.h5").exists()
