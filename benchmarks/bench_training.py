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

Roofline (CPU, one thread; ``--roofline-only`` skips the comparison above): the committed configs
(``configs/model/wgan_gp.yaml``, ``configs/model/vae.yaml``, batch 128 of ``configs/data/photons.yaml``)
are trained under a Trainer on the same synthetic batches. FLOPs of one update are counted from the
layer sizes as the update runs: every matrix product the update executes (forward, backward, and
for the WGAN-GP the gradient penalty's input gradient and its double backward, five critic steps
and one generator step per batch) is recorded with its shapes by a ``TorchDispatchMode``, and
counts ``2·m·k·n``; element-wise work (activations, losses, Adam) is not counted. The achieved
FLOP/s is that count over the measured CPU time of an update. The peak is measured at the same
sizes: each recorded product is timed alone with ``torch.mm``/``addmm`` on tensors of its shapes
and strides, one thread; peak = their FLOPs ÷ their summed time, i.e. what the update would reach
if it did nothing but its matrix products. achieved ÷ peak is therefore the fraction of the
update's time spent in matrix products at full speed; target >= 0.5. The same is printed for
larger batches (``--roofline-batches``), with a large square product for the machine's best case.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

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


# ------------------------------------------------------------------------------ roofline
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


class _Tensors:
    """The synthetic batches as the minimal ``TrainingTensors`` the models' data-fitted parts read."""

    def __init__(self, batches: list[dict[str, torch.Tensor]]) -> None:
        self.cols = {k: torch.cat([b[k] for b in batches]).cpu().numpy() for k in ("x", "cond", "e_inc")}

    def __len__(self) -> int:
        return len(self.cols["x"])

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        return {k: v[start:stop] for k, v in self.cols.items()}


def committed_model(kind: str, geo: Geometry, batches: list) -> L.LightningModule:
    """The committed config's system (its init_args), its data-fitted parts fitted on ``batches``."""
    import yaml

    name = "wgan_gp" if kind == "wgan" else "vae"
    init = yaml.safe_load((CONFIGS / "model" / f"{name}.yaml").read_text())["model"]["init_args"]
    torch.manual_seed(0)
    kw = dict(geometry=geo.to_dict(), transform=TRANSFORM, condition=CONDITION, **init)
    model = WGANGP(**kw) if kind == "wgan" else ShowerVAE(**kw)
    tensors = _Tensors(batches)
    if getattr(model, "features", None) is not None and not model.features.is_fitted:
        model.fit_features(tensors)
    if init.get("output_init") == "mean_shower":
        model.init_output_from_data(tensors)
    return model


def _trainer(limit: int | None = None, callbacks: list | None = None) -> L.Trainer:
    from fastsim.training.callbacks import DivergenceCheck

    return L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        limit_train_batches=limit, callbacks=[*(callbacks or []), DivergenceCheck(every_n_steps=50)],
    )  # fmt: skip


def record_matmuls(model: L.LightningModule, batch: dict) -> list[tuple[str, tuple, tuple]]:
    """(op, shapes, strides) of every matrix product one training update executes."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[tuple[str, tuple, tuple]] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            name = func.overloadpacket.__name__
            if name in ("mm", "addmm", "bmm"):
                ts = [a for a in args if isinstance(a, torch.Tensor)]
                self.calls.append((name, tuple(tuple(t.shape) for t in ts), tuple(t.stride() for t in ts)))
            return func(*args, **(kwargs or {}))

    with Record() as rec:
        _trainer(limit=1).fit(model, DataLoader([batch], batch_size=None))
    return rec.calls


def matmul_flops(op: str, shapes: tuple) -> int:
    """2·m·k·n of one product (the bias add of addmm, m·n, is not counted)."""
    a, b = shapes[-2], shapes[-1]
    if op == "bmm":
        return 2 * a[0] * a[1] * a[2] * b[2]
    return 2 * a[0] * a[1] * b[1]


def time_matmul(op: str, shapes: tuple, strides: tuple, min_seconds: float = 0.02) -> float:
    """CPU seconds of one product of these shapes and strides, alone (one thread)."""
    # the recorded layout (a transposed weight in the backward pass reads differently); a broadcast
    # bias (stride 0) as a plain tensor
    ts = [torch.empty_strided(sh, st).normal_() if 0 not in st else torch.randn(sh)
          for sh, st in zip(shapes, strides, strict=True)]  # fmt: skip
    fn = getattr(torch, op)
    fn(*ts)
    n, t0 = 0, time.thread_time()
    while True:
        fn(*ts)
        n += 1
        dt = time.thread_time() - t0
        if dt >= min_seconds and n >= 3:
            return dt / n


def optimizer_seconds(kind: str, model: L.LightningModule) -> float:
    """CPU seconds of the optimizer steps of one update (WGAN-GP: n_critic critic steps and one
    generator step; VAE: one), timed alone on random gradients: work that does not grow with the batch."""
    opts = model.configure_optimizers()
    opts = list(opts) if isinstance(opts, (list, tuple)) else [opts]
    uses = [model.hparams.n_critic, 1] if kind == "wgan" else [1]
    total = 0.0
    for opt, n_use in zip(opts, uses, strict=True):
        params = [p for g in opt.param_groups for p in g["params"]]
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
        t0, reps = time.thread_time(), 10
        for _ in range(reps):
            opt.step()
        total += n_use * (time.thread_time() - t0) / reps
    return total


def update_seconds(kind: str, geo: Geometry, batches: list, warmup: int) -> float:
    """Median CPU seconds of one training update of the committed config under a Trainer."""
    per = []
    for _ in range(2):
        model = committed_model(kind, geo, batches)
        timer = _Timer(warmup, "cpu")
        _trainer(callbacks=[timer]).fit(model, DataLoader(batches, batch_size=None))
        per.append((timer.t1[1] - timer.t0[1]) / (len(batches) - warmup))
    return statistics.median(per)


def roofline(kinds: list[str], batch_sizes: list[int], n_batches: int, warmup: int) -> None:
    import logging
    import warnings

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)  # one Trainer per measurement
    warnings.filterwarnings("ignore", module="lightning")
    geo = Geometry.builtin("1-photons")
    torch.set_num_threads(1)
    big = 1024
    a, b = torch.randn(big, big), torch.randn(big, big)
    square = 2 * big**3 / time_matmul("mm", ((big, big), (big, big)), (a.stride(), b.stride()), 0.5)
    print(f"\nroofline, one thread (torch threads {torch.get_num_threads()}), load avg {os.getloadavg()[0]:.2f}; "
          f"float32 {big}x{big}x{big} matmul: {square / 1e9:.1f} GFLOP/s")  # fmt: skip
    print(f"{'model':6s}{'batch':>6s}{'GFLOP/update':>14s}{'matmuls':>9s}{'update ms':>11s}{'of it matmul':>14s}"
          f"{'Adam':>9s}{'achieved':>12s}{'peak same sizes':>17s}{'ratio':>7s}")  # fmt: skip
    for kind in kinds:
        for bs in batch_sizes:
            batches = make_batches(geo.n_voxels, bs, max(4, n_batches * 128 // bs) + warmup, "cpu")
            calls = record_matmuls(committed_model(kind, geo, batches), batches[0])
            flops = sum(matmul_flops(op, sh) for op, sh, _ in calls)
            times: dict[tuple, float] = {}
            for op, sh, st in calls:
                if (op, sh, st) not in times:
                    times[(op, sh, st)] = time_matmul(op, sh, st)
            mm_sec = sum(times[c] for c in calls)
            peak = flops / mm_sec
            sec = update_seconds(kind, geo, batches, warmup)
            adam = optimizer_seconds(kind, committed_model(kind, geo, batches[:1]))
            achieved = flops / sec
            print(f"{kind:6s}{bs:6d}{flops / 1e9:14.3f}{len(calls):9d}{sec * 1e3:11.1f}{mm_sec * 1e3:11.1f} ms"
                  f"{adam * 1e3:6.1f} ms{achieved / 1e9:9.1f} GF/s{peak / 1e9:12.1f} GF/s{achieved / peak:7.2f}")  # fmt: skip
    print("ratio = achieved / peak = (matmul time alone) / (update time). The rest is element-wise work "
          "(activations, likelihood) and Python/autograd overhead, which grow more slowly with the batch than "
          "the products do, and the optimizer steps (Adam column, timed alone), which do not grow at all")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batches", type=int, default=60, help="batches per measurement (after warm-up)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--models", default="wgan,vae")
    ap.add_argument("--roofline-batches", default="128,512,2048", help="batch sizes of the roofline (CPU)")
    ap.add_argument("--roofline-only", action="store_true", help="skip the Lightning vs bare comparison")
    ap.add_argument("--no-roofline", action="store_true")
    args = ap.parse_args()
    if args.roofline_only:
        roofline(args.models.split(","), [int(b) for b in args.roofline_batches.split(",")], args.batches, args.warmup)
        return
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
    if args.device == "cpu" and not args.no_roofline:
        roofline(args.models.split(","), [int(b) for b in args.roofline_batches.split(",")], args.batches, args.warmup)


if __name__ == "__main__":
    main()
