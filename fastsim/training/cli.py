"""``fastsim fit``: train a generator with LightningCLI.

    fastsim fit --config configs/model/wgan_gp.yaml --config configs/data/photons.yaml \\
                --config configs/trainer/cpu.yaml [--trainer.max_epochs 10] [--ckpt_path last.ckpt]

The model is any :class:`~fastsim.models.base.ShowerGeneratorModule` (``--model WGANGP``,
``--model ShowerVAE`` or a ``class_path`` in a config); the data is a
:class:`~fastsim.data.datamodule.ShowerDataModule`. The geometry, the fitted transforms and the
number of conditions are linked from the data into the model at instantiation, so they are
never written twice. Always present and configurable: ``--checkpoint.*`` (periodic checkpoints,
``every_n_train_steps`` counts optimiser steps: n_critic + 1 per batch for the WGAN),
``--best_checkpoint.*`` (best ``val/chi2_ndf_sum``), ``--model_selection.*`` (χ²/ndf callback)
and ``--divergence.*``. The default logger is wandb in offline mode; ``--config configs/logger/csv.yaml``
switches to CSV.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

#: logger used unless the config or command line sets ``trainer.logger``
DEFAULT_LOGGER = {
    "class_path": "lightning.pytorch.loggers.WandbLogger",
    "init_args": {"offline": True, "project": "fastsim", "save_dir": "logs"},
}


def _cli_class() -> type:
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

    from fastsim.training.callbacks import Chi2ModelSelection, DivergenceCheck

    class FastsimCLI(LightningCLI):
        """LightningCLI with the data → model links and fastsim's callbacks."""

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            for src, dst in (
                ("data.geometry_config", "model.init_args.geometry"),
                ("data.transform_config", "model.init_args.transform"),
                ("data.condition_config", "model.init_args.condition"),
                ("data.n_conditions", "model.init_args.n_conditions"),
            ):
                parser.link_arguments(src, dst, apply_on="instantiate")
            parser.add_lightning_class_args(DivergenceCheck, "divergence")
            parser.add_lightning_class_args(Chi2ModelSelection, "model_selection")
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            parser.add_lightning_class_args(ModelCheckpoint, "best_checkpoint")
            parser.set_defaults(
                {
                    "trainer.logger": DEFAULT_LOGGER,
                    # periodic: the newest step checkpoint plus last.ckpt to resume from
                    "checkpoint.filename": "periodic-{step:08d}",
                    "checkpoint.every_n_train_steps": 3000,
                    "checkpoint.save_top_k": 1,
                    "checkpoint.save_last": True,
                    # model selection as FastCaloGAN: the lowest summed χ²/ndf of E_tot/E_inc
                    "best_checkpoint.monitor": "val/chi2_ndf_sum",
                    "best_checkpoint.mode": "min",
                    "best_checkpoint.save_top_k": 1,
                    "best_checkpoint.filename": "best-epoch{epoch:03d}-chi2sum{val/chi2_ndf_sum:.3f}",
                    "best_checkpoint.auto_insert_metric_name": False,
                }
            )

    return FastsimCLI


def run_fit(args: list[str]) -> Any:
    """Run LightningCLI ``fit`` with command-line style ``args`` (without "fit"); returns the CLI."""
    from fastsim.data.datamodule import ShowerDataModule
    from fastsim.models.base import ShowerGeneratorModule

    # imported so that `--model WGANGP` / `--model ShowerVAE` resolve by class name
    from fastsim.models.vae import ShowerVAE  # noqa: F401
    from fastsim.models.wgan_gp import WGANGP  # noqa: F401

    with warnings.catch_warnings():
        # Lightning 2.6 warns that step checkpoints of manually optimised modules hold the weights
        # after the step: that is what fastsim wants (a resumed run continues from them)
        warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
        # `fastsim fit` hands LightningCLI its own argument list on purpose (sys.argv holds "fit" too)
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        cli = _cli_class()(
            ShowerGeneratorModule,
            ShowerDataModule,
            subclass_mode_model=True,
            args=["fit", *args],
            seed_everything_default=0,
            auto_configure_optimizers=False,
            # the systems save complete hyper-parameters themselves (geometry, fitted transforms)
            load_from_checkpoint_support=False,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"fit": {"prog": "fastsim fit"}},
        )
    _finish_loggers(cli.trainer)
    return cli


def _finish_loggers(trainer: Any) -> None:
    # end wandb's run and stop its helper service now, not at interpreter exit, so that a
    # `fastsim fit` called from Python (a pipeline, a test) leaves no process behind
    from lightning.pytorch.loggers import WandbLogger

    used_wandb = False
    for logger in getattr(trainer, "loggers", []):
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish()
            used_wandb = True
    if used_wandb:
        import wandb

        wandb.teardown()


def main(argv: list[str] | None = None) -> int:
    """``fastsim fit …``: argv[0] is the command name. Returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "fit":
        argv = argv[1:]
    try:
        run_fit(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    return 0
