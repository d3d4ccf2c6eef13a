"""Every committed trainer config is parsed and instantiated by `fastsim fit` (accelerator swapped for
CPU), and the SLURM script's own command line trains with 2 processes under a simulated SLURM job.

The GPU configs cannot run here as they are (no GPU); what is checked is that they parse with the
committed model and data configs, that their options reach the Trainer, and that the DDP and SLURM
paths really start a 2-process run (gloo on CPU) that finishes and writes the checkpoints.
"""

from __future__ import annotations

import glob
import os
import random
import stat
import subprocess
import sys

import pytest
from test_training import REPO, tensors_file  # noqa: F401 - the module-scoped training tensors fixture

from fastsim.models.io import load_generator

CFG = os.path.join(REPO, "configs")
SMALL = [
    "--data.batch_size", "32", "--data.num_workers", "0",
    "--model.init_args.generator_hidden", "[16, 32]", "--model.init_args.critic_hidden", "[32, 32]",
    "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
    "--trainer.enable_progress_bar", "false",
]  # fmt: skip


#: what a DDP run (Lightning, torch.distributed) leaves in os.environ; a child process that inherits
#: them believes it was launched as one rank of an existing group and waits for the others
_DIST_VARS = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK",
              "LOCAL_WORLD_SIZE", "PL_GLOBAL_SEED", "PL_SEED_WORKERS")


@pytest.fixture(autouse=True)
def _restore_environment():
    """The in-process DDP runs set MASTER_PORT, WORLD_SIZE …: give every test the environment it started with."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def _fit_argv(trainer_cfg: str, train_file: str, *extra: str) -> list[str]:
    return [
        "fit",
        "--config", f"{CFG}/model/wgan_gp.yaml",
        "--config", f"{CFG}/data/photons.yaml",
        "--config", f"{CFG}/trainer/{trainer_cfg}",
        "--data.train_file", train_file,
        *SMALL,
        *extra,
    ]  # fmt: skip


def _checkpoints(root) -> list[str]:
    return sorted(glob.glob(str(root / "logs" / "fastsim" / "*" / "checkpoints" / "*.ckpt")))


@pytest.mark.parametrize(
    ("trainer_cfg", "swap"),
    [
        ("cpu.yaml", []),
        ("gpu.yaml", ["--trainer.accelerator", "cpu"]),
        ("ddp.yaml", ["--trainer.accelerator", "cpu", "--trainer.devices", "1"]),
        ("multinode.yaml", ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.num_nodes", "1"]),
    ],
)
def test_trainer_config_parses_instantiates_and_trains(trainer_cfg, swap, tensors_file, tmp_path, monkeypatch) -> None:  # noqa: F811
    from fastsim.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    for var in [v for v in os.environ if v.startswith("SLURM_")]:
        monkeypatch.delenv(var)
    assert main(_fit_argv(trainer_cfg, tensors_file, *swap, "--trainer.max_steps", "12")) == 0
    names = [os.path.basename(p) for p in _checkpoints(tmp_path)]
    assert "last.ckpt" in names, names
    model = load_generator(next(p for p in _checkpoints(tmp_path) if p.endswith("last.ckpt")))
    assert model.hparams.generator_hidden == (16, 32)
    # the config's own settings reached the run (saved next to the checkpoints by LightningCLI)
    saved = tmp_path / "logs" / "config.yaml"
    import yaml

    trainer = yaml.safe_load(open(saved))["trainer"]
    assert trainer["accelerator"] == "cpu"
    if trainer_cfg != "cpu.yaml":
        assert trainer["precision"] == "32-true"
    if trainer_cfg in ("ddp.yaml", "multinode.yaml"):
        assert trainer["strategy"] == "ddp_find_unused_parameters_true"


def _env_without_slurm() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in _DIST_VARS}
    env.update(OMP_NUM_THREADS="1", WANDB_MODE="disabled", PYTHONWARNINGS="ignore")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


@pytest.mark.slow
def test_ddp_config_trains_with_two_cpu_processes(tensors_file, tmp_path) -> None:  # noqa: F811
    """configs/trainer/ddp.yaml as committed but for the accelerator: Lightning starts rank 1 itself."""
    argv = _fit_argv("ddp.yaml", tensors_file, "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.max_steps", "12")
    proc = subprocess.run([sys.executable, "-m", "fastsim.cli", *argv], cwd=tmp_path, env=_env_without_slurm(),
                          capture_output=True, text=True, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in out, out[-3000:]
    assert any(p.endswith("last.ckpt") for p in _checkpoints(tmp_path))


FAKE_SRUN = '''#!{python}
"""srun stand-in: start SLURM_NTASKS copies of the command with their SLURM rank variables, as srun does."""
import os, subprocess, sys
procs = []
for rank in range(int(os.environ["SLURM_NTASKS"])):
    env = dict(os.environ, SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank), SLURM_NODEID="0")
    procs.append(subprocess.Popen(sys.argv[1:], env=env))
sys.exit(max(p.wait() for p in procs))
'''


@pytest.mark.slow
def test_slurm_script_command_line_trains_with_two_tasks(tensors_file, tmp_path) -> None:  # noqa: F811
    """scripts/slurm_fit.sh itself, run as sbatch would on one node with 2 tasks (CPU, gloo)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text(FAKE_SRUN.format(python=sys.executable))
    srun.chmod(srun.stat().st_mode | stat.S_IXUSR)
    os.symlink(CFG, tmp_path / "configs")  # the script names configs/… relative to the checkout
    env = _env_without_slurm()
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env.update(
        SLURM_JOB_ID=str(random.randint(1000, 8999)), SLURM_JOB_NAME="fastsim-fit", SLURM_NTASKS="2",
        SLURM_NTASKS_PER_NODE="2", SLURM_JOB_NUM_NODES="1", SLURM_NNODES="1", SLURM_NODELIST="127.0.0.1",
    )  # fmt: skip
    extra = ["--data.train_file", tensors_file, "--trainer.accelerator", "cpu", "--trainer.max_steps", "12", *SMALL]
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "slurm_fit.sh"), *extra], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    # both tasks joined one process group of 2 that Lightning took from the SLURM variables
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in out and "GLOBAL_RANK: 1, MEMBER: 2/2" in out, out[-3000:]
    assert any(p.endswith("last.ckpt") for p in _checkpoints(tmp_path))
    assert (tmp_path / "logs").is_dir()
