"""Metrics on analytic cases: every expected number here follows from the construction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastsim.metrics.compare import (
    chi2_ndf,
    compare_distributions,
    fastcalogan_binning,
    mean_ratio,
    reference_binning,
    separation_power,
    separation_power_counts,
    separation_power_floor,
    wasserstein,
    width_ratio,
)
from fastsim.metrics.response import (
    compare_response,
    energy_groups,
    energy_response,
    layer_response,
    summarize,
)
from fastsim.metrics.shapes import shower_features, voxel_spectrum_counts, voxel_spectrum_edges

# ----------------------------------------------------------------------------- compare.py


def test_fastcalogan_binning_is_three_rms_around_the_mean(rng):
    ref = rng.normal(0.95, 0.02, size=20_000)
    edges = fastcalogan_binning(ref)
    assert edges.shape == (31,)
    assert edges[0] == pytest.approx(ref.mean() - 3 * ref.std())
    assert edges[-1] == pytest.approx(ref.mean() + 3 * ref.std())
    assert np.allclose(np.diff(edges), np.diff(edges)[0])
    # a degenerate reference still gives increasing edges
    assert np.all(np.diff(fastcalogan_binning(np.full(10, 2.0), n_bins=5)) > 0)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="non-finite"):
        separation_power([1.0, np.nan], [1.0, 2.0], 10)
    with pytest.raises(ValueError, match="empty"):
        chi2_ndf([], [1.0, 2.0], 10)
    with pytest.raises(ValueError, match="increasing"):
        chi2_ndf([1.0], [1.0, 2.0], [1.0, 1.0, 0.5])


def test_identical_samples_have_zero_separation_and_chi2(rng):
    x = rng.normal(size=5000)
    sep, unc = separation_power(x, x, 40)
    assert sep == 0.0
    assert unc > 0  # the bootstrap still sees the statistical spread
    chi2, ndf = chi2_ndf(x, x, fastcalogan_binning(x))
    assert chi2 == 0.0 and ndf == 29


def test_disjoint_samples_have_separation_one(rng):
    ref = rng.uniform(0, 1, size=3000)
    gen = rng.uniform(2, 3, size=3000)
    # the reference binning runs over [0, 1]: the generated sample has no entries in it
    assert separation_power(gen, ref, 20)[0] == 1.0
    # with a binning that covers both, still exactly 1
    sep, _ = separation_power(gen, ref, np.linspace(0, 3, 31))
    assert sep == pytest.approx(1.0)
    chi2, ndf = chi2_ndf(gen, ref, 20)
    assert chi2 == math.inf and ndf == 0


def test_chi2_ndf_is_one_for_independent_draws_of_one_distribution(rng):
    # χ²/ndf of a single pair fluctuates by sqrt(2/ndf) ≈ 0.26; averaging 60 pairs gives ≈ 0.034
    ratios = []
    for _ in range(60):
        ref = rng.normal(1.0, 0.05, size=4000)
        gen = rng.normal(1.0, 0.05, size=2500)  # different sizes: the test must normalise
        chi2, ndf = chi2_ndf(gen, ref, fastcalogan_binning(ref))
        assert ndf == 29
        ratios.append(chi2 / ndf)
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.12)


def test_chi2_ndf_detects_a_shift(rng):
    ref = rng.normal(1.0, 0.05, size=10_000)
    gen = rng.normal(1.02, 0.05, size=10_000)  # a 0.4 σ shift
    chi2, ndf = chi2_ndf(gen, ref, fastcalogan_binning(ref))
    assert chi2 / ndf > 10


def test_separation_power_of_independent_draws_matches_the_floor(rng):
    vals = []
    for _ in range(40):
        vals.append(separation_power(rng.normal(size=5000), rng.normal(size=5000), np.linspace(-3, 3, 31))[0])
    floor = separation_power_floor(5000, 5000, 30)
    assert floor == pytest.approx(0.25 * 2 / 5000 * 29)
    assert np.mean(vals) == pytest.approx(floor, rel=0.15)


def test_separation_power_uncertainty_matches_the_spread(rng):
    edges = np.linspace(-3, 4, 36)
    vals, uncs = [], []
    for _ in range(60):
        v, u = separation_power(rng.normal(0.3, 1, 4000), rng.normal(size=4000), edges, seed=1)
        vals.append(v)
        uncs.append(u)
    assert np.mean(uncs) == pytest.approx(np.std(vals, ddof=1), rel=0.3)


def test_separation_power_of_known_histograms():
    # p = (1/2, 1/2, 0), q = (0, 1/2, 1/2): ½ [(1/2)²/(1/2) + 0 + (1/2)²/(1/2)] = 1/2
    gen = [0.5, 1.5]
    ref = [1.5, 2.5]
    sep, _ = separation_power(gen, ref, [0.0, 1.0, 2.0, 3.0], n_bootstrap=0)
    assert sep == pytest.approx(0.5)


def test_ratios_and_wasserstein(rng):
    ref = rng.normal(10.0, 2.0, size=50_000)
    gen = 1.02 * rng.normal(10.0, 2.0, size=50_000)
    m, mu = mean_ratio(gen, ref)
    assert abs(m - 1.02) < 3 * mu
    assert mu == pytest.approx(math.sqrt(2) * 2 / 10 / math.sqrt(50_000), rel=0.05)
    w, wu = width_ratio(gen, ref)
    assert abs(w - 1.02) < 3 * wu
    # W1 of a pure translation is the translation
    assert wasserstein(ref + 0.3, ref) == pytest.approx(0.3)


def test_compare_distributions_has_every_key(rng):
    ref = rng.normal(size=2000)
    out = compare_distributions(rng.normal(size=1500), ref, bins=reference_binning(ref, 25))
    for key in (
        "separation_power", "separation_power_unc", "separation_power_floor", "chi2", "ndf", "chi2_ndf",
        "wasserstein", "mean_ratio", "mean_ratio_unc", "width_ratio", "width_ratio_unc", "edges",
    ):
        assert key in out
    assert out["ndf"] == 29 and len(out["edges"]) == 26
    assert out["n_generated"] == 1500 and out["n_reference"] == 2000


# ----------------------------------------------------------------------------- response.py

DS1_ENERGIES = 256.0 * 2.0 ** np.arange(15)  # CaloChallenge dataset 1: 256 MeV … 4.2 TeV


def test_energy_groups_detects_discrete_and_continuous(rng):
    e = rng.choice(DS1_ENERGIES, size=3000)
    g = energy_groups(e)
    assert g.kind == "discrete" and g.n_groups == 15
    # float32 storage rounding still matches
    idx = g.assign(e.astype(np.float32))
    assert np.all(idx >= 0) and np.all(g.energies[idx] == e)
    assert g.assign(np.array([300.0]))[0] == -1
    cont = np.exp(rng.uniform(np.log(1e3), np.log(1e6), size=5000))
    gc = energy_groups(cont, n_bins=6)
    assert gc.kind == "binned" and gc.n_groups == 6
    ic = gc.assign(cont)
    assert np.all(ic >= 0)  # the extremes land inside
    assert np.all((cont >= gc.edges[ic]) & (cont <= gc.edges[ic + 1]))
    # log-uniform: about equal counts per log bin
    assert np.bincount(ic).min() > 0.8 * 5000 / 6
    assert len(gc.keys()) == 6 and len(gc.labels()) == 6


def test_resolution_of_a_gaussian_is_recovered(rng):
    sigma, mu = 0.05, 0.9
    res, uncs = [], []
    for _ in range(50):
        s = summarize(rng.normal(mu, sigma, size=2000))
        res.append(s["resolution"])
        uncs.append(s["resolution_unc"])
    assert np.mean(res) == pytest.approx(sigma / mu, rel=0.01)
    # the delta-method uncertainty describes the spread over repeats
    assert np.mean(uncs) == pytest.approx(np.std(res, ddof=1), rel=0.25)
    s = summarize(rng.normal(mu, sigma, size=2000), n_bootstrap=200, seed=3)
    assert s["resolution_unc"] == pytest.approx(np.mean(uncs), rel=0.25)


def test_response_recovers_a_two_percent_scale(rng, geo_small):
    n = 4000
    e = rng.choice([1000.0, 10_000.0, 100_000.0], size=n)
    frac = rng.normal(0.9, 0.03, size=n)
    # showers: a random per-voxel split of E = frac × E_inc
    w = rng.dirichlet(np.ones(geo_small.n_voxels), size=n)
    ref = w * (frac * e)[:, None]
    e2 = rng.choice([1000.0, 10_000.0, 100_000.0], size=n)
    gen = 1.02 * rng.dirichlet(np.ones(geo_small.n_voxels), size=n) * (rng.normal(0.9, 0.03, size=n) * e2)[:, None]
    groups = energy_groups(e)
    r_ref = energy_response(e, ref.sum(1), groups)
    r_gen = energy_response(e2, gen.sum(1), groups)
    for a, b in zip(r_gen, r_ref, strict=True):
        c = compare_response(a, b)
        assert abs(c["response_ratio"] - 1.02) < 3 * c["response_ratio_unc"]
        assert c["response_ratio_unc"] < 0.003
        assert abs(c["resolution_ratio"] - 1.0) < 3 * c["resolution_ratio_unc"]


def test_layer_response_fractions(geo_small):
    # every shower puts 60% / 30% / 10% of 0.8 E_inc into the three layers
    e = np.array([1000.0, 1000.0, 5000.0])
    layers = np.array([0.6, 0.3, 0.1]) * 0.8
    el = e[:, None] * layers[None, :]
    out = layer_response(e, el, energy_groups(e))
    assert out["n"].tolist() == [2, 1]
    assert np.allclose(out["frac_inc"], layers[None, :])
    assert np.allclose(out["frac_tot"], [0.6, 0.3, 0.1])
    assert np.allclose(out["frac_inc_resolution"][0], 0.0)  # identical showers: no spread
    assert np.all(np.isnan(out["frac_inc_resolution"][1]))  # one shower: undefined


def test_layer_resolution_of_gaussian_fractions(rng, geo_small):
    n = 20_000
    e = np.full(n, 1000.0)
    f = np.stack([rng.normal(0.5, 0.05, n), rng.normal(0.3, 0.06, n), rng.normal(0.1, 0.02, n)], axis=1)
    out = layer_response(e, f * e[:, None], energy_groups(e))
    expected = np.array([0.05 / 0.5, 0.06 / 0.3, 0.02 / 0.1])
    assert np.all(np.abs(out["frac_inc_resolution"][0] - expected) < 4 * out["frac_inc_resolution_unc"][0])


# ----------------------------------------------------------------------------- shapes.py


def test_single_voxel_shower_centre_is_the_voxel_centre(geo_photons):
    geo = geo_photons
    x, y = geo.voxel_xy_center
    r = geo.voxel_r_center
    for v in (0, 10, geo.layer_offsets[1] + 37, geo.n_voxels - 1):
        shower = np.zeros((1, geo.n_voxels))
        shower[0, v] = 123.0
        f = shower_features(shower, [1000.0], geo)
        layer = geo.voxel_layer[v]
        assert f["center_x"][0, layer] == pytest.approx(x[v])
        assert f["center_y"][0, layer] == pytest.approx(y[v])
        assert f["center_r"][0, layer] == pytest.approx(r[v])
        assert f["width_x"][0, layer] == 0 and f["width_r"][0, layer] == 0
        assert f["e_layer"][0, layer] == 123.0 and f["e_tot"][0] == 123.0
        assert f["sparsity"][0, layer] == pytest.approx(1 / geo.layers[layer].n_voxels)
        # empty layers: exactly 0, never NaN
        others = np.arange(geo.n_layers) != layer
        for key in ("center_x", "center_y", "center_r", "width_x", "width_y", "width_r", "sparsity"):
            assert np.all(f[key][0, others] == 0)
            assert np.all(np.isfinite(f[key]))


def test_two_voxel_width(geo_small):
    # two voxels of equal energy in the same α bin at r = 2.5 and 7.5 mm: width_r = 2.5 mm
    s = np.zeros((1, geo_small.n_voxels))
    s[0, 0] = s[0, 1] = 5.0
    f = shower_features(s, [100.0], geo_small)
    assert f["center_r"][0, 0] == pytest.approx(5.0)
    assert f["width_r"][0, 0] == pytest.approx(2.5)
    assert f["sparsity"][0, 0] == pytest.approx(2 / 20)
    assert shower_features(s, [100.0], geo_small, threshold=5.0)["sparsity"][0, 0] == 0.0


def test_voxel_spectrum_counts():
    edges = voxel_spectrum_edges(1e-3, 1e3, 6)
    s = np.array([[0.0, 5e-4, 0.01, 0.5, 0.5, 2e3]])
    counts, below, above = voxel_spectrum_counts(s, edges)
    assert counts.sum() == 3 and below == 2 and above == 1


def test_clip_counts_outliers_against_the_generator(rng):
    ref = rng.normal(size=5000)
    gen = np.concatenate([rng.normal(size=4500), np.full(500, 50.0)])  # 10 % far outliers
    edges = reference_binning(ref, 30)
    dropped, _ = separation_power(gen, ref, edges)
    clipped, _ = separation_power(gen, ref, edges, clip=True)
    assert dropped < 0.02  # invisible without clipping
    assert clipped > 0.04  # the last bin now holds the outliers
    out = compare_distributions(gen, ref, bins=edges, clip=True)
    assert out["separation_power"] == clipped
    assert sum(out["hist_generated"]) == pytest.approx(1.0)
    assert separation_power_counts([1, 0], [0, 1]) == 1.0
    assert separation_power_counts([2, 2], [1, 1]) == 0.0



def test_chi2_ndf_clip_counts_outliers_against_a_too_wide_sample():
    from fastsim.metrics.compare import chi2_ndf, fastcalogan_binning

    rng = np.random.default_rng(7)
    ref = rng.normal(1.0, 0.01, 5000)
    wide = rng.normal(1.0, 0.3, 5000)  # 30x wider: ~97 % of it lies outside ±3 RMS of ref
    edges = fastcalogan_binning(ref)
    chi2_in, ndf_in = chi2_ndf(wide, ref, edges)
    chi2_all, ndf_all = chi2_ndf(wide, ref, edges, clip=True)
    assert chi2_all / ndf_all > 10 * chi2_in / ndf_in
    same, ndf_same = chi2_ndf(rng.normal(1.0, 0.01, 5000), ref, edges, clip=True)
    assert same / ndf_same < 2.0


# --------------------------------------------------------------------------- model selection by high-level features


def _toy_showers(geo, n, rng, width=1.0, scale=1.0):
    """Showers whose radial profile falls with r/width, Poisson-like voxel fluctuations."""
    r = geo.voxel_r_center
    e = rng.choice([1024.0, 4096.0], n)
    base = np.exp(-r / (10.0 * width))
    s = rng.gamma(2.0, 0.5, (n, geo.n_voxels)) * base
    s *= (scale * 0.9 * e / s.sum(axis=1))[:, None]
    return s, e


def test_high_level_separation_identical_shifted_and_floor(geo_small, rng):
    from fastsim.metrics.selection import high_level_separation, high_level_table

    ref, e_ref = _toy_showers(geo_small, 3000, rng)
    same, e_same = _toy_showers(geo_small, 3000, rng)
    wide, e_wide = _toy_showers(geo_small, 3000, rng, width=1.5)
    hot, e_hot = _toy_showers(geo_small, 3000, rng, scale=1.1)
    v_self, per_self = high_level_separation(ref, e_ref, ref, e_ref, geo_small, threshold=1.0)
    assert v_self == 0.0 and set(per_self) == set(high_level_table(ref, e_ref, geo_small, 1.0)[1])
    v_same, _ = high_level_separation(same, e_same, ref, e_ref, geo_small, threshold=1.0)
    assert 0 < v_same < 20 / 3000  # near the finite-sample floor n_bins / (4 N) ~ 0.0017
    v_wide, per_wide = high_level_separation(wide, e_wide, ref, e_ref, geo_small, threshold=1.0)
    v_hot, per_hot = high_level_separation(hot, e_hot, ref, e_ref, geo_small, threshold=1.0)
    assert v_wide > 10 * v_same and v_hot > 10 * v_same
    assert max(per_wide, key=per_wide.get).startswith(("width_r", "center_r"))  # the shape is what moved
    assert per_hot["E_tot/E_inc"] > 0.5  # 10 % more energy: nearly disjoint E_tot/E_inc
    # the threshold is applied: a generator whose extra voxels all sit below it is not charged
    noisy = np.where(ref >= 1.0, ref, 0.4)  # every voxel below 1 MeV now holds 0.4 MeV
    assert high_level_separation(noisy, e_ref, ref, e_ref, geo_small, threshold=1.0)[0] == 0.0
    assert high_level_separation(noisy, e_ref, ref, e_ref, geo_small, threshold=0.0)[0] > 0.05
    with pytest.raises(ValueError, match="n_bins"):
        high_level_separation(ref, e_ref, ref, e_ref, geo_small, n_bins=1)
