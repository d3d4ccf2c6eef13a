"""The ``fastsim`` command in a subprocess, as a user runs it, and tiny inputs for it."""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fastsim(*args: str, cwd: str | None = None, timeout: float = 300, **popen) -> subprocess.CompletedProcess:
    """Run ``fastsim ARGS`` (this checkout's code) and return the finished process (text output)."""
    return subprocess.run(
        [sys.executable, "-m", "fastsim.cli", *map(str, args)],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.update(OMP_NUM_THREADS="1", WANDB_MODE="offline", MPLBACKEND="Agg", PYTHONWARNINGS="ignore")
    return env


def write_toy_showers(path: str, geometry, n: int, seed: int, energies=(1024.0, 2048.0, 4096.0, 8192.0)) -> None:
    """Toy showers in MeV at discrete energies (:func:`conftest.toy_showers`): a falling depth
    profile, 20 % of voxels empty, ~90 ± 5 % response."""
    from conftest import depth_profile
    from conftest import write_toy_showers as write

    write(path, geometry, n, seed, energies=energies, profile=depth_profile(geometry), shape=4.0, empty=0.2, spread=0.05)


def small_model_args(train_file: str, model: str = "wgan_gp") -> list[str]:
    """``fastsim fit`` options (packaged configs, shrunk) for a model small enough to train in
    seconds: the WGAN-GP (3 optimiser steps a batch) or the VAE."""
    from conftest import TINY_MODELS

    tiny = TINY_MODELS[{"wgan_gp": "WGANGP", "vae": "ShowerVAE"}[model]]
    sizes = [arg for key, value in tiny.items() for arg in (f"--model.init_args.{key}", str(value))]
    return [
        "--config", model, "--config", "photons", "--config", "cpu", "--config", "csv",
        "--data.train_file", train_file,
        "--data.batch_size", "32",
        "--data.num_workers", "0",
        *sizes,
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
    ]  # fmt: skip


def tiny_checkpoint(directory: str, tensors: str, name: str = "tiny.ckpt", weights_only: str | None = None) -> str:
    """A WGAN-GP (latent 4, widths 16) trained for 2 steps on ``tensors`` (energy, or energy and angle,
    as the tensors' condition columns), saved as a checkpoint."""
    import lightning as L

    from fastsim.data.datamodule import ShowerDataModule
    from fastsim.models.wgan_gp import WGANGP

    dm = ShowerDataModule(tensors, batch_size=32)
    L.seed_everything(0, verbose=False)
    model = WGANGP(geometry=dm.geometry_config, transform=dm.transform_config, condition=dm.condition_config,
                   n_conditions=dm.n_conditions, latent_dim=4, generator_hidden=(16,), critic_hidden=(16,), n_critic=1)  # fmt: skip
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, default_root_dir=directory)  # fmt: skip
    trainer.fit(model, datamodule=dm)
    path = os.path.join(directory, name)
    trainer.save_checkpoint(path)
    if weights_only:
        trainer.save_checkpoint(os.path.join(directory, weights_only), weights_only=True)
    return path
