"""Generator networks and systems: penalties on analytic critics, real Trainer runs, checkpoints."""

from __future__ import annotations

import glob
import math
import os

import lightning as L
import numpy as np
import pytest
import torch
from conftest import trainer_kwargs
from torch import nn
from torch.utils.data import DataLoader

from fastsim.errors import FastsimError, InputFileError
from fastsim.geometry import Geometry
from fastsim.models.io import load_generator
from fastsim.models.losses import clip_weights_, gradient_penalty, zero_inflated_lognormal_log_prob
from fastsim.models.vae import ShowerVAE
from fastsim.models.wgan_gp import WGANGP

E_MIN, E_MAX = 1024.0, 65536.0
CONDITION = {"class": "EnergyCondition", "e_min": E_MIN, "e_max": E_MAX}
TRANSFORM = {"class": "DivideByIncident"}


def tiny_batches(geo: Geometry, n: int = 96, batch: int = 32, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Sparse non-negative energy fractions (about 60 % empty voxels) at 7 discrete energies."""
    rng = np.random.default_rng(seed)
    e_inc = E_MIN * 2.0 ** rng.integers(0, 7, n)
    x = rng.exponential(0.02, (n, geo.n_voxels)) * (rng.random((n, geo.n_voxels)) > 0.6)
    cond = np.log(e_inc / E_MIN) / np.log(E_MAX / E_MIN)
    out = []
    for i in range(0, n, batch):
        out.append(
            {
                "x": torch.tensor(x[i : i + batch], dtype=torch.float32),
                "cond": torch.tensor(cond[i : i + batch, None], dtype=torch.float32),
                "e_inc": torch.tensor(e_inc[i : i + batch]),
            }
        )
    return out


def make(cls: type, geo: Geometry, **kw) -> L.LightningModule:
    return cls(geometry=geo.to_dict(), transform=TRANSFORM, condition=CONDITION, **kw)


def fit(model: L.LightningModule, geo: Geometry, root: str, **trainer_kw) -> L.Trainer:
    """One short epoch (conftest's shrunk trainer) on :func:`tiny_batches`, writing a checkpoint."""
    data = tiny_batches(geo)
    kw = trainer_kwargs(default_root_dir=root, log_every_n_steps=1, enable_checkpointing=True, **trainer_kw)
    trainer = L.Trainer(**kw)
    trainer.fit(model, DataLoader(data, batch_size=None), DataLoader(data, batch_size=None))
    return trainer


# --------------------------------------------------------------------------- penalties


class LinearCritic(nn.Module):
    """h(x, c) = w·x + u·c: ‖∇_x h‖ = ‖w‖ everywhere."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)
        self.u = nn.Parameter(torch.tensor([3.0]))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return x @ self.w + cond @ self.u


@pytest.mark.parametrize("norm", [0.5, 1.0, 2.0, 3.7])
def test_gradient_penalty_on_linear_critic(norm: float) -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(12, generator=g)
    w = w / w.norm() * norm
    critic = LinearCritic(w)
    real, fake = torch.rand(64, 12, generator=g), torch.rand(64, 12, generator=g)
    cond, t = torch.rand(64, 1, generator=g), torch.rand(64, 1, generator=g)
    pen, grad_norm = gradient_penalty(critic, real, fake, cond, t)
    assert grad_norm.item() == pytest.approx(norm, rel=1e-5)
    assert pen.item() == pytest.approx((norm - 1.0) ** 2, rel=1e-4, abs=1e-8)
    one, _ = gradient_penalty(critic, real, fake, cond, t, one_sided=True)
    assert one.item() == pytest.approx(max(0.0, norm - 1.0) ** 2, rel=1e-4, abs=1e-8)
    # the penalty back-propagates into the critic weights: d/dw (‖w‖−1)² = 2(‖w‖−1) w/‖w‖
    pen.backward()
    expected = 2 * (norm - 1.0) * w / norm
    torch.testing.assert_close(critic.w.grad, expected, rtol=1e-4, atol=1e-6)
    # the condition is held fixed: its weight gets no gradient from the penalty
    assert critic.u.grad is None or float(critic.u.grad.abs().max()) == 0.0


def test_clip_weights_in_range() -> None:
    net = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 1))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(100)
    clip_weights_(net, 0.05)
    # compared in float32, the parameters' dtype: clamp_ puts them exactly on ±float32(0.05)
    for p in net.parameters():
        assert bool((p.detach().abs() <= 0.05).all())
    assert any(bool((p.detach().abs() == 0.05).any()) for p in net.parameters())


def test_zero_inflated_lognormal_is_normalised() -> None:
    # P(empty) + ∫_0^∞ (1−π) LogNormal dx = 1: integrate numerically in log space
    zero_logit, mu, log_sigma = torch.tensor(0.3), torch.tensor(-3.0), torch.tensor(-0.5)
    log_x = torch.linspace(-15, 8, 200001, dtype=torch.float64)
    x = torch.exp(log_x)
    dens = torch.exp(
        zero_inflated_lognormal_log_prob(x[:, None], zero_logit.double(), mu.double(), log_sigma.double())
    )
    continuous = torch.trapezoid(dens * x, log_x)  # dx = x d(log x)
    p_empty = torch.exp(zero_inflated_lognormal_log_prob(torch.zeros(1, 1), zero_logit, mu, log_sigma))
    assert float(continuous + p_empty) == pytest.approx(1.0, abs=1e-6)


# --------------------------------------------------------------------------- systems


@pytest.mark.parametrize("lipschitz", ["gp", "gp_one_sided"])
def test_wgan_trains_and_reloads(tmp_path, geo_small: Geometry, lipschitz: str) -> None:
    torch.manual_seed(0)
    model = make(WGANGP, geo_small, lipschitz=lipschitz, n_critic=3)
    assert model.critic.net[0].out_features == geo_small.n_voxels  # critic as wide as the voxels
    trainer = fit(model, geo_small, str(tmp_path))
    assert trainer.global_step == 2 * (3 + 1)  # n_critic + 1 optimiser steps per batch
    m = trainer.callback_metrics
    for key in (
        "train/critic_loss",
        "train/gen_loss",
        "train/wasserstein",
        "train/gradient_penalty",
        "train/grad_norm",
        "val/wasserstein",
    ):
        assert key in m and torch.isfinite(m[key]), key
    (ckpt,) = glob.glob(os.path.join(tmp_path, "**", "*.ckpt"), recursive=True)
    check_reloaded(ckpt, model, WGANGP, geo_small)


def test_wgan_weight_clipping(tmp_path, geo_small: Geometry) -> None:
    model = make(WGANGP, geo_small, lipschitz="clip", clip_value=0.02, n_critic=2)
    fit(model, geo_small, str(tmp_path))
    for p in model.critic.parameters():
        assert bool((p.detach().abs() <= 0.02).all())


@pytest.mark.parametrize("decode", ["mean", "sample", "sample_zeros"])
def test_vae_trains_and_reloads(tmp_path, geo_small: Geometry, decode: str) -> None:
    torch.manual_seed(0)
    model = make(
        ShowerVAE,
        geo_small,
        latent_dim=8,
        encoder_hidden=(32,),
        decoder_hidden=(32,),
        n_importance_samples=8,
        decode=decode,
    )
    assert model.noise_dim == 8 + {"sample": 2, "sample_zeros": 1}.get(decode, 0) * geo_small.n_voxels
    trainer = fit(model, geo_small, str(tmp_path), limit_train_batches=3)
    assert trainer.global_step == 3
    m = trainer.callback_metrics
    for key in ("train/loss", "train/kl", "train/reconstruction", "val/elbo", "val/log_likelihood_is"):
        assert key in m and torch.isfinite(m[key]), key
    assert float(m["val/log_likelihood_is"]) >= float(m["val/elbo"])
    (ckpt,) = glob.glob(os.path.join(tmp_path, "**", "*.ckpt"), recursive=True)
    check_reloaded(ckpt, model, ShowerVAE, geo_small)


def check_reloaded(ckpt: str, trained: L.LightningModule, cls: type, geo: Geometry) -> None:
    model = load_generator(ckpt)
    assert type(model) is cls and not model.training
    assert model.geometry == geo and model.latent_dim == trained.hparams.latent_dim
    for k, v in trained.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, msg=k)
    # Lightning's own loader works from the checkpoint alone as well
    assert isinstance(cls.load_from_checkpoint(ckpt, map_location="cpu"), cls)

    e_inc = torch.tensor([E_MIN, 4 * E_MIN, E_MAX, E_MAX], dtype=torch.float32)
    showers = model.generate(e_inc, generator=torch.Generator().manual_seed(7))
    assert showers.shape == (4, geo.n_voxels) and showers.dtype == torch.float32
    assert bool(torch.all(showers >= 0)) and bool(torch.all(torch.isfinite(showers)))
    # same seed, same showers; the exported module is the same function of the noise
    again = model.generate(e_inc, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(showers, again)
    noise = model.sample_noise(4, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(model.export_module()(noise, e_inc[:, None]), showers)
    # showers are in MeV: model-space fractions × E_inc
    with torch.no_grad():
        x = model.decode(noise, model.conditions(e_inc))
    torch.testing.assert_close(showers, x * e_inc[:, None])


def test_vae_sampling_decoder_draws_from_the_likelihood() -> None:
    from fastsim.models.components.vae import decode_mean, decode_sample

    n = 200000
    zero_logit = torch.full((n, 2), 0.0)
    zero_logit[:, 1] = -2.0  # P(empty) = 0.5 and 0.119
    mu, log_sigma = torch.full((n, 2), -3.0), torch.full((n, 2), -1.0)
    g = torch.Generator().manual_seed(0)
    x = decode_sample(
        zero_logit, mu, log_sigma, torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g)
    )
    empty = (x == 0).float().mean(0)
    torch.testing.assert_close(empty, torch.sigmoid(zero_logit[0]), atol=4e-3, rtol=0)
    # the non-empty values are log-normal with the decoder's μ, σ; the mean is the decoder mean
    logs = torch.log(x[:, 0][x[:, 0] > 0])
    assert float(logs.mean()) == pytest.approx(-3.0, abs=0.01)
    assert float(logs.std()) == pytest.approx(float(torch.exp(torch.tensor(-1.0))), rel=0.01)
    torch.testing.assert_close(x.mean(0), decode_mean(zero_logit, mu, log_sigma)[0], rtol=0.01, atol=0)
    # never more than the incident energy in one voxel
    big = decode_sample(
        torch.full((1, 1), -9.0),
        torch.zeros(1, 1),
        torch.ones(1, 1),
        torch.ones(1, 1),
        torch.full((1, 1), 6.0),
    )
    assert float(big) == 1.0


def test_generate_rejects_bad_energies(geo_small: Geometry) -> None:
    model = make(WGANGP, geo_small)
    for bad in ([-1.0], [0.0], [float("nan")], [float("inf")]):
        with pytest.raises(FastsimError, match="incident energies"):
            model.generate(torch.tensor(bad))


def test_vae_importance_sampling_bound(geo_small: Geometry) -> None:
    torch.manual_seed(3)
    model = make(ShowerVAE, geo_small, latent_dim=4, encoder_hidden=(16,), decoder_hidden=(16,))
    batch = tiny_batches(geo_small)[0]
    with torch.no_grad():
        elbo, ll = model.elbo_and_is(batch["x"], batch["cond"], k=64, rng=torch.Generator().manual_seed(0))
    assert elbo.shape == ll.shape == (32,)
    assert bool(torch.all(ll >= elbo - 1e-4))  # Jensen, sample set by sample set
    assert float((ll - elbo).mean()) > 0  # and strictly, for a posterior that is not exact
    # K = 1: the two estimates coincide
    with torch.no_grad():
        e1, l1 = model.elbo_and_is(batch["x"], batch["cond"], k=1, rng=torch.Generator().manual_seed(0))
    torch.testing.assert_close(e1, l1)


def test_nan_loss_stops_training_with_message(tmp_path, geo_small: Geometry) -> None:
    model = make(WGANGP, geo_small, n_critic=1)
    data = tiny_batches(geo_small)
    data[1]["x"][0, 0] = float("nan")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        log_every_n_steps=1,  # losses are checked on logged batches
        logger=False,
        enable_progress_bar=False,
        default_root_dir=str(tmp_path),
    )
    with pytest.raises(
        FastsimError,
        match=r"training diverged: the critic loss is nan \(on this or another rank\) at global step 2",
    ):
        trainer.fit(model, DataLoader(data, batch_size=None))
    # the first batch was applied, the NaN batch never reached the weights
    assert all(
        bool(torch.all(torch.isfinite(v))) for v in model.state_dict().values() if v.is_floating_point()
    )
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


# --------------------------------------------------------------------------- load_generator errors


def test_load_generator_errors(tmp_path, geo_small: Geometry) -> None:
    missing = tmp_path / "missing.ckpt"
    with pytest.raises(InputFileError, match="missing.ckpt: checkpoint not found"):
        load_generator(missing)
    corrupt = tmp_path / "corrupt.ckpt"
    # damaged bytes make the unpickler fail in many ways (IndexError, KeyError, ...): all one error
    for seed in range(40):
        corrupt.write_bytes(np.random.default_rng(seed).bytes(2000))
        with pytest.raises(InputFileError, match="corrupt.ckpt: not a readable PyTorch checkpoint"):
            load_generator(corrupt)
    corrupt.write_bytes(b"\x80\x02]q\x00(K\x01" + bytes(100))  # a legacy pickle cut short
    with pytest.raises(InputFileError, match="corrupt.ckpt: not a readable PyTorch checkpoint"):
        load_generator(corrupt)
    unrelated = tmp_path / "unrelated.ckpt"
    torch.save({"weights": torch.zeros(3)}, unrelated)
    with pytest.raises(InputFileError, match="not a Lightning checkpoint"):
        load_generator(unrelated)
    # a real Lightning checkpoint of something that is not a fastsim generator
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        logger=False,
        enable_progress_bar=False,
        default_root_dir=str(tmp_path),
    )
    from lightning.pytorch.demos.boring_classes import BoringModel

    trainer.fit(BoringModel())
    other = tmp_path / "boring.ckpt"
    trainer.save_checkpoint(other)
    with pytest.raises(InputFileError, match="not a fastsim generator checkpoint"):
        load_generator(other)
    # truncated: half of a real generator checkpoint
    model = make(WGANGP, geo_small)
    good = tmp_path / "good.ckpt"
    fit(model, geo_small, str(tmp_path / "run"))
    (path,) = glob.glob(str(tmp_path / "run" / "**" / "*.ckpt"), recursive=True)
    data = open(path, "rb").read()
    good.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match="good.ckpt: not a readable PyTorch checkpoint"):
        load_generator(good)
    # weights that do not match the stored hyper-parameters
    ckpt = torch.load(path, weights_only=True)
    ckpt["hyper_parameters"]["latent_dim"] = 7
    torch.save(ckpt, tmp_path / "mismatch.ckpt")
    with pytest.raises(InputFileError, match="mismatch.ckpt: checkpoint does not match WGANGP"):
        load_generator(tmp_path / "mismatch.ckpt")


def test_extra_conditions(geo_small: Geometry) -> None:
    torch.manual_seed(0)
    model = make(WGANGP, geo_small, n_conditions=3)
    e = torch.tensor([E_MIN, E_MAX])
    with pytest.raises(FastsimError, match=r"extra conditions of shape \(2, 2\)"):
        model.generate(e)
    extra = torch.tensor([[0.1, 0.9], [0.5, 0.2]])
    showers = model.generate(e, generator=torch.Generator().manual_seed(1), extra_conditions=extra)
    assert showers.shape == (2, geo_small.n_voxels)
    noise = model.sample_noise(2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(model.export_module()(noise, e[:, None], extra), showers)
    other = model.generate(e, generator=torch.Generator().manual_seed(1), extra_conditions=extra.flip(0))
    assert not torch.allclose(other, showers)  # the extra conditions reach the generator


def test_transform_and_output_activation_must_agree(geo_small: Geometry) -> None:
    log_chain = {
        "class": "Chain",
        "transforms": [{"class": "DivideByIncident"}, {"class": "LogTransform", "eps": 1e-6}],
    }
    with pytest.raises(FastsimError, match="output_activation 'relu' cannot produce"):
        WGANGP(geometry=geo_small.to_dict(), transform=log_chain, condition=CONDITION)
    model = WGANGP(
        geometry=geo_small.to_dict(), transform=log_chain, condition=CONDITION, output_activation="none"
    )
    showers = model.generate(torch.tensor([E_MIN]), generator=torch.Generator().manual_seed(0))
    assert bool((showers >= 0).all())  # exp(x) − eps clamped at 0, in MeV
    with pytest.raises(FastsimError, match="needs non-negative energy fractions"):
        ShowerVAE(geometry=geo_small.to_dict(), transform=log_chain, condition=CONDITION)


def test_vae_point_decoders() -> None:
    from fastsim.models.components.vae import decode_mean, decode_median

    zero_logit = torch.tensor([[-2.0, 1.0]])
    mu, log_sigma = torch.tensor([[-3.0, -1.0]]), torch.tensor([[-0.5, 0.2]])
    # mean of the mixture: (1 − π)·exp(μ + σ²/2); checked against a Monte Carlo sample of it
    g = torch.Generator().manual_seed(0)
    n = 400_000
    filled = torch.rand(n, 2, generator=g) > torch.sigmoid(zero_logit)
    x = filled * torch.exp(mu + torch.exp(log_sigma) * torch.randn(n, 2, generator=g))
    torch.testing.assert_close(
        decode_mean(zero_logit, mu, log_sigma), x.mean(0, keepdim=True), rtol=5e-3, atol=0
    )
    # median: the second voxel is mostly empty (π = sigmoid(1) > ½)
    torch.testing.assert_close(decode_median(zero_logit, mu), torch.tensor([[float(np.exp(-3.0)), 0.0]]))


def test_vae_median_decode_option(geo_small: Geometry) -> None:
    model = make(
        ShowerVAE, geo_small, latent_dim=4, encoder_hidden=(8,), decoder_hidden=(8,), decode="median"
    )
    e = torch.tensor([E_MIN, E_MAX])
    showers = model.generate(e, generator=torch.Generator().manual_seed(0))
    noise = model.sample_noise(2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model.export_module()(noise, e[:, None]), showers)
    with pytest.raises(FastsimError, match="decode must be one of"):
        make(ShowerVAE, geo_small, decode="mode")


def test_untrained_vae_starts_near_full_containment(geo_small: Geometry) -> None:
    torch.manual_seed(0)
    model = make(ShowerVAE, geo_small)
    e = torch.full((500,), 4096.0)
    response = model.generate(e, generator=torch.Generator().manual_seed(0)).sum(1) / e
    assert 0.3 < float(response.mean()) < 3.0  # not ~V as with log x ~ 0 everywhere


# --------------------------------------------------------------------------- critic energy features


def test_energy_features_standardise_per_energy_and_interpolate() -> None:
    from fastsim.models.components.features import EnergyFeatures

    rng = np.random.default_rng(0)
    c = rng.choice([0.0, 0.5, 1.0], 30000)
    # response 0.2 + 0.04·c, resolution 0.02 / (1 + 4c): a 5× narrower peak at the top energy
    r = 0.2 + 0.04 * c + 0.02 / (1 + 4 * c) * rng.standard_normal(c.size)
    x = np.stack([0.25 * r, 0.75 * r, np.zeros_like(r)], axis=1).astype(np.float32)  # two layers
    feats = EnergyFeatures([(0, 1), (1, 3)])
    chunks = [(torch.from_numpy(x[i : i + 7000]), c[i : i + 7000]) for i in range(0, c.size, 7000)]
    feats.fit_stream(chunks)
    torch.testing.assert_close(feats.knots, torch.tensor([0.0, 0.5, 1.0]))
    u = feats(torch.from_numpy(x), torch.from_numpy(c).float())
    assert u.shape == (c.size, 3)
    for k in (0.0, 0.5, 1.0):
        sel = torch.from_numpy(c == k)
        torch.testing.assert_close(u[sel].mean(0), torch.zeros(3), atol=1e-3, rtol=0)
        torch.testing.assert_close(u[sel].std(0), torch.ones(3), atol=1e-3, rtol=0)
    # between knots the mean and width are interpolated linearly in c
    mid = torch.tensor([0.25])
    x_mid = torch.tensor([[0.25 * 0.21, 0.75 * 0.21, 0.0]])
    m = (float(feats.mean[0, 0]) + float(feats.mean[1, 0])) / 2
    s = (float(feats.std[0, 0]) + float(feats.std[1, 0])) / 2
    assert float(feats(x_mid, mid)[0, 0]) == pytest.approx((0.21 - m) / s, rel=1e-4)
    # a state_dict restores an unfitted module of the same layout
    again = EnergyFeatures([(0, 1), (1, 3)])
    assert not again.is_fitted
    again.load_state_dict(feats.state_dict())
    torch.testing.assert_close(again(torch.from_numpy(x[:5]), torch.from_numpy(c[:5]).float()), u[:5])


def test_energy_features_continuous_spectrum_uses_equal_count_knots() -> None:
    from fastsim.models.components.features import CONTINUOUS_KNOTS, EnergyFeatures

    rng = np.random.default_rng(1)
    c = rng.random(50000)
    r = (0.3 + 0.01 * rng.standard_normal(c.size)).astype(np.float32)[:, None]
    feats = EnergyFeatures().fit_stream([(torch.from_numpy(r), c)])
    k = feats.knots.numpy()
    assert CONTINUOUS_KNOTS - 2 <= k.size <= CONTINUOUS_KNOTS and np.all(np.diff(k) > 0)
    np.testing.assert_allclose(feats.mean[:, 0].numpy(), 0.3, atol=1e-3)
    np.testing.assert_allclose(feats.std[:, 0].numpy(), 0.01, rtol=0.1)
    with pytest.raises(FastsimError, match="NaN/inf"):
        EnergyFeatures().fit_stream([(torch.tensor([[float("nan")]]), np.array([0.5]))])
    with pytest.raises(FastsimError, match="before fit"):
        EnergyFeatures()(torch.ones(2, 1), torch.zeros(2))


def test_wgan_critic_sees_standardised_energy_and_penalises_in_that_space(geo_small: Geometry) -> None:
    model = make(WGANGP, geo_small, critic_features="energy", feature_weight=3.0, n_critic=1)
    batches = tiny_batches(geo_small)
    x = torch.cat([b["x"] for b in batches])
    cond = torch.cat([b["cond"] for b in batches])
    e = torch.cat([b["e_inc"] for b in batches])
    model.features.fit_stream([(x, cond[:, 0].numpy())])
    aug = model.critic_input(x, cond, e)
    assert aug.shape == (x.shape[0], geo_small.n_voxels + 1)
    torch.testing.assert_close(aug[:, :-1], x)
    u = aug[:, -1] / 3.0  # the weight scales the feature
    for c in cond[:, 0].unique():
        sel = cond[:, 0] == c
        if int(sel.sum()) > 2:
            assert abs(float(u[sel].mean())) < 1e-4
    # the penalty is taken w.r.t. the augmented input: a critic that only reads the energy
    # feature with slope 1 has gradient norm exactly 1 there (none through the voxels)
    with torch.no_grad():
        model.critic.net[0].weight.zero_()
        model.critic.net[0].bias.fill_(1.0)  # ReLU active
        model.critic.net[0].weight[:, geo_small.n_voxels] = 0.0
        model.critic.net[0].weight[0, geo_small.n_voxels] = 1.0
        for layer in (model.critic.net[2], model.critic.net[4], model.critic.net[6]):
            layer.weight.zero_()
            layer.weight[0, 0] = 1.0
            layer.bias.fill_(1.0 if layer is not model.critic.net[6] else 0.0)
    out = model.critic_step(x[:32], cond[:32], torch.Generator().manual_seed(0), e[:32])
    assert float(out["grad_norm"]) == pytest.approx(1.0, abs=1e-5)
    assert float(out["gradient_penalty"]) == pytest.approx(0.0, abs=1e-8)


# --------------------------------------------------------------------------- hierarchical outputs


class ListTensors:
    """The ``len`` / ``read(start, stop)`` interface of TrainingTensors over in-memory batches."""

    def __init__(self, batches: list[dict[str, torch.Tensor]]) -> None:
        self.cols = {k: torch.cat([b[k] for b in batches]).numpy() for k in ("x", "cond", "e_inc")}

    def __len__(self) -> int:
        return len(self.cols["x"])

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        return {k: v[start:stop] for k, v in self.cols.items()}


def hierarchical(geo: Geometry, **kw) -> WGANGP:
    model = make(WGANGP, geo, output="hierarchical", **kw)
    tensors = ListTensors(tiny_batches(geo))
    model.prepare(tensors)  # what setup("fit") does with a data module's tensors
    return model


def test_hierarchical_generator_is_energy_consistent(geo_small: Geometry) -> None:
    torch.manual_seed(3)
    model = hierarchical(geo_small, output_init="default")
    gen = model.generator
    e_inc = torch.tensor([E_MIN, 8 * E_MIN, E_MAX] * 50)
    cond = model.conditions(e_inc)
    z = torch.randn(len(e_inc), model.latent_dim) * 5.0  # far out in the noise as well
    r, f_layer, f_vox = gen.parts(z, cond)
    torch.testing.assert_close(f_layer.sum(1), torch.ones(len(e_inc)))
    for a, b in gen.layer_slices:
        torch.testing.assert_close(f_vox[:, a:b].sum(1), torch.ones(len(e_inc)))
    x = gen(z, cond)
    assert bool((x >= 0).all())
    torch.testing.assert_close(x.sum(1), r)  # E_tot/E_inc is the emitted r, the layers share it
    for k, (a, b) in enumerate(gen.layer_slices):
        torch.testing.assert_close(x[:, a:b].sum(1), r * f_layer[:, k])
    # r is bounded by m + u_max·s of the training E_tot/E_inc at that energy: never E_tot >> E_inc
    stats = model.generator.total
    bound = stats.destandardise(torch.full((len(e_inc), 1), gen.u_max), cond[:, 0])[:, 0]
    assert bool((r <= bound + 1e-6).all())


def test_hierarchical_mean_shower_init_starts_at_the_mean(geo_small: Geometry) -> None:
    model = hierarchical(geo_small, output_init="mean_shower")
    tensors = ListTensors(tiny_batches(geo_small))
    mean = torch.from_numpy(tensors.cols["x"]).double().mean(0)
    z = torch.randn(64, model.latent_dim)
    x = model.generator(z, model.conditions(torch.full((64,), 4 * E_MIN))).double()
    shape = x.mean(0) / x.mean(0).sum()
    torch.testing.assert_close(shape, mean / mean.sum(), atol=2e-3, rtol=0.05)


def test_hierarchical_readout_threshold_zeroes_small_voxels_straight_through(geo_small: Geometry) -> None:
    model = hierarchical(geo_small, output_init="mean_shower", readout_threshold=5.0)
    e_inc = torch.full((16,), E_MIN)
    cond = model.conditions(e_inc)
    z = torch.randn(16, model.latent_dim)
    model.eval()
    mev = model.generate(e_inc, generator=torch.Generator().manual_seed(1))
    assert bool(((mev == 0) | (mev >= 5.0)).all()) and bool((mev == 0).any())
    model.train()
    x = model.generator(z, cond)
    assert bool(((x * E_MIN == 0) | (x * E_MIN >= 5.0 - 1e-4)).all())
    # the gradient of a zeroed voxel is that of the unthresholded one (straight-through)
    (g,) = torch.autograd.grad(x[:, 0].sum(), model.generator.last_linear().bias)
    assert float(g.abs().sum()) > 0
    # without straight-through (the response term): the same values, no gradient through zeroed voxels
    dead = (x == 0).all(dim=0)
    assert bool(dead.any())
    exact = model.generator(z, cond, straight_through=False)
    torch.testing.assert_close(exact, x.detach())
    (g,) = torch.autograd.grad(exact[:, dead].sum(), model.generator.last_linear().bias)
    assert float(g.abs().sum()) == 0


def test_hierarchical_trains_reloads_and_rejects_other_transforms(tmp_path, geo_small: Geometry) -> None:
    torch.manual_seed(0)
    model = hierarchical(
        geo_small,
        output_init="mean_shower",
        readout_threshold=1.0,
        critic_features="energy_layers",
        n_critic=2,
    )
    fit(model, geo_small, str(tmp_path))
    (ckpt,) = glob.glob(os.path.join(tmp_path, "**", "*.ckpt"), recursive=True)
    check_reloaded(ckpt, model, WGANGP, geo_small)
    with pytest.raises(FastsimError, match="hierarchical"):
        WGANGP(
            geometry=geo_small.to_dict(),
            condition=CONDITION,
            output="hierarchical",
            output_activation="none",
            transform={"class": "Chain", "transforms": [TRANSFORM, {"class": "LogTransform"}]},
        )
    with pytest.raises(FastsimError, match="output must be"):
        make(WGANGP, geo_small, output="pixels")


def test_hierarchical_voxel_noise_draws_voxels_around_the_shape(tmp_path, geo_small: Geometry) -> None:
    torch.manual_seed(0)
    model = hierarchical(geo_small, output_init="mean_shower", output_init_scale=0.01, voxel_noise=0.3)
    gen, v = model.generator, geo_small.n_voxels
    assert model.noise_dim == model.latent_dim + v
    e_inc = torch.full((256,), 4 * E_MIN)
    cond = model.conditions(e_inc)
    z = torch.randn(256, model.latent_dim)
    eps_a, eps_b = torch.randn(256, v), torch.randn(256, v)
    r_a, fl_a, fv_a = gen.parts(torch.cat([z, eps_a], 1), cond)
    r_b, fl_b, fv_b = gen.parts(torch.cat([z, eps_b], 1), cond)
    # the per-voxel draws move voxels within their layer, never E_tot or the layer energies
    torch.testing.assert_close(r_a, r_b)
    torch.testing.assert_close(fl_a, fl_b)
    for a, b in gen.layer_slices:
        torch.testing.assert_close(fv_a[:, a:b].sum(1), torch.ones(256))
    assert float((fv_a - fv_b).abs().max().detach()) > 1e-3
    # at the start σ_v = 0.3: log(f_a / f_b) within a layer is σ·(ε_a − ε_b) up to a per-event constant
    a, b = gen.layer_slices[0]
    d = (fv_a[:, a:b].log() - fv_b[:, a:b].log()) - (eps_a[:, a:b] - eps_b[:, a:b]) * 0.3
    assert float((d - d.mean(1, keepdim=True)).abs().max()) < 0.05
    # the widths are learned: a loss on the voxels reaches the σ outputs (reparameterised draw)
    x = gen(torch.cat([z, eps_a], 1), cond)
    (g,) = torch.autograd.grad((x[:, a:b] ** 2).sum(), gen.last_linear().bias)
    assert float(g[1 + gen.n_layers + v :].abs().sum()) > 0
    # trains, reloads, generates reproducibly with the wider noise
    fit(model, geo_small, str(tmp_path))
    (ckpt,) = glob.glob(os.path.join(tmp_path, "**", "*.ckpt"), recursive=True)
    check_reloaded(ckpt, model, WGANGP, geo_small)
    with pytest.raises(FastsimError, match="voxel_noise .* needs output: hierarchical"):
        make(WGANGP, geo_small, voxel_noise=0.3)
    with pytest.raises(FastsimError, match="voxel_noise"):
        make(WGANGP, geo_small, output="hierarchical", voxel_noise=-1.0)


def test_hierarchical_energy_noise_draws_the_total_energy(geo_small: Geometry) -> None:
    model = hierarchical(
        geo_small, output_init="mean_shower", output_init_scale=0.01, voxel_noise=0.3, energy_noise=True
    )
    gen, v = model.generator, geo_small.n_voxels
    assert model.noise_dim == model.latent_dim + v + 1
    e_inc = torch.full((4000,), 4 * E_MIN)
    cond = model.conditions(e_inc)
    z = model.sample_noise(4000, torch.Generator().manual_seed(3))
    with torch.no_grad():
        r, fl, fv = gen.parts(z, cond)
        z2 = z.clone()
        z2[:, -1] = torch.randn(4000, generator=torch.Generator().manual_seed(4))
        r2, fl2, fv2 = gen.parts(z2, cond)
    # the last column moves E_tot/E_inc only; at the start σ_u = 1: the training spread at that energy
    torch.testing.assert_close(fl, fl2)
    torch.testing.assert_close(fv, fv2)
    assert float((r - r2).abs().max()) > 0
    spread = gen.total.destandardise(torch.ones(1, 1), cond[:1, 0]) - gen.total.destandardise(
        torch.zeros(1, 1), cond[:1, 0]
    )
    assert float(r.std()) == pytest.approx(float(spread), rel=0.1)
    with pytest.raises(FastsimError, match="energy_noise needs output: hierarchical"):
        make(WGANGP, geo_small, energy_noise=True)


def test_prepare_takes_what_the_model_needs_from_the_tensors(tmp_path, geo_small: Geometry) -> None:
    """Explicit data: prepare(tensors) fits the features, starts the output at the mean shower and
    records the energy scale, so a plain DataLoader trains it (setup has nothing left to fetch)."""
    model = make(
        WGANGP, geo_small, output="hierarchical", output_init="mean_shower", critic_features="energy"
    )
    assert model.needs_training_data() and model.energy_scale == ""
    tensors = ListTensors(tiny_batches(geo_small))
    tensors.attrs = {"energy_scale": "em", "readout_threshold": 0.0}
    model.prepare(tensors)
    assert not model.needs_training_data() and model.features.is_fitted and model.energy_scale == "em"
    bias = model.generator.last_linear().bias.detach().clone()
    model.prepare(tensors)  # once: a second call keeps the (possibly trained) weights
    torch.testing.assert_close(model.generator.last_linear().bias, bias)
    trainer = fit(model, geo_small, str(tmp_path))
    assert trainer.global_step > 0
    (ckpt,) = glob.glob(os.path.join(tmp_path, "**", "*.ckpt"), recursive=True)
    assert torch.load(ckpt, weights_only=False)["fastsim_energy_scale"] == "em"


def test_shower_features_match_the_benchmark_definitions(geo_photons: Geometry) -> None:
    from fastsim.metrics.shapes import shower_features
    from fastsim.models.components.features import ShowerFeatures

    rng = np.random.default_rng(0)
    n, v = 40, geo_photons.n_voxels
    fractions = rng.exponential(0.002, (n, v)) * (rng.random((n, v)) > 0.5)
    fractions[:5, geo_photons.layer_slice(0)] = 0.0  # empty layers: centre and width 0
    slices = [(s.start, s.stop) for s in geo_photons.layer_slices]
    feats = ShowerFeatures(slices, *geo_photons.voxel_xy_center, sparsity_eps=1e-12)
    obs = feats.observables(torch.tensor(fractions, dtype=torch.float64)).numpy()
    ref = shower_features(fractions, np.ones(n), geo_photons)
    n_l = len(slices)
    assert obs.shape == (n, 1 + 6 * n_l) == (n, feats.n_features)
    plain = ShowerFeatures(slices, *geo_photons.voxel_xy_center)  # no sparsity by default
    assert plain.n_features == 1 + 5 * n_l
    np.testing.assert_allclose(plain.observables(torch.tensor(fractions)).numpy(), obs[:, : 1 + 5 * n_l])
    np.testing.assert_allclose(obs[:, 0], ref["e_tot"], rtol=1e-6)
    block = {
        key: obs[:, 1 + k * n_l : 1 + (k + 1) * n_l]
        for k, key in enumerate(("e_layer", "m1_x", "m1_y", "m2_x", "m2_y", "sparsity"))
    }
    np.testing.assert_allclose(block["e_layer"], ref["e_layer"], rtol=1e-6)
    np.testing.assert_allclose(block["sparsity"], ref["sparsity"], atol=1e-6)
    e_l = np.where(ref["e_layer"] > 0, ref["e_layer"], 1.0)
    for c in ("x", "y"):  # the moments give the benchmark's centres and widths
        np.testing.assert_allclose(block[f"m1_{c}"] / e_l, ref[f"center_{c}"], rtol=1e-6, atol=1e-6)
        width = np.sqrt(np.clip(block[f"m2_{c}"] / e_l - (block[f"m1_{c}"] / e_l) ** 2, 0, None))
        np.testing.assert_allclose(width, ref[f"width_{c}"], rtol=1e-5, atol=1e-3)
    # linear in the voxels: the slope of a moment is the voxel's coordinate, however little energy
    # the layer holds (a centre's slope would grow as 1/E_layer)
    x = torch.tensor(fractions[:1] * 1e-9, requires_grad=True)
    feats.observables(x)[:, 1 + n_l + 1].sum().backward()  # m1_x of layer 1
    sl = geo_photons.layer_slice(1)
    np.testing.assert_allclose(x.grad[0, sl].numpy(), geo_photons.voxel_xy_center[0][sl], rtol=1e-6)


def test_wgan_with_shape_features_trains(tmp_path, geo_small: Geometry) -> None:
    model = hierarchical(geo_small, output_init="mean_shower", critic_features="shapes_sparsity", n_critic=2)
    assert model.critic.net[0].in_features == geo_small.n_voxels + 1 + 6 * 3 + 1
    fit(model, geo_small, str(tmp_path))
    (ckpt,) = glob.glob(os.path.join(tmp_path, "**", "*.ckpt"), recursive=True)
    check_reloaded(ckpt, model, WGANGP, geo_small)


def test_vae_sample_zeros_draws_the_zero_mask() -> None:
    from fastsim.models.components.vae import decode_mean, decode_sample_zeros

    torch.manual_seed(0)
    n, v = 4000, 6
    zero_logit = torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0, 0.5]).expand(n, v)
    mu, log_sigma = torch.full((n, v), -4.0), torch.full((n, v), -1.0)
    x = decode_sample_zeros(zero_logit, mu, log_sigma, torch.randn(n, v))
    empty = (x == 0).double().mean(0)
    torch.testing.assert_close(empty, torch.sigmoid(zero_logit[0]).double(), atol=0.03, rtol=0)
    filled = x[x > 0]
    torch.testing.assert_close(
        filled, torch.full_like(filled, float(torch.exp(torch.tensor(-4.0 + 0.5 * math.exp(-2.0)))))
    )
    # on average the mean shower
    torch.testing.assert_close(x.mean(0), decode_mean(zero_logit, mu, log_sigma)[0], rtol=0.05, atol=0)


def test_wgan_log_critic_voxels(geo_small: Geometry) -> None:
    model = hierarchical(geo_small, output_init="mean_shower", critic_voxels="log", critic_log_scale=2.0)
    batches = tiny_batches(geo_small)
    x, cond, e = batches[0]["x"], batches[0]["cond"], batches[0]["e_inc"]
    seen = model.critic_input(x, cond, e)
    torch.testing.assert_close(seen, torch.log1p(x * e[:, None].float() / 2.0))
    out = model.critic_step(x, cond, torch.Generator().manual_seed(0), e)
    assert torch.isfinite(out["critic_loss"])
    with pytest.raises(FastsimError, match="critic_voxels"):
        make(WGANGP, geo_small, critic_voxels="sqrt")


def test_vae_prior_monte_carlo_estimates_the_same_likelihood_in_low_dimension(geo_small: Geometry) -> None:
    # one latent dimension: plain Monte Carlo from the prior converges, to what importance
    # sampling with q(z|x) gives (in 32 dimensions it does not: scripts/vae_log_likelihood.py)
    torch.manual_seed(1)
    model = make(ShowerVAE, geo_small, latent_dim=1, encoder_hidden=(16,), decoder_hidden=(16,))
    batch = tiny_batches(geo_small)[0]
    x, cond = batch["x"][:8], batch["cond"][:8]
    with torch.no_grad():
        _, ll = model.elbo_and_is(x, cond, k=4000, rng=torch.Generator().manual_seed(0))
        prior = model.log_likelihood_prior_mc(x, cond, k=20000, rng=torch.Generator().manual_seed(1))
        one = model.log_likelihood_prior_mc(x, cond, k=1, rng=torch.Generator().manual_seed(2))
    assert prior.shape == (8,)
    torch.testing.assert_close(prior, ll, atol=0.25, rtol=0)  # MC noise ~0.1; a lost log K would be 10
    assert float(one.mean()) < float(ll.mean())  # one prior draw: far below (Jensen, on average)


def test_critic_batch_std_shows_the_critic_a_too_narrow_spread(tmp_path, geo_small: Geometry) -> None:
    model = hierarchical(
        geo_small, output_init="mean_shower", critic_features="shapes", critic_batch_std=True
    )
    n_feat = model.features.n_features
    assert model.critic.net[0].in_features == geo_small.n_voxels + 2 * n_feat + model.n_conditions
    data = tiny_batches(geo_small)[0]
    x, cond = data["x"], data["cond"]
    e = model._batch_energies(cond, data.get("e_inc"))
    inp = model.critic_input(x, cond, e)
    v = geo_small.n_voxels
    u, spread = inp[:, v : v + n_feat], inp[:, v + n_feat :]
    # the same batch spread on every row, equal to the spread of the features themselves
    torch.testing.assert_close(spread, u.std(0, keepdim=True).expand_as(u))
    # showers squeezed towards their batch mean (a too-narrow generator) show a smaller spread
    narrow = model.critic_input(0.5 * x + 0.5 * x.mean(0, keepdim=True), cond, e)
    assert float(narrow[0, v + n_feat :].mean()) < float(spread[0].mean())
    # the generator receives a gradient through the spread alone
    z = model.sample_noise(x.shape[0], torch.Generator().manual_seed(0))
    fake = model.critic_input(model.generator(z, cond), cond, e)
    (g,) = torch.autograd.grad(fake[:, v + n_feat :].sum(), model.generator.last_linear().bias)
    assert float(g.abs().sum()) > 0
    # trains and reloads; needs critic features
    fit(model, geo_small, str(tmp_path))
    (ckpt,) = glob.glob(os.path.join(tmp_path, "**", "*.ckpt"), recursive=True)
    check_reloaded(ckpt, model, WGANGP, geo_small)
    with pytest.raises(FastsimError, match="critic_batch_std needs critic features"):
        make(WGANGP, geo_small, critic_batch_std=True)


def _reference(widths: np.ndarray, n: int = 700, chunk: int = 1000):
    """A ResponseReference of E_tot/E_inc ~ N(1, widths[g]) at len(widths) discrete conditions."""
    from fastsim.models.components.response import ResponseReference

    rng = np.random.default_rng(0)
    c = np.repeat(np.linspace(0.1, 0.9, len(widths)), n).astype(np.float32)
    r = 1.0 + np.repeat(widths, n) * rng.standard_normal(c.size)

    def chunks():
        for s in range(0, c.size, chunk):
            yield r[s : s + chunk], c[s : s + chunk, None]

    return ResponseReference().fit(chunks, seed=0)


def test_energy_distance_is_zero_in_expectation_only_for_geant4s_distribution() -> None:
    widths = np.linspace(0.02, 0.1, 9)
    ref = _reference(widths)
    assert ref.n_groups == 9 and ref.count.tolist() == [700] * 9
    torch.testing.assert_close(ref.scale, torch.tensor(widths, dtype=torch.float32), rtol=0.08, atol=0)
    # the sample does not depend on how the tensors are chunked
    other = _reference(widths, chunk=333)
    torch.testing.assert_close(other.quantiles, ref.quantiles)
    torch.testing.assert_close(other.cond, ref.cond)
    cond, groups = ref.sample_conditions(torch.Generator().manual_seed(0))
    assert cond.shape == (9 * 32, 1) and groups.tolist() == list(range(9))
    width = torch.tensor(widths, dtype=torch.float32)[groups].repeat_interleave(32)

    def mean_distance(scale: float, shift: float = 0.0) -> tuple[float, float]:
        g = torch.Generator().manual_seed(1)
        d = [
            float(
                ref.distance(1 + shift * width + scale * width * torch.randn(len(width), generator=g), groups)
            )
            for _ in range(300)
        ]
        return float(np.mean(d)), float(np.std(d) / np.sqrt(len(d)))

    right, err = mean_distance(1.0)
    assert abs(right) < 3 * err + 2e-3  # unbiased: zero for the reference distribution itself
    # larger for a generator 20 % too narrow or too wide, or 0.3 σ off in the mean (a sorted-sample
    # Wasserstein distance at m = 32 is smaller for the too-narrow one than for the right one)
    for scale, shift in ((0.8, 0.0), (1.2, 0.0), (1.0, 0.3)):
        d, e = mean_distance(scale, shift)
        assert d > right + 4 * (err + e), (scale, shift, d, right)


def test_response_weight_teaches_the_generator_its_resolution(tmp_path, geo_small: Geometry) -> None:
    model = hierarchical(geo_small, output_init="mean_shower", critic_features="energy", response_weight=1.0)
    ref = model.response
    assert ref.is_fitted and ref.n_groups == 7 and not model.needs_training_data()
    assert not make(WGANGP, geo_small, output="hierarchical", response_weight=1.0).response.is_fitted

    def spreads() -> tuple[float, torch.Tensor]:
        g = torch.Generator().manual_seed(5)
        cond, groups = ref.sample_conditions(g)
        z = torch.randn(cond.shape[0], model.noise_dim, generator=g)
        r = model.generator(z, cond).sum(1)
        return model.response.distance(r, groups).detach(), r.detach().reshape(len(groups), -1).std(1)

    # the mean-shower start (weights × 0.01) makes almost the same E_tot/E_inc at every draw
    d0, std0 = spreads()
    assert float((std0 / ref.scale).max()) < 0.3
    opt = torch.optim.Adam(model.generator.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for step in range(300):  # the response term alone: it must widen E_tot/E_inc towards the data's
        opt.zero_grad()
        model.response_distance(model.step_generator(step)).backward()
        opt.step()
    d1, std1 = spreads()
    assert float(d1) < 0.3 * float(d0)
    ratio = std1 / ref.scale
    assert float(ratio.min()) > 0.6 and float(ratio.max()) < 1.5, ratio
    # trains through Lightning (logged), reloads (the reference is not in the checkpoint)
    trainer = fit(model, geo_small, str(tmp_path))
    assert "train/response_distance" in trainer.logged_metrics
    assert not any(k.startswith("response.") for k in model.state_dict())
    (ckpt,) = glob.glob(os.path.join(tmp_path, "**", "*.ckpt"), recursive=True)
    check_reloaded(ckpt, model, WGANGP, geo_small)
    with pytest.raises(FastsimError, match="response_weight must be a finite number >= 0"):
        make(WGANGP, geo_small, output="hierarchical", response_weight=-1.0)
