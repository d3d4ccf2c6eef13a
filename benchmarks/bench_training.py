"""Training throughput: the Lightning systems under a Trainer vs a bare PyTorch loop.

Both sides run the same update on the same networks (dataset-1 photon size, 368 voxels), the
same in-memory batches and batch size; WGAN-GP with n_critic critic steps (gradient penalty)
and one generator step per batch, the VAE with one ELBO step per batch. The bare loop is what
one would write by hand: no logging, no finiteness checks. The Lightning side is configured as
in training (metrics logged every 50 steps, divergence checks on), minus checkpoint writing and
the progress bar. Repeats alternate the two sides so that load on a shared machine hits both;
the ratio printed is the median of the per-repeat ratios. On the CPU both wall-clock and
process CPU time are measured: on a shared, loaded machine wall time mostly measures the other
processes, while CPU time (one thread, OMP_NUM_THREADS=1) is the work this process did.

    OMP_NUM_THREADS=1 python benchmarks/bench_training.py [--device cpu|cuda] [--batches 60] [--repeats 3]

On ``--device cuda`` it measures batch sizes 128 and 1024. Target: Lightning/bare >= 0.9.
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from fastsim.geometry import Geometry
from fastsim.models.losses import (
    critic_loss,
    generator_loss,
    gradient_penalty,
    kl_standard_normal,
)
from fastsim.models.vae import ShowerVAE
from fastsim.models.wgan_gp import WGANGP

CONDITION = {"class": "EnergyCondition", "e_min": 256.0, "e_max": 4194304.0}
TRANSFORM = {"class": "DivideByIncident"}


def make_batches(
    n_voxels: int, batch_size: int, n_batches: int, device: str
) -> list[dict[str, torch.Tensor]]:
    """Sparse non-negative energy fractions at the 15 dataset-1 photon energies, already on the device."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n_batches):
        e = 256.0 * 2.0 ** rng.integers(0, 15, batch_size)
        x = rng.exponential(0.01, (batch_size, n_voxels)) * (rng.random((batch_size, n_voxels)) > 0.5)
        cond = np.log(e / 256.0) / np.log(2.0**14)
        out.append(
            {
                "x": torch.tensor(x, dtype=torch.float32, device=device),
                "cond": torch.tensor(cond[:, None], dtype=torch.float32, device=device),
                "e_inc": torch.tensor(e, device=device),
            }
        )
    return out


def make_model(kind: str, geo: Geometry) -> L.LightningModule:
    torch.manual_seed(0)
    kw = dict(geometry=geo.to_dict(), transform=TRANSFORM, condition=CONDITION)
    return WGANGP(**kw) if kind == "wgan" else ShowerVAE(**kw)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _now() -> tuple[float, float]:
    """(wall seconds, process CPU seconds)."""
    return time.perf_counter(), time.process_time()


def _rates(n_events: int, t0: tuple[float, float], t1: tuple[float, float]) -> tuple[float, float]:
    """Events per second of wall time and of CPU time."""
    return n_events / (t1[0] - t0[0]), n_events / (t1[1] - t0[1])


class _Timer(L.Callback):
    """Wall time from the start of batch ``warmup`` to the end of training."""

    def __init__(self, warmup: int, device: str) -> None:
        self.warmup, self.device = warmup, device
        self.t0 = self.t1 = (0.0, 0.0)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        if batch_idx == self.warmup:
            _sync(self.device)
            self.t0 = _now()

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        _sync(self.device)
        self.t1 = _now()


def lightning_rate(kind: str, geo: Geometry, batches: list, warmup: int, device: str) -> tuple[float, float]:
    """Events per second (wall, CPU) of the system under a Trainer."""
    from fastsim.training.callbacks import DivergenceCheck

    model = make_model(kind, geo)
    timer = _Timer(warmup, device)
    trainer = L.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        max_epochs=1,
        logger=L.pytorch.loggers.CSVLogger("/tmp/fastsim_bench_logs"),
        log_every_n_steps=50,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[timer, DivergenceCheck(every_n_steps=50)],
    )
    trainer.fit(model, DataLoader(batches, batch_size=None))
    return _rates(sum(b["x"].shape[0] for b in batches[warmup:]), timer.t0, timer.t1)


def bare_wgan_rate(geo: Geometry, batches: list, warmup: int, device: str) -> tuple[float, float]:
    """The same WGAN-GP update written as a plain PyTorch loop."""
    model = make_model("wgan", geo).to(device)
    gen, critic, hp = model.generator, model.critic, model.hparams
    opt_c = torch.optim.Adam(critic.parameters(), lr=hp.lr_critic, betas=(hp.beta1, hp.beta2))
    opt_g = torch.optim.Adam(gen.parameters(), lr=hp.lr_generator, betas=(hp.beta1, hp.beta2))
    t0 = (0.0, 0.0)
    for i, b in enumerate(batches):
        if i == warmup:
            _sync(device)
            t0 = _now()
        x, cond = b["x"], b["cond"]
        n = x.shape[0]
        for _ in range(hp.n_critic):
            z = torch.randn(n, hp.latent_dim, device=device)
            with torch.no_grad():
                fake = gen(z, cond)
            loss = critic_loss(critic(x, cond), critic(fake, cond))
            pen, _ = gradient_penalty(critic, x, fake, cond, torch.rand(n, 1, device=device))
            loss = loss + hp.lambda_gp * pen
            opt_c.zero_grad(set_to_none=True)
            loss.backward()
            opt_c.step()
        for p in critic.parameters():
            p.requires_grad_(False)
        z = torch.randn(n, hp.latent_dim, device=device)
        g_loss = generator_loss(critic(gen(z, cond), cond))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        for p in critic.parameters():
            p.requires_grad_(True)
    _sync(device)
    return _rates(sum(b["x"].shape[0] for b in batches[warmup:]), t0, _now())


def bare_vae_rate(geo: Geometry, batches: list, warmup: int, device: str) -> tuple[float, float]:
    """The same VAE update written as a plain PyTorch loop."""
    model = make_model("vae", geo).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=model.hparams.lr)
    t0 = (0.0, 0.0)
    for i, b in enumerate(batches):
        if i == warmup:
            _sync(device)
            t0 = _now()
        x, cond = b["x"], b["cond"]
        mu, logvar = model.encoder(x, cond)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        loss = -(model.log_likelihood(x, z, cond).mean() - kl_standard_normal(mu, logvar).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return _rates(sum(b["x"].shape[0] for b in batches[warmup:]), t0, _now())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batches", type=int, default=60, help="batches per measurement (after warm-up)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--models", default="wgan,vae")
    args = ap.parse_args()
    geo = Geometry.builtin("1-photons")
    sizes = [128] if args.device == "cpu" else [128, 1024]
    print(f"device {args.device}, {geo.n_voxels} voxels, torch threads {torch.get_num_threads()}")
    for kind in args.models.split(","):
        for bs in sizes:
            batches = make_batches(geo.n_voxels, bs, args.batches + args.warmup, args.device)
            bare_fn = bare_wgan_rate if kind == "wgan" else bare_vae_rate
            lit, bare = [], []
            for _ in range(args.repeats):
                bare.append(bare_fn(geo, batches, args.warmup, args.device))
                lit.append(lightning_rate(kind, geo, batches, args.warmup, args.device))
            for j, clock in enumerate(("wall", "cpu")):
                if clock == "cpu" and args.device == "cuda":
                    continue  # GPU work is not process CPU time
                ratio = statistics.median(a[j] / b[j] for a, b in zip(lit, bare, strict=True))
                print(
                    f"{kind:5s} batch {bs:5d} {clock:4s}: lightning {statistics.median(r[j] for r in lit):9.0f} ev/s, "
                    f"bare {statistics.median(r[j] for r in bare):9.0f} ev/s, ratio {ratio:.3f} (target >= 0.9)"
                )


if __name__ == "__main__":
    main()
