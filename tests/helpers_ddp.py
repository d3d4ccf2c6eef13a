"""Two-process CPU DDP training run, launched as a script by tests/test_ddp.py.

    python tests/helpers_ddp.py TRAIN_FILE OUT_DIR MODEL STRATEGY

Lightning's "ddp" launcher re-runs this script for rank 1; each rank writes its final weights
and the rows it trained on to OUT_DIR/rank<r>.pt. An in-process DDP run inside pytest would
re-launch pytest itself, hence the script.
"""

from __future__ import annotations

import os
import sys

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from fastsim.data.datamodule import ShowerDataModule
from fastsim.models.vae import ShowerVAE
from fastsim.models.wgan_gp import WGANGP
from fastsim.training.callbacks import Chi2ModelSelection


class RecordRows(Callback):
    """Keeps every training row this rank saw (as bytes) to check the sharding."""

    def __init__(self) -> None:
        self.rows: list[bytes] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        self.rows += [r.numpy().tobytes() for r in batch["x"].cpu()]


def main(train_file: str, out_dir: str, model_name: str, strategy: str) -> None:
    L.seed_everything(7)  # identical initial weights on both ranks (DDP also broadcasts them)
    dm = ShowerDataModule(train_file, batch_size=16, block_size=32, seed=4)
    kw = dict(geometry=dm.geometry_config, transform=dm.transform_config, condition=dm.condition_config)
    if model_name == "wgan":
        model = WGANGP(**kw, n_critic=2, generator_hidden=(16, 32), critic_hidden=(32, 32))
    else:
        model = ShowerVAE(
            **kw, latent_dim=4, encoder_hidden=(32,), decoder_hidden=(32,), n_importance_samples=4
        )
    rows = RecordRows()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=strategy,
        max_epochs=2,
        limit_train_batches=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[rows, Chi2ModelSelection(n_bins=10)],
        default_root_dir=out_dir,
    )
    trainer.fit(model, datamodule=dm)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    torch.save(
        {
            "state_dict": model.state_dict(),
            "rows": rows.rows,
            "metrics": metrics,
            "world": trainer.world_size,
        },
        os.path.join(out_dir, f"rank{trainer.global_rank}.pt"),
    )


if __name__ == "__main__":
    main(*sys.argv[1:5])
