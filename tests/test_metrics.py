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
    separation_power_floor,
    wasserstein,
    width_ratio,
)

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
