"""Outputs and silent bad data through the command line: stale partial files of killed runs,
benchmark reports replaced whole, warnings for energies outside the training range, GeV deposits."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from helpers_cli import cli_env, tiny_checkpoint, write_toy_showers

from fastsim.cli import main
from fastsim.geometry import Geometry
from fastsim.outputs import check_output_dir, check_output_file, remove_stale_partials

GEO = Geometry.regular(3, 4, [0.0, 5.0, 10.0, 20.0, 50.0, 100.0], name="small")  # 60 voxels


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from fastsim.data.tensors import prepare_training_tensors

    d = tmp_path_factory.mktemp("outputs")
    showers = str(d / "showers.h5")
    write_toy_showers(showers, GEO, 300, seed=0)
    tensors = str(d / "train.h5")
    prepare_training_tensors([showers], tensors, GEO, transform_config="divide", seed=0, progress=False)
    return {"showers": showers, "ckpt": tiny_checkpoint(str(d), tensors)}


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_killed_generate_leaves_a_partial_file_the_next_run_removes(files, tmp_path) -> None:
    out = tmp_path / "gen.h5"
    cmd = [sys.executable, "-m", "fastsim.cli", "generate", "--checkpoint", files["ckpt"], "-o", str(out),
           "--energies", "1024", "--n", "50000000", "--batch-size", "1000"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        t0 = time.monotonic()
        while not glob.glob(str(tmp_path / ".gen.h5.*")) and time.monotonic() - t0 < 120:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (partial,) = glob.glob(str(tmp_path / ".gen.h5.*"))
    assert not out.exists() and os.path.getsize(partial) > 0
    # a concurrent writer's file (a live process) is never touched
    live = tmp_path / f".gen.h5.partial-{os.getppid()}-0123abcd"
    live.write_bytes(b"x")
    # another output's leftovers are not this run's business either
    other = tmp_path / f".other.h5.partial-{_dead_pid()}-0123abcd"
    other.write_bytes(b"x")
    code = main(["generate", "--checkpoint", files["ckpt"], "-o", str(out), "--energies", "1024", "--n", "20"])
    assert code == 0
    assert out.exists() and not os.path.exists(partial)
    assert live.exists() and other.exists()


def test_remove_stale_partials_only_removes_dead_writers_of_that_output(tmp_path) -> None:
    target = tmp_path / "x.h5"
    dead = tmp_path / f".x.h5.partial-{_dead_pid()}-89abcdef"
    mine = tmp_path / f".x.h5.partial-{os.getpid()}-89abcdef"
    unrelated = tmp_path / ".x.h5.notes"
    dead_dir = tmp_path / f".x.h5.partial-{_dead_pid()}-00000000"
    for p in (dead, mine, unrelated):
        p.write_bytes(b"x")
    dead_dir.mkdir()
    (dead_dir / "plot.png").write_bytes(b"x")
    runner_style = tmp_path / f".x.h5.partial-{_dead_pid()}"  # the simulation runner's name
    runner_style.write_bytes(b"x")
    removed = remove_stale_partials(target)
    assert sorted(removed) == sorted([str(dead), str(dead_dir), str(runner_style)])
    assert mine.exists() and unrelated.exists() and not dead.exists() and not dead_dir.exists()


def test_output_checks_name_the_problem(tmp_path) -> None:
    from fastsim.errors import InputFileError

    (tmp_path / "f").write_text("x")
    with pytest.raises(InputFileError, match=r"/proc/out\.h5: cannot write here: directory /proc "):
        check_output_file("/proc/out.h5")
    with pytest.raises(InputFileError, match=r"f/out\.h5: .*/f is a file, not a directory"):
        check_output_file(tmp_path / "f" / "out.h5")
    with pytest.raises(InputFileError, match=r"f/a/b/out\.h5: .*/f is a file, not a directory"):
        check_output_file(tmp_path / "f" / "a" / "b" / "out.h5")
    with pytest.raises(InputFileError, match="output directory .*/missing does not exist"):
        check_output_file(tmp_path / "missing" / "out.h5")
    with pytest.raises(InputFileError, match="already exists"):
        check_output_file(tmp_path / "f")
    assert check_output_file(tmp_path / "f", overwrite=True) == str(tmp_path / "f")
    with pytest.raises(InputFileError, match="is a file, not a directory"):
        check_output_dir(tmp_path / "f", overwrite=True)
    assert os.listdir(tmp_path) == ["f"]  # the probes left nothing


def test_benchmark_refuses_an_old_report_and_replaces_it_whole(files, tmp_path, capsys) -> None:
    ref = files["showers"]
    gen = str(tmp_path / "gen.h5")
    write_toy_showers(gen, GEO, 300, seed=1)
    out = tmp_path / "report"
    geo = ["--geometry", GEO.to_json(), "--no-classifier"]
    assert main(["benchmark", "--generated", gen, "--reference", ref, "--out", str(out), *geo]) == 0
    first = sorted(os.listdir(out))
    assert "metrics.json" in first and any(n.endswith(".png") for n in first)
    (out / "notes.txt").write_text("mine")  # a file the old run's directory holds
    capsys.readouterr()
    assert main(["benchmark", "--generated", gen, "--reference", ref, "--out", str(out), *geo, "--no-plots"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"fastsim benchmark: error: {out}: already exists (pass --overwrite to replace it)"
    assert sorted(os.listdir(out)) == sorted([*first, "notes.txt"])  # untouched
    # a failing rerun with --overwrite leaves the old report whole
    bad = str(tmp_path / "missing.h5")
    assert main(["benchmark", "--generated", bad, "--reference", ref, "--out", str(out), *geo, "--overwrite"]) == 2
    assert sorted(os.listdir(out)) == sorted([*first, "notes.txt"])
    # --overwrite with other options: only the new run's files, no PNG of the old one beside them
    code = main(["benchmark", "--generated", gen, "--reference", ref, "--out", str(out), *geo, "--no-plots",
                 "--overwrite"])  # fmt: skip
    assert code == 0
    now = sorted(os.listdir(out))
    assert "metrics.json" in now and not [n for n in now if n.endswith(".png")] and "notes.txt" not in now
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".report.")]


def test_generate_warns_outside_the_training_energies(files, tmp_path, capsys) -> None:
    # the tiny model is trained on 1.024-8.192 GeV
    code = main(["generate", "--checkpoint", files["ckpt"], "-o", str(tmp_path / "far.h5"),
                 "--energies", "1,4e6", "--n", "3"])  # fmt: skip
    assert code == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        "fastsim generate: warning: energies 1–4e+06 MeV reach outside the model's training range "
        "1024–8192 MeV; showers there are extrapolations"
    ]
    code = main(["generate", "--checkpoint", files["ckpt"], "-o", str(tmp_path / "in.h5"),
                 "--log-uniform", "1024", "8192", "--n", "30"])  # fmt: skip
    assert code == 0 and capsys.readouterr().err == ""


def test_validate_and_prep_train_catch_deposits_in_gev(files, tmp_path, capsys) -> None:
    with h5py.File(files["showers"]) as f:
        e, s = f["incident_energies"][:, 0], f["showers"][:]
    from fastsim.data.hdf5 import write_calochallenge

    gev = str(tmp_path / "gev.h5")
    write_calochallenge(gev, e, s / 1000.0)
    assert main(["validate", gev]) == 2
    out = capsys.readouterr().out
    assert f"{gev}: median E_dep/E_inc is 0.000" in out and "look like GeV" in out
    assert main(["validate", files["showers"]]) == 0  # the MeV original is fine
    capsys.readouterr()
    assert main(["prep-train", gev, "-o", str(tmp_path / "t.h5"), "--geometry", GEO.to_json()]) == 2
    assert "1000x too small" in capsys.readouterr().err
    assert not (tmp_path / "t.h5").exists()


def test_all_zero_showers_are_not_mistaken_for_gev(tmp_path) -> None:
    from fastsim.data.hdf5 import validate_calochallenge, write_calochallenge

    path = str(tmp_path / "dead.h5")
    write_calochallenge(path, np.full(10, 1024.0), np.zeros((10, GEO.n_voxels), np.float32))
    assert not [p for p in validate_calochallenge(path) if "GeV" in p]
