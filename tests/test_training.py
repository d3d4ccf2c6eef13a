"""DataModule streaming/sharding, resume, model selection, divergence, and `fastsim fit` end to end."""

from __future__ import annotations

import glob
import os

import lightning as L
import numpy as np
import pytest
import torch
from conftest import depth_profile, write_toy_showers
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from fastsim.data.datamodule import ShowerDataModule, _TrainStream, _ValStream, make_split
from fastsim.data.tensors import prepare_training_tensors
from fastsim.errors import FastsimError, InputFileError
from fastsim.geometry import Geometry
from fastsim.models.io import load_generator
from fastsim.models.vae import ShowerVAE
from fastsim.models.wgan_gp import WGANGP
from fastsim.training.callbacks import Chi2ModelSelection, DivergenceCheck, energy_groups

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GEO = Geometry.regular(3, 4, [0.0, 5.0, 10.0, 20.0, 50.0, 100.0], name="small")  # 60 voxels
ENERGIES = 1024.0 * 2.0 ** np.arange(4)  # 1 – 8 GeV


def write_showers(path: str, n: int, seed: int) -> None:
    """Toy photon-like showers in MeV (:func:`conftest.toy_showers`): a depth profile, a ~90 %
    sampling response with a resolution that improves with energy, and per-voxel fluctuations;
    discrete energies."""
    write_toy_showers(path, GEO, n, seed, energies=ENERGIES, profile=depth_profile(GEO), shape=4.0, empty=0.2,
                      spread=lambda e: 0.05 * np.sqrt(1024.0 / e))  # fmt: skip


@pytest.fixture(scope="module")
def tensors_file(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("tensors")
    src = str(d / "showers.h5")
    write_showers(src, 600, seed=0)
    out = str(d / "train.h5")
    prepare_training_tensors([src], out, GEO, transform_config="divide", seed=3, progress=False)
    return out


def rows_of(tensors_file: str) -> dict[bytes, int]:
    from fastsim.data.tensors import TrainingTensors

    x = TrainingTensors(tensors_file).read()["x"]
    ids = {row.tobytes(): i for i, row in enumerate(x)}
    assert len(ids) == len(x)  # every row distinguishable
    return ids


def trainer(root: str, **kw) -> L.Trainer:
    args = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        num_sanity_val_steps=0,
    )
    args.update(kw)
    return L.Trainer(**args)


# --------------------------------------------------------------------------- data module


@pytest.mark.parametrize("world", [1, 2, 3])
def test_epoch_shards_disjoint_equal_and_outside_validation(tensors_file: str, world: int) -> None:
    dm = ShowerDataModule(
        tensors_file, batch_size=16, block_size=48, buffer_blocks=2, val_fraction=0.1, seed=5
    )
    ids = rows_of(tensors_file)
    split = make_split(len(dm.tensors), 0.1, 5, world)
    val = _ValStream(dm.tensors, split, 16, 0, 1)
    val_rows = {ids[r.numpy().tobytes()] for b in val for r in b["x"]}
    assert len(val_rows) == split.n_val == 60
    seen_by_epoch = []
    for epoch in (0, 1):
        per_rank = []
        for rank in range(world):
            ds = _TrainStream(dm.tensors, split, 16, dm.block_size, 2, 5, rank, world)
            ds.epoch = epoch
            batches = list(ds)
            assert len(batches) == len(ds) == 540 // (16 * world)  # equal on every rank: no DDP hang
            assert all(b["x"].shape == (16, GEO.n_voxels) for b in batches)
            per_rank.append([ids[r.numpy().tobytes()] for b in batches for r in b["x"]])
        flat = [i for rows in per_rank for i in rows]
        assert len(flat) == len(set(flat))  # disjoint across ranks, no repeats within an epoch
        assert not set(flat) & val_rows  # never a validation row
        assert len(flat) >= 540 - 16 * world + 1 - 16  # at most the last partial batches dropped
        seen_by_epoch.append(flat)
    assert seen_by_epoch[0] != seen_by_epoch[1]  # a new order every epoch


def test_workers_split_a_rank_without_overlap(tensors_file: str) -> None:
    dm = ShowerDataModule(tensors_file, batch_size=16, block_size=32, num_workers=2, val_fraction=0.1, seed=1)
    ids = rows_of(tensors_file)
    dm.setup("fit")
    loader = dm.train_dataloader()
    rows = [ids[r.numpy().tobytes()] for b in loader for r in b["x"]]
    single = ShowerDataModule(
        tensors_file, batch_size=16, block_size=32, num_workers=0, val_fraction=0.1, seed=1
    )
    single.setup("fit")
    rows_single = [ids[r.numpy().tobytes()] for b in single.train_dataloader() for r in b["x"]]
    assert len(rows) == len(set(rows)) == len(loader) * 16 == len(rows_single)
    assert set(rows) == set(rows_single)  # same rows this epoch, in a worker-dependent order
    # the same seed gives the same batches again
    assert rows == [ids[r.numpy().tobytes()] for b in dm.train_dataloader() for r in b["x"]]


def test_datamodule_exposes_file_metadata_and_rejects_bad_input(tensors_file: str, tmp_path) -> None:
    dm = ShowerDataModule(tensors_file)
    assert Geometry.from_dict(dm.geometry_config) == GEO
    assert dm.condition_config["class"] == "EnergyCondition" and dm.n_conditions == 1
    assert dm.condition_config["e_min"] == pytest.approx(ENERGIES[0])
    with pytest.raises(InputFileError, match="nothere.h5"):
        ShowerDataModule(str(tmp_path / "nothere.h5"))
    with pytest.raises(FastsimError, match="val_fraction"):
        ShowerDataModule(tensors_file, val_fraction=1.0)
    big = ShowerDataModule(tensors_file, batch_size=1024)
    with pytest.raises(FastsimError, match="fewer than one batch"):
        big.setup("fit")


def test_energy_groups() -> None:
    e = np.repeat([256.0, 512.0, 1024.0], [3, 4, 5]).astype(np.float32).astype(np.float64)
    groups = energy_groups(e)
    assert [g[0] for g in groups] == ["256MeV", "512MeV", "1024MeV"]
    assert [len(g[1]) for g in groups] == [3, 4, 5]
    cont = np.random.default_rng(0).uniform(1e3, 1e5, 1000)
    groups = energy_groups(cont, n_ranges=4)
    assert len(groups) == 4 and sum(len(g[1]) for g in groups) == 1000
    assert all(230 <= len(g[1]) <= 270 for g in groups)


# --------------------------------------------------------------------------- resume


def model_for(cls: type, dm: ShowerDataModule, **extra) -> L.LightningModule:
    kw = dict(geometry=dm.geometry_config, transform=dm.transform_config, condition=dm.condition_config)
    if cls is WGANGP:
        return WGANGP(**kw, n_critic=2, generator_hidden=(16, 32), critic_hidden=(32, 32), **extra)
    return ShowerVAE(
        **kw, latent_dim=4, encoder_hidden=(32,), decoder_hidden=(32,), n_importance_samples=4, **extra
    )


@pytest.mark.parametrize(
    "cls, extra",
    [
        (WGANGP, {}),
        (WGANGP, {"critic_features": "energy_layers", "feature_weight": 2.0}),
        (ShowerVAE, {}),
        (ShowerVAE, {"energy_head": True, "energy_hidden": (8,)}),
    ],
)
def test_resume_equals_uninterrupted(tensors_file: str, tmp_path, cls: type, extra: dict) -> None:
    def run(root: str, epochs: int, ckpt: str | None = None) -> L.LightningModule:
        L.seed_everything(11)  # weights initialised identically in both runs
        dm = ShowerDataModule(tensors_file, batch_size=32, block_size=64, seed=2)
        model = model_for(cls, dm, **extra)
        cb = [ModelCheckpoint(dirpath=root, save_last=True), Chi2ModelSelection(n_bins=10)]
        trainer(root, max_epochs=epochs, callbacks=cb).fit(model, datamodule=dm, ckpt_path=ckpt)
        return model

    straight = run(str(tmp_path / "a"), 2)
    run(str(tmp_path / "b"), 1)
    resumed = run(str(tmp_path / "c"), 2, ckpt=str(tmp_path / "b" / "last.ckpt"))
    for k, v in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=1e-6, atol=1e-7, msg=k)
    # and training did move the weights (the comparison is not trivially true)
    fresh = (L.seed_everything(11), model_for(cls, ShowerDataModule(tensors_file), **extra))[1]
    assert any(
        not torch.allclose(fresh.state_dict()[k], v)
        for k, v in straight.state_dict().items()
        if not k.startswith("features.")
    )


def test_vae_energy_head_trains_and_generates_the_sampled_energy(tensors_file: str, tmp_path) -> None:
    """The energy head's VAE: statistics fitted at setup, IS >= ELBO, and a generated shower's
    E_tot/E_inc is exactly m(c) + s(c)·u with u drawn from the head (the shape only distributes it)."""
    dm = ShowerDataModule(tensors_file, batch_size=32, block_size=64, seed=2)
    model = model_for(ShowerVAE, dm, energy_head=True, energy_hidden=(8,))
    assert model.encoder.net[0].in_features == GEO.n_voxels + 1 + 1  # [shape, u] + condition
    assert model.noise_dim == 4 + 1
    t = trainer(str(tmp_path), max_epochs=2, callbacks=[ModelCheckpoint(dirpath=str(tmp_path))])
    t.fit(model, datamodule=dm)
    m = t.callback_metrics
    assert float(m["val/log_likelihood_is"]) >= float(m["val/elbo"])
    (ckpt,) = glob.glob(str(tmp_path / "*.ckpt"))
    loaded = load_generator(ckpt)
    e_inc = torch.tensor(np.repeat(ENERGIES, 50), dtype=torch.float32)
    noise = loaded.sample_noise(len(e_inc), generator=torch.Generator().manual_seed(0))
    showers = loaded.export_module()(noise, e_inc[:, None])
    cond = loaded.conditions(e_inc)
    with torch.no_grad():
        mu_u, log_sigma_u = loaded.energy_head(noise[:, :4], cond)
        u = mu_u + torch.exp(log_sigma_u) * noise[:, 4]
        r = loaded.features.destandardise(u[:, None], cond[:, 0])[:, 0].clamp(min=0)
    torch.testing.assert_close(showers.sum(1) / e_inc, r, rtol=1e-4, atol=1e-6)
    assert float(r.std()) > 0  # the energy varies shower to shower


def test_critic_features_fitted_from_the_training_file(tensors_file: str, tmp_path) -> None:
    """With critic features the statistics are fitted at setup from the whole file (identical on
    every rank), the critic sees V + 1 + layers inputs, and the checkpoint alone restores them."""
    dm = ShowerDataModule(tensors_file, batch_size=32, block_size=64, seed=2)
    model = model_for(WGANGP, dm, critic_features="energy_layers")
    assert model.critic.net[0].in_features == GEO.n_voxels + 1 + GEO.n_layers + 1  # + condition
    trainer(str(tmp_path), max_epochs=1, callbacks=[ModelCheckpoint(dirpath=str(tmp_path))]).fit(
        model, datamodule=dm
    )
    feats = model.features
    assert feats.is_fitted and torch.allclose(feats.knots, torch.linspace(0, 1, len(ENERGIES)))
    # the fitted statistics are those of the file, energy by energy
    from fastsim.data.tensors import TrainingTensors

    rows = TrainingTensors(tensors_file).read()
    for i, c in enumerate(np.unique(rows["cond"][:, 0])):
        r = rows["x"][rows["cond"][:, 0] == c].sum(axis=1)
        assert float(feats.mean[i, 0]) == pytest.approx(r.mean(), rel=1e-5)
        assert float(feats.std[i, 0]) == pytest.approx(r.std(), rel=1e-3)
    (ckpt,) = glob.glob(str(tmp_path / "*.ckpt"))
    loaded = load_generator(ckpt)
    assert loaded.features.is_fitted
    torch.testing.assert_close(loaded.features.std, feats.std)
    # a plain DataLoader cannot fit the statistics: a clear error, not a silent unfitted critic
    plain = model_for(WGANGP, dm, critic_features="energy")
    with pytest.raises(FastsimError, match="energy features need the training data"):
        trainer(str(tmp_path / "p"), max_epochs=1).fit(plain, train_dataloaders=dm.train_dataloader())


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_mid_epoch_equals_uninterrupted(tensors_file: str, tmp_path, num_workers: int) -> None:
    """Step checkpoints in the middle of epochs 0 and 1 resume to the uninterrupted result:
    the loader's state records the batches already trained on and the noise follows global_step."""

    def run(root: str, ckpt: str | None = None) -> L.LightningModule:
        L.seed_everything(11)
        dm = ShowerDataModule(tensors_file, batch_size=32, block_size=64, seed=2, num_workers=num_workers)
        model = model_for(WGANGP, dm)  # 3 optimiser steps per batch, 16 batches per epoch
        cb = [ModelCheckpoint(dirpath=root, every_n_train_steps=15, save_top_k=-1, filename="{step}")]
        trainer(root, max_epochs=2, callbacks=cb).fit(model, datamodule=dm, ckpt_path=ckpt)
        return model

    straight = run(str(tmp_path / "a"))
    for step in (15, 60):  # batch 5 of epoch 0, batch 4 of epoch 1
        resumed = run(str(tmp_path / f"r{step}"), ckpt=str(tmp_path / "a" / f"step={step}.ckpt"))
        for k, v in straight.state_dict().items():
            torch.testing.assert_close(resumed.state_dict()[k], v, rtol=1e-6, atol=1e-7, msg=f"{step}: {k}")


# --------------------------------------------------------------------------- model selection, divergence


def test_chi2_selection_logs_every_energy_and_keeps_best(tensors_file: str, tmp_path) -> None:
    dm = ShowerDataModule(tensors_file, batch_size=32, seed=0)
    model = model_for(WGANGP, dm)
    best = ModelCheckpoint(dirpath=str(tmp_path), monitor="val/chi2_ndf_sum", mode="min", filename="best")
    t = trainer(str(tmp_path), max_epochs=2, limit_train_batches=2, callbacks=[Chi2ModelSelection(), best])
    t.fit(model, datamodule=dm)
    m = t.callback_metrics
    per_energy = [float(m[f"val/chi2_ndf_{e:.0f}MeV"]) for e in ENERGIES]
    assert all(v > 0 for v in per_energy)
    assert float(m["val/chi2_ndf_sum"]) == pytest.approx(sum(per_energy), rel=1e-5)
    assert best.best_model_score is not None and float(best.best_model_score) <= float(m["val/chi2_ndf_sum"])
    assert os.path.exists(best.best_model_path)


def test_high_level_selection_logs_the_separation_of_generated_vs_validation(tensors_file: str, tmp_path) -> None:
    """``high_level=True``: val/hlf_separation equals high_level_separation of the same samples
    (same seed, same validation showers, the geometry's readout threshold), and a checkpoint can
    monitor it."""
    from fastsim.metrics.selection import high_level_separation

    dm = ShowerDataModule(tensors_file, batch_size=32, seed=0)
    model = model_for(ShowerVAE, dm)
    sel = Chi2ModelSelection(high_level=True, threshold=0.5, seed=7)
    best = ModelCheckpoint(dirpath=str(tmp_path), monitor="val/hlf_separation", mode="min", filename="best")
    t = trainer(str(tmp_path), max_epochs=2, limit_train_batches=3, callbacks=[sel, best])
    t.fit(model, datamodule=dm)
    logged = float(t.callback_metrics["val/hlf_separation"])
    assert 0.0 < logged < 1.0 and os.path.exists(best.best_model_path)
    # recompute from the validation split and the same generation noise
    model.eval()
    val = np.concatenate([b["x"].numpy() for b in dm.val_dataloader()])
    e_val = np.concatenate([b["e_inc"].numpy() for b in dm.val_dataloader()])
    showers = model.to_showers(torch.from_numpy(val), torch.from_numpy(e_val)).numpy()
    g = torch.Generator().manual_seed(7)
    gen, e_gen = [], []
    for _, idx in energy_groups(e_val):
        e = torch.as_tensor(e_val[idx])
        gen.append(model.generate(e, generator=g).numpy())
        e_gen.append(e_val[idx])
    expected, per = high_level_separation(np.concatenate(gen), np.concatenate(e_gen), showers, e_val, GEO, 0.5)
    assert logged == pytest.approx(expected, rel=1e-4)
    assert "E_tot/E_inc" in per and "sparsity 0" in per


class _PoisonWeights(Callback):
    """Turns one critic weight into NaN after the given batch (as an overflowing step would)."""

    def __init__(self, at_batch: int) -> None:
        self.at_batch = at_batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if batch_idx == self.at_batch:
            with torch.no_grad():
                next(pl_module.critic.parameters()).view(-1)[0] = float("nan")


@pytest.mark.parametrize(
    "guard, message",
    [
        (DivergenceCheck(every_n_steps=1), "is NaN/inf after a training batch"),
        (DivergenceCheck(every_n_steps=100), "is NaN/inf when saving a checkpoint"),
        (None, "refusing to save it"),  # the system itself never writes NaN weights
    ],
)
def test_divergence_stops_and_keeps_last_good_checkpoint(tensors_file: str, tmp_path, guard, message) -> None:
    dm = ShowerDataModule(tensors_file, batch_size=32, seed=0)
    model = model_for(WGANGP, dm)  # n_critic 2: 3 optimiser steps per batch
    ckpt = ModelCheckpoint(dirpath=str(tmp_path), every_n_train_steps=3, save_top_k=-1, filename="{step}")
    callbacks = [_PoisonWeights(at_batch=3), *([guard] if guard else []), ckpt]
    t = trainer(str(tmp_path), max_epochs=1, callbacks=callbacks)
    with pytest.raises(FastsimError, match=r"training diverged: .*critic\.net\.0\.weight.* " + message):
        t.fit(model, datamodule=dm)
    saved = sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / "*.ckpt")))
    # batch 3 ends at step 12 with a NaN weight: its checkpoint is refused, step 9 is the last good one
    assert saved == ["step=3.ckpt", "step=6.ckpt", "step=9.ckpt"]
    good = load_generator(tmp_path / "step=9.ckpt")
    assert all(bool(torch.isfinite(v).all()) for v in good.state_dict().values() if v.is_floating_point())


# --------------------------------------------------------------------------- CLI


def child_processes() -> set[int]:
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True)}


def test_fastsim_fit_cli_end_to_end(tensors_file: str, tmp_path, monkeypatch, capfd) -> None:
    from fastsim.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    before = child_processes()
    cfg = os.path.join(REPO, "configs")
    argv = [
        "fit",
        "--config", f"{cfg}/model/wgan_gp.yaml",
        "--config", f"{cfg}/data/photons.yaml",
        "--config", f"{cfg}/trainer/cpu.yaml",
        "--data.train_file", tensors_file,
        "--data.batch_size", "32",
        "--data.num_workers", "0",
        "--model.init_args.generator_hidden", "[16, 32]",
        "--model.init_args.critic_hidden", "[32, 32]",
        "--trainer.max_steps", "36",  # 6 optimiser steps per batch: 6 batches
        "--trainer.limit_train_batches", "3",
        "--trainer.enable_progress_bar", "false",
        "--checkpoint.every_n_train_steps", "12",
    ]  # fmt: skip
    assert main(argv) == 0
    run_dirs = glob.glob(str(tmp_path / "logs" / "fastsim" / "*" / "checkpoints"))
    assert len(run_dirs) == 1
    names = sorted(os.listdir(run_dirs[0]))
    assert "last.ckpt" in names and "periodic-step=00000036.ckpt" in names
    (best,) = [n for n in names if n.startswith("best-epoch")]
    model = load_generator(os.path.join(run_dirs[0], best))
    assert isinstance(model, WGANGP) and model.hparams.generator_hidden == (16, 32)
    assert model.geometry == GEO  # linked from the data, stored in the checkpoint
    showers = model.generate(torch.tensor([1024.0, 8192.0]), generator=torch.Generator().manual_seed(0))
    assert showers.shape == (2, GEO.n_voxels) and bool((showers >= 0).all())
    assert glob.glob(str(tmp_path / "logs" / "wandb" / "offline-run-*"))  # wandb offline by default
    assert child_processes() <= before  # no wandb helper left running

    # a missing training file: one line, exit status 2 through the dispatcher
    from fastsim.cli import main as fastsim_main

    capfd.readouterr()
    assert fastsim_main(["fit", "--config", f"{cfg}/model/vae.yaml", "--data.train_file", "missing.h5"]) == 2
    assert capfd.readouterr().err.strip() == "fastsim fit: error: missing.h5: file not found"


def test_fit_cli_csv_logger_and_vae(tensors_file: str, tmp_path, monkeypatch) -> None:
    from fastsim.training.cli import main

    monkeypatch.chdir(tmp_path)
    cfg = os.path.join(REPO, "configs")
    argv = [
        "fit",
        "--config", f"{cfg}/model/vae.yaml",
        "--config", f"{cfg}/data/photons.yaml",
        "--config", f"{cfg}/trainer/cpu.yaml",
        "--config", f"{cfg}/logger/csv.yaml",
        "--data.train_file", tensors_file,
        "--data.num_workers", "0",
        "--data.batch_size", "64",
        "--model.init_args.encoder_hidden", "[32]",
        "--model.init_args.decoder_hidden", "[32]",
        "--trainer.max_epochs", "1",
        "--trainer.log_every_n_steps", "1",
        "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    assert main(argv) == 0
    (metrics,) = glob.glob(str(tmp_path / "logs" / "fastsim" / "version_0" / "metrics.csv"))
    with open(metrics) as f:
        header = f.readline().strip().split(",")
    for key in ("train/loss", "train/kl", "val/elbo", "val/log_likelihood_is", "val/chi2_ndf_sum"):
        assert key in header, key


def test_wgan_mean_shower_init_keeps_every_voxel_alive(tensors_file: str, tmp_path) -> None:
    """output_init: mean_shower starts the generator at the mean training shower (so no ReLU
    output starts dead), only at the first fit of fresh weights."""
    from fastsim.data.tensors import TrainingTensors

    L.seed_everything(5)
    dm = ShowerDataModule(tensors_file, batch_size=32, block_size=64, seed=2)
    model = model_for(WGANGP, dm, output_init="mean_shower")
    mean = TrainingTensors(tensors_file).read()["x"].mean(axis=0)
    trainer(str(tmp_path), max_steps=0 * 3, max_epochs=1, limit_train_batches=0).fit(model, datamodule=dm)
    torch.testing.assert_close(model.generator.last_linear().bias.double(), torch.from_numpy(mean).double(),
                               rtol=1e-5, atol=1e-9)  # fmt: skip
    e = torch.tensor(np.repeat(ENERGIES, 100), dtype=torch.float32)
    with torch.no_grad():
        showers = model.generate(e, generator=torch.Generator().manual_seed(0))
    frac = showers.sum(1) / e
    assert abs(float(frac.mean()) - float(mean.sum())) < 0.05 * float(mean.sum())  # a physical start
    assert float((showers > 0).float().mean()) > 0.5 * float((mean > 0).mean())  # most voxels alive
    # the default init starts far too energetic: the situation the option avoids
    L.seed_everything(5)
    default = model_for(WGANGP, dm)
    with torch.no_grad():
        hot = default.generate(e, generator=torch.Generator().manual_seed(0)).sum(1) / e
    assert float(hot.mean()) > 1.5 * float(mean.sum())
    # trained weights loaded from a checkpoint are never re-initialised by a later fit
    trained = model_for(WGANGP, dm, output_init="mean_shower")
    trained.on_load_checkpoint({})
    with torch.no_grad():
        trained.generator.last_linear().bias.fill_(0.5)
    trainer(str(tmp_path / "b"), max_epochs=1, limit_train_batches=0).fit(trained, datamodule=dm)
    assert bool(torch.all(trained.generator.last_linear().bias == 0.5))
