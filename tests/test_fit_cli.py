"""`fastsim fit` through its command line: resume after kill -9, packaged configs, the model check on resume."""

from __future__ import annotations

import glob
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers_cli import cli_env, fastsim, small_model_args, write_toy_showers

from fastsim.geometry import Geometry

GEO = Geometry.regular(3, 4, [0.0, 5.0, 10.0, 20.0, 50.0, 100.0], name="small")  # 60 voxels


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> str:
    from fastsim.data.tensors import prepare_training_tensors

    d = tmp_path_factory.mktemp("fitcli")
    write_toy_showers(str(d / "showers.h5"), GEO, 600, seed=0)
    out = str(d / "train.h5")
    prepare_training_tensors([str(d / "showers.h5")], out, GEO, transform_config="divide", seed=3, progress=False)
    return out


def _step(path: str) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
    except (OSError, EOFError, RuntimeError, KeyError):
        return -1  # not there yet


def _kill_after(cmd: list[str], cwd: str, last: str, past_step: int, timeout: float = 240) -> int:
    """Start ``cmd``, kill -9 it once ``last`` holds a step beyond ``past_step``; the step it held."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < timeout:
            step = _step(last)
            if step > past_step:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return step
            if proc.poll() is not None:
                raise AssertionError(f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}")
            time.sleep(0.05)
        raise AssertionError("no checkpoint appeared")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _weights(path: str) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_resume_after_kill_through_the_command_line(train_file: str, tmp_path) -> None:
    """Killed twice (kill -9, mid-epoch), resumed each time with the same command plus
    --ckpt_path <dir>/last.ckpt: the same final weights as an uninterrupted run, and last.ckpt
    is always the newest state (no last-v1.ckpt)."""
    max_steps = 900  # 300 batches of 3 optimiser steps, ~19 epochs
    base = [*small_model_args(train_file), "--trainer.max_steps", str(max_steps),
            "--checkpoint.every_n_train_steps", "3"]  # fmt: skip
    straight = tmp_path / "straight"
    straight.mkdir()
    done = fastsim("fit", *base, cwd=str(straight))
    assert done.returncode == 0, done.stderr[-3000:]
    (want,) = glob.glob(str(straight / "logs/fastsim/version_0/checkpoints/last.ckpt"))
    assert _step(want) == max_steps

    run = tmp_path / "killed"
    run.mkdir()
    cmd = [sys.executable, "-m", "fastsim.cli", "fit", *base]
    ckpt_dir = run / "logs" / "fastsim" / "version_0" / "checkpoints"
    last = str(ckpt_dir / "last.ckpt")
    first = _kill_after(cmd, str(run), last, past_step=60)
    assert 60 < first < max_steps
    at_first_kill = _weights(last)
    second = _kill_after([*cmd, "--ckpt_path", last], str(run), last, past_step=first + 90)
    assert first + 90 < second < max_steps  # the resumed run wrote its state into the same last.ckpt
    resumed = fastsim("fit", *base, "--ckpt_path", last, cwd=str(run))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _step(last) == max_steps
    names = sorted(os.listdir(ckpt_dir))
    assert not [n for n in names if "-v1" in n], names
    assert f"periodic-step={max_steps:08d}.ckpt" in names  # save_top_k kept across the restarts
    assert len([n for n in names if n.startswith("periodic-")]) == 1
    got, ref = _weights(last), _weights(want)
    assert got.keys() == ref.keys()
    for k, v in ref.items():
        torch.testing.assert_close(got[k], v, rtol=1e-6, atol=1e-7, msg=k)
    # training moved the weights after the first kill (the comparison is not trivially true)
    assert any(not torch.equal(at_first_kill[k], v) for k, v in got.items())


def test_resume_in_the_same_directory_and_refuse_another_model(
    train_file: str, tmp_path, monkeypatch, capsys
) -> None:
    """The README's resume command (in process, fast): a finished run resumed with a larger
    budget continues in the same directory and overwrites last.ckpt; a resume whose model
    options differ from the checkpoint's is one line naming the key."""
    from fastsim.cli import main

    monkeypatch.chdir(tmp_path)
    base = [*small_model_args(train_file), "--checkpoint.every_n_train_steps", "15"]
    assert main(["fit", *base, "--trainer.max_steps", "30"]) == 0
    ckpt_dir = tmp_path / "logs" / "fastsim" / "version_0" / "checkpoints"
    last = str(ckpt_dir / "last.ckpt")
    before = _weights(last)
    assert _step(last) == 30
    # a kill between writing a periodic checkpoint and last.ckpt leaves a file newer than the
    # state resumed from: the resumed run writes that name again, without "-v1" copies beside it
    shutil.copyfile(last, ckpt_dir / "periodic-step=00000045.ckpt")
    # relative path, as typed
    rel = os.path.relpath(last)
    assert main(["fit", *base, "--trainer.max_steps", "60", "--ckpt_path", rel]) == 0
    assert _step(last) == 60
    assert any(not torch.equal(before[k], v) for k, v in _weights(last).items())
    names = sorted(os.listdir(ckpt_dir))
    assert "last.ckpt" in names and not [n for n in names if "-v1" in n], names
    assert [n for n in names if n.startswith("periodic-")] == ["periodic-step=00000060.ckpt"]
    assert not glob.glob(str(tmp_path / "logs/fastsim/version_1/checkpoints/*"))
    # the run's directory moved (another disk, another mount point): resumed in place all the same
    moved = tmp_path / "moved"
    shutil.copytree(ckpt_dir, moved)
    assert main(["fit", *base, "--trainer.max_steps", "75", "--ckpt_path", str(moved / "last.ckpt")]) == 0
    assert _step(str(moved / "last.ckpt")) == 75 and _step(last) == 60
    assert not [n for n in os.listdir(moved) if "-v1" in n]
    assert [n for n in os.listdir(moved) if n.startswith("periodic-")] == ["periodic-step=00000075.ckpt"]
    # another model on resume: refused before training, naming the key; the checkpoint untouched
    capsys.readouterr()
    mtime = os.path.getmtime(last)
    assert main(["fit", *base, "--trainer.max_steps", "90", "--ckpt_path", rel,
                 "--model.init_args.n_critic", "3"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"fastsim fit: error: {rel}: checkpoint was trained with another n_critic: model.init_args.n_critic "
        "differs (2 there, 3 here); resume with the command that started the run"
    )
    assert os.path.getmtime(last) == mtime and _step(last) == 60


def test_packaged_config_names(train_file: str, tmp_path) -> None:
    """--config takes packaged names; `fastsim config` lists them and writes copies."""
    out = fastsim("config", cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    for name in ("model/wgan_gp", "model/vae", "data/photons", "trainer/cpu", "logger/csv"):
        assert name in out.stdout
    written = fastsim("config", "model/vae", "trainer/cpu", "-o", str(tmp_path / "mine"), cwd=str(tmp_path))
    assert written.returncode == 0, written.stderr
    assert (tmp_path / "mine" / "model" / "vae.yaml").read_text() == open(
        os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "model", "vae.yaml")
    ).read()
    again = fastsim("config", "model/vae", "-o", str(tmp_path / "mine"), cwd=str(tmp_path))
    target = tmp_path / "mine" / "model" / "vae.yaml"
    assert again.returncode == 2 and again.stderr.strip() == (
        f"fastsim config: error: {target}: already exists (pass --overwrite to replace it)"
    )
    target.write_text("edited")
    replaced = fastsim("config", "model/vae", "-o", str(tmp_path / "mine"), "--overwrite", cwd=str(tmp_path))
    packaged = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "model", "vae.yaml")
    assert replaced.returncode == 0 and target.read_text() == open(packaged).read()
    assert sorted(os.listdir(target.parent)) == ["vae.yaml"]  # no temporary left


def test_benchmark_callback_is_an_option_of_fit(train_file: str, tmp_path, monkeypatch, capsys) -> None:
    """``--benchmark.reference`` adds the BenchmarkCallback to a run: the per-energy response and
    separation power of E_tot/E_inc are logged at each validation; a missing reference is one line."""
    import csv

    from fastsim.cli import main

    monkeypatch.chdir(tmp_path)
    reference = os.path.join(os.path.dirname(train_file), "showers.h5")
    base = [*small_model_args(train_file), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"]
    # Lightning's start-up lines reach its loggers' handlers once, replayed when training starts
    seen: list[str] = []
    listener = logging.Handler()
    listener.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("lightning.fabric").addHandler(listener)
    try:
        assert main(["fit", *base, "--benchmark.reference", reference, "--benchmark.max_showers", "200"]) == 0
        assert seen.count("Seed set to 0") == 1, seen
        seen.clear()
        assert main(["fit", *base, "--benchmark.reference", str(tmp_path / "none.h5")]) == 2
        assert not any("Seed set" in line for line in seen), seen  # dropped with the error
    finally:
        logging.getLogger("lightning.fabric").removeHandler(listener)
    (metrics,) = glob.glob(str(tmp_path / "logs" / "fastsim" / "version_0" / "metrics.csv"))
    with open(metrics) as f:
        rows = list(csv.DictReader(f))
    logged = {k for row in rows for k, v in row.items() if v}
    assert {"val/sep_e_ratio_mean", "val/response_max_dev", "val/response_ratio/1024"} <= logged, sorted(logged)
    capsys.readouterr()
    missing = str(tmp_path / "no.h5")
    assert main(["fit", *base, "--benchmark.reference", missing]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and missing in err[0] and "not found" in err[0], err
