"""The installed wheel (not the checkout): it ships the configs, and users can name them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig

import pytest
from helpers_cli import REPO, small_model_args, write_toy_showers

from fastsim.geometry import Geometry

_SKIP = shutil.ignore_patterns(".git", ".venv", "build", "dist", "outputs", "logs", "__pycache__", "*.egg-info",
                               ".pytest_cache", ".ruff_cache", "wandb", "lightning_logs")  # fmt: skip


@pytest.mark.slow
def test_the_wheel_ships_the_configs_and_fit_uses_them_by_name(tmp_path) -> None:
    """Build the wheel from a copy of the sources, install it (not editable) into a fresh venv that
    borrows the dependencies of this interpreter's site-packages, and from a directory with no
    checkout: list and copy the configs, and train with ``--config wgan_gp`` etc."""
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=_SKIP)
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(src)], capture_output=True, text=True)  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("fastsim-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    # the dependencies (torch, lightning, ...) from this interpreter's site-packages, after the
    # venv's own: a plain path entry, so an editable fastsim there is not activated
    with open(os.path.join(purelib, "deps.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", WANDB_MODE="offline", MPLBACKEND="Agg", PYTHONWARNINGS="ignore")
    inst = subprocess.run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index",
                           "-q", str(wheel)], capture_output=True, text=True, env=env)  # fmt: skip
    assert inst.returncode == 0, inst.stderr[-3000:]

    work = tmp_path / "elsewhere"  # no configs/ here or above
    work.mkdir()
    fastsim = str(venv / "bin" / "fastsim")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([fastsim, *args], cwd=work, env=env, capture_output=True, text=True, timeout=600)

    where = subprocess.run([py, "-c", "import fastsim; print(fastsim.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True)  # fmt: skip
    assert where.stdout.strip().startswith(purelib), where  # the installed copy, not the checkout
    listed = run("config")
    assert listed.returncode == 0, listed.stderr
    assert os.path.join(purelib, "fastsim", "configs") in listed.stdout
    for name in ("model/wgan_gp", "model/vae", "data/photons", "trainer/cpu", "trainer/ddp", "logger/csv"):
        assert name in listed.stdout
    copied = run("config", "model/wgan_gp", "-o", "mine")
    assert copied.returncode == 0, copied.stderr
    with open(os.path.join(REPO, "configs", "model", "wgan_gp.yaml")) as a, open(work / "mine/model/wgan_gp.yaml") as b:
        assert a.read() == b.read()

    # train by config names, from the installed package
    geo = Geometry.regular(3, 4, [0.0, 5.0, 10.0, 20.0, 50.0, 100.0], name="small")
    write_toy_showers(str(work / "showers.h5"), geo, 300, seed=0)
    prep = run("prep-train", "showers.h5", "-o", "train.h5", "--geometry", geo.to_json())
    assert prep.returncode == 0, prep.stderr
    fit = run("fit", *small_model_args("train.h5"), "--trainer.max_steps", "6")
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert list(work.glob("logs/fastsim/version_0/checkpoints/last.ckpt"))
    assert run("demo", "--help").returncode == 0
