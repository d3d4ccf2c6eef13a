"""``fastsim generate``: energies (pure), streamed atomic HDF5 output, reproducibility, several devices, bad input.

The generator checkpoints are real: a tiny WGAN-GP trained for a couple of batches with a real
``lightning.Trainer`` on CPU and saved with ``trainer.save_checkpoint`` (module-scoped fixture).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fastsim.errors import FastsimError
from fastsim.generation.energies import (
    LOG_UNIFORM_BLOCK,
    MAX_ENERGY_MEV,
    ArrayEnergies,
    DiscreteEnergies,
    LogUniformEnergies,
    TimePerEnergy,
    check_energies,
    energy_key,
    parse_energy_list,
    parse_points,
)


# ---------------------------------------------------------------------------------- energies (pure)
class TestEnergies:
    def test_parse_list_and_points(self) -> None:
        assert parse_energy_list("1024, 2048,4096") == [1024.0, 2048.0, 4096.0]
        assert parse_points("1024:1000,2048:5e2") == [(1024.0, 1000), (2048.0, 500)]

    @pytest.mark.parametrize(
        "text", ["", "1024,abc", "0", "-5", "nan", "inf", f"{MAX_ENERGY_MEV * 10:g}", "1024,-1"]
    )
    def test_bad_energy_lists(self, text: str) -> None:
        with pytest.raises(FastsimError, match="--energies"):
            parse_energy_list(text)

    @pytest.mark.parametrize("text", ["1024", "1024:0", "1024:-3", "1024:2.5", "x:3", "0:10", "1024:10:3"])
    def test_bad_points(self, text: str) -> None:
        with pytest.raises(FastsimError, match="--points"):
            parse_points(text)

    def test_check_energies(self) -> None:
        np.testing.assert_array_equal(check_energies([1.0, 2.0]), [1.0, 2.0])
        for bad in ([1.0, np.nan], [0.0], [-1.0], [MAX_ENERGY_MEV * 2]):
            with pytest.raises(FastsimError):
                check_energies(bad)

    def test_discrete_each_and_total(self) -> None:
        plan = DiscreteEnergies.each([100.0, 200.0, 300.0], 4)
        assert len(plan) == 12
        np.testing.assert_array_equal(plan.slice(0, 12), np.repeat([100.0, 200.0, 300.0], 4))
        np.testing.assert_array_equal(plan.slice(3, 6), [100.0, 200.0, 200.0])
        total = DiscreteEnergies.total([100.0, 200.0, 300.0], 8)
        assert total.counts == (3, 3, 2)
        with pytest.raises(FastsimError):
            DiscreteEnergies.total([1.0, 2.0, 3.0], 2)

    def test_discrete_batches_never_mix_energies(self) -> None:
        plan = DiscreteEnergies.from_points([(100.0, 5), (200.0, 3), (300.0, 7)])
        batches = list(plan.batches(4))
        assert batches == [(0, 4), (4, 5), (5, 8), (8, 12), (12, 15)]
        assert plan.n_batches(4) == len(batches)
        for start, stop in batches:
            assert len(np.unique(plan.slice(start, stop))) == 1
        # the batches tile the run exactly, in order
        np.testing.assert_array_equal(np.concatenate([plan.slice(a, b) for a, b in batches]), plan.slice(0, 15))

    def test_log_uniform_range_seed_and_index_determinism(self) -> None:
        n = LOG_UNIFORM_BLOCK + 1000  # crosses a block boundary
        plan = LogUniformEnergies(1000.0, 1.0e6, n, seed=3)
        full = plan.slice(0, n)
        assert full.min() >= 1000.0 and full.max() <= 1.0e6
        # the value of an index does not depend on how the run is cut into slices
        parts = np.concatenate([plan.slice(a, min(a + 777, n)) for a in range(0, n, 777)])
        np.testing.assert_array_equal(parts, full)
        # log-uniform: log E is uniform, so its mean is the midpoint (σ of the mean ≈ 0.0011 here)
        u = np.log(full / 1000.0) / np.log(1000.0)
        assert abs(u.mean() - 0.5) < 0.01 and abs(u.std() - 1 / np.sqrt(12)) < 0.01
        assert not np.array_equal(LogUniformEnergies(1000.0, 1.0e6, 100, seed=4).slice(0, 100), full[:100])
        with pytest.raises(FastsimError):
            LogUniformEnergies(1000.0, 10.0, 5, seed=0)

    def test_array_energies_keep_order_and_detect_discrete(self) -> None:
        e = np.array([[4096.0], [256.0], [4096.0], [1024.0]])
        plan = ArrayEnergies(e, source="ref.h5")
        np.testing.assert_array_equal(plan.slice(0, 4), e[:, 0])
        assert plan.discrete_values == [256.0, 1024.0, 4096.0]
        continuous = ArrayEnergies(np.linspace(1.0, 2.0, 500))
        assert continuous.discrete_values is None
        with pytest.raises(FastsimError, match="ref.h5"):
            ArrayEnergies(np.array([1.0, -1.0]), source="ref.h5")

    def test_time_per_energy(self) -> None:
        timer = TimePerEnergy([256.0, 1024.0])
        timer.add(np.array([256.0, 256.0]), 2.0)  # 1 s per shower at 256
        timer.add(np.array([1024.0, 256.0, 1024.0, 1024.0]), 4.0)  # 1 s per shower, shared
        other = TimePerEnergy.from_state(json.loads(json.dumps(timer.to_state())))
        timer.merge(other)
        assert timer.per_shower() == {"256": 1.0, "1024": 1.0}
        assert timer.counts.tolist() == [6, 6]
        assert energy_key(1536.5) == "1536.5" and energy_key(4194304.0) == "4194304"
        assert TimePerEnergy(None).per_shower() == {}
