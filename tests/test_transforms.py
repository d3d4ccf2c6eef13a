"""Invertible transforms: round trips, analytic values, configs, state_dict, streamed fitting."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from fastsim.data.transforms import (
    PRESETS,
    Chain,
    DivideByIncident,
    EnergyCondition,
    LogTransform,
    Standardize,
    build_transform,
    voxel_transform,
)
from fastsim.errors import FastsimError

N, V = 64, 30


@pytest.fixture
def data(rng):
    e = np.exp(rng.uniform(np.log(256.0), np.log(4.2e6), N))  # MeV, dataset-1 photon range
    s = (rng.dirichlet(np.full(V, 0.5), size=N) * (0.95 * e)[:, None]).astype(np.float32)
    s[rng.random(s.shape) < 0.4] = 0.0
    s[:, -1] = 0.0  # an always-empty voxel: Standardize must not divide by zero
    return torch.from_numpy(s), torch.from_numpy(e)


def _assert_round_trip(back: torch.Tensor, s: torch.Tensor, e: torch.Tensor) -> None:
    """float32 round trip: error within a few ulps of the scale each value went through.

    A voxel standardised in MeV carries absolute errors ~1e-7 x its column's spread, one divided by
    E_inc ~1e-7 x E_inc; 1e-5 of the larger of the two scales is far tighter than any wrong inverse.
    """
    scale = torch.maximum(s.abs().amax(0, keepdim=True), e.float()[:, None])
    err = (back - s).abs()
    assert back.dtype == s.dtype
    assert bool(torch.all(err <= 1e-5 * scale)), float((err / scale).max())


def _chains():
    return [
        DivideByIncident(),
        LogTransform(1e-6),
        Standardize(),
        Chain([DivideByIncident()]),
        Chain([DivideByIncident(), LogTransform(1e-6)]),
        Chain([DivideByIncident(), Standardize()]),
        Chain([DivideByIncident(), LogTransform(1e-6), Standardize()]),
        Chain([Standardize(), DivideByIncident(), Standardize()]),  # two stages fitted in sequence
    ]


# --------------------------------------------------------------------------- EnergyCondition


def test_energy_condition_analytic_values():
    c = EnergyCondition(e_min=256.0, e_max=4_194_304.0)
    e = torch.tensor([256.0, 4_194_304.0, 256.0 * 2**7], dtype=torch.float64)
    out = c(e)
    assert out.shape == (3, 1) and out.dtype == torch.float64
    # log2(4194304/256) = 14, so 256 * 2**7 is exactly half way
    torch.testing.assert_close(out[:, 0], torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64))
    torch.testing.assert_close(c(e[:, None]), out)  # (N, 1) input
    out32 = c(e.float())
    assert out32.dtype == torch.float32


def test_energy_condition_fit_round_trip_and_config(data):
    _, e = data
    c = EnergyCondition().fit(e)
    assert float(c.e_min) == float(e.min()) and float(c.e_max) == float(e.max())
    x = c(e)
    assert float(x.min()) == pytest.approx(0.0, abs=1e-12) and float(x.max()) == pytest.approx(1.0)
    torch.testing.assert_close(c.inverse(x), e, rtol=1e-12, atol=0)
    c2 = build_transform(json.loads(json.dumps(c.config())))
    assert isinstance(c2, EnergyCondition)
    torch.testing.assert_close(c2(e), x)


def test_energy_condition_streamed_fit_equals_full(data):
    _, e = data
    c = EnergyCondition()
    for chunk in torch.split(e, 10):
        c.partial_fit(chunk.numpy())
    c.finish_fit()
    ref = EnergyCondition().fit(e)
    assert c.config() == ref.config()


def test_energy_condition_errors():
    with pytest.raises(FastsimError, match="before fit"):
        EnergyCondition()(torch.ones(3))
    with pytest.raises(FastsimError, match="0 < e_min <= e_max"):
        EnergyCondition(e_min=-1.0, e_max=5.0)
    with pytest.raises(FastsimError, match="no incident energies"):
        EnergyCondition().partial_fit(np.array([])).finish_fit()
    single = EnergyCondition().fit(np.full(5, 1000.0))  # one energy: condition 0, still invertible
    assert torch.all(single(torch.full((2,), 1000.0, dtype=torch.float64)) == 0)
    torch.testing.assert_close(
        single.inverse(torch.zeros(2, 1, dtype=torch.float64)), torch.full((2,), 1000.0, dtype=torch.float64)
    )


def test_energy_condition_state_dict_round_trip(data):
    _, e = data
    c = EnergyCondition().fit(e)
    buf = io.BytesIO()
    torch.save(c.state_dict(), buf)
    buf.seek(0)
    fresh = EnergyCondition()
    assert not fresh.is_fitted
    fresh.load_state_dict(torch.load(buf))
    assert fresh.is_fitted
    torch.testing.assert_close(fresh(e), c(e))


# --------------------------------------------------------------------------- voxel transforms


def test_divide_by_incident_values(data):
    s, e = data
    x = DivideByIncident()(s, e)
    assert x.dtype == torch.float32 and x.shape == (N, V)
    torch.testing.assert_close(x.sum(1), (s.double().sum(1) / e).float(), rtol=1e-5, atol=1e-6)
    assert float(x.sum(1).max()) <= 0.95 + 1e-5
    torch.testing.assert_close(DivideByIncident()(s, e[:, None]), x)


def test_log_transform_values():
    t = LogTransform(eps=1e-3)
    x = t(torch.tensor([[0.0, 1.0 - 1e-3]]), None)
    torch.testing.assert_close(x, torch.tensor([[np.log(1e-3), 0.0]], dtype=torch.float32))


@pytest.mark.parametrize("idx", range(len(_chains())))
def test_round_trip_is_identity(data, idx):
    s, e = data
    t = _chains()[idx]
    t.fit(s, e)
    assert t.is_fitted
    x = t(s, e)
    assert x.shape == s.shape and torch.isfinite(x).all()
    back = t.inverse(x, e)
    _assert_round_trip(back, s, e)


@pytest.mark.parametrize("idx", range(len(_chains())))
def test_config_rebuilds_same_outputs(data, idx):
    s, e = data
    t = _chains()[idx].fit(s, e)
    cfg = json.loads(json.dumps(t.config()))  # must be JSON-able
    assert cfg["class"] == type(t).__name__
    t2 = build_transform(cfg)
    assert type(t2) is type(t)
    torch.testing.assert_close(t2(s, e), t(s, e))
    torch.testing.assert_close(t2.inverse(t(s, e), e), t.inverse(t(s, e), e))
    assert build_transform(json.dumps(cfg)).config() == t.config()


@pytest.mark.parametrize("idx", range(len(_chains())))
def test_state_dict_round_trip_into_unfitted_module(data, idx):
    s, e = data
    t = _chains()[idx].fit(s, e)
    buf = io.BytesIO()
    torch.save(t.state_dict(), buf)
    buf.seek(0)
    fresh = _chains()[idx]  # unfitted; Standardize does not know V yet
    fresh.load_state_dict(torch.load(buf))
    assert fresh.is_fitted
    torch.testing.assert_close(fresh(s, e), t(s, e))


def test_standardize_statistics(data):
    s, e = data
    t = Standardize().fit(s, e)
    x = t(s, e)
    mean, std = x[:, :-1].mean(0), x[:, :-1].std(0, unbiased=False)
    torch.testing.assert_close(mean, torch.zeros(V - 1), atol=1e-4, rtol=0)
    torch.testing.assert_close(std, torch.ones(V - 1), atol=1e-4, rtol=0)
    assert float(t.std[-1]) == 1.0  # constant voxel: std floored to 1
    assert torch.all(x[:, -1] == 0)


def test_streamed_fit_equals_in_memory_fit(data):
    s, e = data
    ref = Chain([DivideByIncident(), LogTransform(), Standardize()]).fit(s, e)
    passes = []

    def chunks():
        passes.append(1)
        return [(s[i : i + 9].numpy(), e[i : i + 9].numpy()) for i in range(0, N, 9)]

    streamed = Chain([DivideByIncident(), LogTransform(), Standardize()]).fit_stream(chunks)
    assert len(passes) == 1  # one pass: only one stage needs fitting
    torch.testing.assert_close(streamed.transforms[2].mean, ref.transforms[2].mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(streamed.transforms[2].std, ref.transforms[2].std, rtol=1e-6, atol=1e-6)
    nofit = Chain([DivideByIncident()]).fit_stream(chunks)
    assert len(passes) == 1 and nofit.is_fitted  # stateless chains read nothing


def test_chan_merge_matches_numpy_on_large_offsets(rng):
    """Per-voxel variance stays accurate with a mean far from 0 (naive sum of squares would not)."""
    x = (1e4 + rng.normal(0, 1e-2, size=(5000, 3))).astype(np.float64)
    t = Standardize()
    for i in range(0, 5000, 333):
        t.partial_fit(x[i : i + 333])
    t.finish_fit()
    np.testing.assert_allclose(t.std.numpy(), x.std(0), rtol=1e-4)


def test_unfitted_standardize_raises(data):
    s, e = data
    with pytest.raises(FastsimError, match="before fit"):
        Standardize()(s, e)


def test_presets_and_errors(data):
    s, e = data
    for name in PRESETS:
        t = voxel_transform(name).fit(s, e)
        _assert_round_trip(t.inverse(t(s, e), e), s, e)
    assert voxel_transform(None).config() == {"class": "Chain", "transforms": [{"class": "DivideByIncident"}]}
    with pytest.raises(FastsimError, match="unknown transform 'nope'"):
        voxel_transform("nope")
    with pytest.raises(FastsimError, match="unknown transform class 'Nope'"):
        build_transform({"class": "Nope"})
    with pytest.raises(FastsimError, match="bad LogTransform config"):
        build_transform({"class": "LogTransform", "bogus": 1})
    with pytest.raises(FastsimError, match="not a voxel transform"):
        voxel_transform({"class": "EnergyCondition", "e_min": 1.0, "e_max": 2.0})


def test_transforms_trace_to_onnx_graph(data):
    """Fitted state is in buffers: a traced module reproduces the eager outputs."""
    s, e = data
    t = Chain([DivideByIncident(), LogTransform(), Standardize()]).fit(s, e)
    c = EnergyCondition().fit(e)

    class Wrap(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.t, self.c = t, c

        def forward(self, x, e_inc):
            return self.t.inverse(x, e_inc), self.c(e_inc)

    w = Wrap()
    x = t(s, e)
    traced = torch.jit.trace(w, (x[:8], e[:8]))
    out_traced = traced(x[8:20], e[8:20])
    out_eager = w(x[8:20], e[8:20])
    torch.testing.assert_close(out_traced[0], out_eager[0])
    torch.testing.assert_close(out_traced[1], out_eager[1])


def test_transforms_export_to_onnx_with_dynamic_batch(tmp_path, data):
    """Fitted buffers become ONNX constants: onnxruntime reproduces inverse() and the condition."""
    ort = pytest.importorskip("onnxruntime")
    s, e = data
    t = voxel_transform("log-standardize").fit(s, e)
    c = EnergyCondition().fit(e)

    class Wrap(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.t, self.c = t, c

        def forward(self, x, e_inc):
            return self.t.inverse(x, e_inc), self.c(e_inc)

    w = Wrap().eval()
    x, e32 = t(s, e), e.float()[:, None]  # the export contract: e_inc (n, 1) float32 MeV
    path = tmp_path / "t.onnx"
    torch.onnx.export(
        w, (x[:4], e32[:4]), str(path), dynamo=False, input_names=["x", "e_inc"],
        output_names=["showers", "cond"], dynamic_axes={"x": {0: "n"}, "e_inc": {0: "n"}},
    )  # fmt: skip
    out = ort.InferenceSession(str(path)).run(None, {"x": x[4:20].numpy(), "e_inc": e32[4:20].numpy()})
    ref = w(x[4:20], e32[4:20])
    np.testing.assert_allclose(out[0], ref[0].numpy(), rtol=1e-5, atol=1e-6 * float(ref[0].abs().max()))
    np.testing.assert_allclose(out[1], ref[1].numpy(), atol=1e-6)


def test_loading_an_unfitted_state_dict_stays_unfitted(data):
    s, e = data
    for fresh in (EnergyCondition(), Standardize()):
        target = type(fresh)()
        target.load_state_dict(fresh.state_dict())
        assert not target.is_fitted
        with pytest.raises(FastsimError, match="before fit"):
            target(s, e) if isinstance(target, Standardize) else target(e)


def test_scalar_buffer_shape_mismatch_is_reported(data):
    _, e = data
    c = EnergyCondition()
    with pytest.raises(RuntimeError, match="size mismatch"):
        c.load_state_dict(
            {"e_min": torch.ones(3, dtype=torch.float64), "e_max": torch.ones(3, dtype=torch.float64)}
        )
