"""The two-sample classifier test on cases whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from fastsim.metrics.classifier import ClassifierConfig, classifier_test, high_level_inputs, low_level_inputs
from fastsim.metrics.shapes import shower_features

#: small and quick: these tests check the statistics, not the network's capacity
FAST = ClassifierConfig(hidden=(32, 32), max_epochs=15, patience=3, batch_size=128, seed=7)


def test_same_distribution_gives_auc_near_one_half(rng):
    a = rng.normal(size=(3000, 8))
    b = rng.normal(size=(3000, 8))
    out = classifier_test(a, b, FAST)
    # 1200 test rows: the Hanley–McNeil error is ~0.017
    assert 0.02 > out["auc_unc"] > 0.01
    assert abs(out["auc"] - 0.5) < 4 * out["auc_unc"]
    assert out["jsd"] < 0.02
    assert out["n_per_class"] == 3000 and out["n_train"] + out["n_val"] + out["n_test"] == 6000


def test_disjoint_samples_give_auc_one(rng):
    a = rng.normal(size=(1000, 8))
    b = rng.normal(size=(1500, 8)) + np.array([6.0] + [0.0] * 7)
    out = classifier_test(a, b, FAST)
    assert out["auc"] > 0.999
    assert out["jsd"] > 0.9
    assert out["n_per_class"] == 1000  # balanced by subsampling the larger class


def test_a_scaled_shower_sample_is_detected(rng, geo_small):
    n = 1500

    def showers(scale: float) -> tuple[np.ndarray, np.ndarray]:
        e = rng.choice([1e3, 1e4], size=n)
        w = rng.dirichlet(np.linspace(1, 3, geo_small.n_voxels), size=n)
        return e, scale * w * (rng.normal(0.9, 0.02, size=n) * e)[:, None]

    e_ref, s_ref = showers(1.0)
    e_gen, s_gen = showers(1.2)  # 20 % more energy: ten standard deviations of E_tot/E_inc
    hl = classifier_test(
        high_level_inputs(shower_features(s_gen, e_gen, geo_small)),
        high_level_inputs(shower_features(s_ref, e_ref, geo_small)),
        FAST,
    )
    assert hl["auc"] > 0.95
    ll = classifier_test(low_level_inputs(s_gen, e_gen), low_level_inputs(s_ref, e_ref), FAST)
    assert ll["auc"] > 0.7
    assert ll["n_features"] == geo_small.n_voxels + 1
    assert hl["n_features"] == 2 + 7 * geo_small.n_layers


def test_seeded_and_leaves_the_global_rng_alone(rng):
    import torch

    a, b = rng.normal(size=(400, 4)), rng.normal(0.5, 1, size=(400, 4))
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    one = classifier_test(a, b, FAST, max_epochs=3)
    after = torch.rand(1)
    two = classifier_test(a, b, FAST, max_epochs=3)
    assert before == after
    assert one["auc"] == two["auc"]
    assert one["config"]["max_epochs"] == 3


def test_bad_inputs():
    with pytest.raises(ValueError, match="same number of columns"):
        classifier_test(np.zeros((20, 3)), np.zeros((20, 4)))
    with pytest.raises(ValueError, match="NaN"):
        classifier_test(np.full((20, 3), np.nan), np.zeros((20, 3)))
    with pytest.raises(ValueError, match="at least 10"):
        classifier_test(np.zeros((5, 3)), np.zeros((20, 3)))


@pytest.mark.slow
def test_default_settings_on_dataset1_sized_input():
    """The default network on 10⁴ showers per class of 368 voxels (about a minute on 2 cores):
    indistinguishable samples stay near 0.5, a 5 % energy scale is found."""
    from fastsim.geometry import Geometry

    geo = Geometry.builtin("1-photons")
    prof = np.exp(-geo.voxel_r_center / 30.0)

    def showers(scale: float, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        e = rng.choice(256.0 * 2.0 ** np.arange(15), size=10_000)
        w = rng.gamma(2.0, size=(10_000, geo.n_voxels)) * prof
        w /= w.sum(axis=1, keepdims=True)
        return low_level_inputs(scale * w * (rng.normal(0.9, 0.03, 10_000) * e)[:, None], e)

    ref = showers(1.0, 0)
    same = classifier_test(showers(1.0, 1), ref)
    assert abs(same["auc"] - 0.5) < 4 * same["auc_unc"]
    shifted = classifier_test(showers(1.05, 2), ref)
    assert shifted["auc"] > 0.75
