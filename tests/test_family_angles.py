"""A family sliced by incidence angle (ATLAS: one FastCaloGAN per |η| slice), on the committed Geant4
reference at 0°, 20°, 40° × 256, 1024, 4096 MeV (tests/test_angles.py's ``REF``).

Three slices: ``central-low`` (E < 2000 MeV, angle < 30°) and ``central-high`` (E >= 2000 MeV,
angle < 30°) hold two angles each and train angle-conditioned models; ``wide`` (30° <= angle < 60°,
any energy) holds 40° alone and trains an energy-only model. The index is built by hand from tiny
checkpoints, as tests/test_family.py's fast tests do; generation and the error paths run through
the command line.
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
from helpers_cli import fastsim, tiny_checkpoint, write_toy_showers
from test_angles import REF, _read
from test_family import SMALL_FIT, _description

from fastsim.geometry import Geometry
from fastsim.training.family import load_family, read_index, record_slice

SLICES = [
    {"name": "central-low", "select": {"energy": [200, 2000], "angle": [0, 30]}},
    {"name": "central-high", "select": {"energy": [2000, 5000], "angle": [0, 30]}},
    {"name": "wide", "select": {"angle": [30, 60]}},
]


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> str:
    """The 3 slices' tensors (prepare_slice) and a tiny checkpoint of each, recorded in the index."""
    from fastsim.training.family import prepare_slice

    tmp = str(tmp_path_factory.mktemp("family_angles"))
    family = load_family(_description(tmp, [REF], slices=SLICES))
    for s in family.slices:
        tensors = prepare_slice(family, s)
        record_slice(family, s, tiny_checkpoint(family.run_dir(s), tensors, name=f"{s.name}.ckpt"), "test")
    return family.index


def test_slices_select_by_energy_and_angle_and_condition_on_several_angles(index) -> None:
    """Each slice's tensors hold its showers only; two angles: an angle column, one angle: none."""
    from fastsim.data.tensors import TrainingTensors
    from fastsim.models.io import load_generator

    data = read_index(index)
    assert [s["select"] for s in data["slices"]] == [s["select"] for s in SLICES]
    # checkpoints are <workdir>/<slice>/<slice>.ckpt
    workdir = os.path.dirname(os.path.dirname(data["trained"]["wide"]["checkpoint"]))
    e_ref, _, a_ref = _read(REF)
    for name, n, angle_min_max, energies in [
        ("central-low", 200, (0.0, 20.0), {256.0, 1024.0}),
        ("central-high", 100, (0.0, 20.0), {4096.0}),
        ("wide", 150, None, {256.0, 1024.0, 4096.0}),
    ]:
        with TrainingTensors(os.path.join(workdir, name, "train.h5")) as tt:
            assert len(tt) == n and set(tt.read()["e_inc"].tolist()) == energies, name
            assert tt.n_conditions == (1 if angle_min_max is None else 2), name
        model = load_generator(data["trained"][name]["checkpoint"])
        assert model.angle_range == angle_min_max, name
    assert int(((a_ref < 30) & (e_ref < 2000)).sum()) == 200  # the counts above are the reference's


def test_generate_routes_by_energy_and_angle_and_writes_the_angles(index, tmp_path) -> None:
    """--like the reference: every event from its slice's model (the angle passed to the conditioned
    ones), in the reference's order, with its angle written as incident_angles."""
    import torch

    from fastsim.generation.generate import generate_batch
    from fastsim.models.io import load_generator

    out = tmp_path / "gen.h5"
    proc = fastsim("generate", "--index", index, "-o", out, "--like", REF, "--batch-size", "64", "--seed", "5",
                   "--device", "cpu")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    e, got, a = _read(str(out))
    e_ref, _, a_ref = _read(REF)
    np.testing.assert_array_equal(e, e_ref)
    np.testing.assert_array_equal(a, a_ref)
    with h5py.File(out) as f:
        recorded = json.loads(f.attrs["family_checkpoints"])
    assert [(r["slice"], r["select"], r["n_showers"]) for r in recorded] == [
        (s["name"], s["select"], n) for s, n in zip(SLICES, (200, 100, 150), strict=True)
    ]
    data = read_index(index)
    models = [load_generator(data["trained"][s["name"]]["checkpoint"]).eval() for s in SLICES]
    slice_of = np.where(a_ref >= 30, 2, np.where(e_ref < 2000, 0, 1))
    torch.manual_seed(0)
    for b, start in enumerate(range(0, len(e), 64)):
        rows_b = slice(start, start + 64)
        for k, model in enumerate(models):
            rows = slice_of[rows_b] == k
            if rows.any():
                angles = a_ref[rows_b][rows] if model.angle_range is not None else None
                want = generate_batch(model, e_ref[rows_b][rows], 5, b * 3 + k, "cpu", 0.0, angles)
                np.testing.assert_array_equal(got[rows_b][rows], want)


def test_generate_with_explicit_angles(index, tmp_path) -> None:
    """--angles: angle-major events, each to its slice (25° central, 35° wide), angles written; 25° is
    beyond the central models' training angles (0°, 20°): a warning per slice, as for one model."""
    out = tmp_path / "grid.h5"
    proc = fastsim("generate", "--index", index, "-o", out, "--energies", "1024,4096", "--n", "2",
                   "--angles", "25,35", "--device", "cpu")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "central-low 2, central-high 2, wide 4" in proc.stderr
    for name in ("central-low", "central-high"):
        assert (
            f"slice '{name}': angles 25–25 deg reach outside the model's training angles 0–20 deg"
            in proc.stderr
        )
    assert "'wide'" not in proc.stderr  # an energy-only model: no training angles to leave
    e, _, a = _read(str(out))
    assert e.tolist() == [1024.0, 1024.0, 4096.0, 4096.0] * 2 and a.tolist() == [25.0] * 4 + [35.0] * 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--energies", "1024", "--n", "2", "--angles", "20,70"],
         "2 of 4 events are in no slice of the family, the first 1024 MeV at 70 deg (event 2)"),
        (["--energies", "1024", "--n", "2"], "select by incidence angle or are conditioned on it: give --angles"),
    ],
)  # fmt: skip
def test_generate_errors_through_the_command_line(index, tmp_path, args, message) -> None:
    out = tmp_path / "gen.h5"
    proc = fastsim("generate", "--index", index, "-o", out, "--device", "cpu", *args)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and os.listdir(tmp_path) == []


def test_angle_selection_needs_inputs_with_angles(tmp_path) -> None:
    """`fastsim family fit` of a slice selected by angle from a file without incident_angles: one line
    naming the file, exit 2, before any training."""
    plain = str(tmp_path / "plain.h5")
    write_toy_showers(plain, Geometry.builtin("1-photons"), 20, seed=2)
    path = _description(str(tmp_path), [plain], slices=[SLICES[2]])
    proc = fastsim("family", "fit", path, cwd=str(tmp_path))
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert (
        f"{plain}: has no incident_angles" in err[0]
        and "slice 'wide'" in err[0]
        and "selects by angle" in err[0]
    )
    assert not os.path.exists(tmp_path / "runs" / "wide" / "train.h5")
    assert not os.path.exists(tmp_path / "family.json")


@pytest.mark.slow
def test_family_fit_by_angle_end_to_end(tmp_path) -> None:
    """2 angle slices through `fastsim family fit` (real `fastsim fit` runs: an angle-conditioned model
    for 0°/20°, an energy-only one for 40°), then `fastsim generate --index --like` the reference."""
    from fastsim.models.io import load_generator

    slices = [
        {"name": "central", "select": {"angle": [0, 30]}},
        {"name": "wide", "select": {"angle": [30, 60]}},
    ]
    path = _description(str(tmp_path), [REF], fit_args=SMALL_FIT, slices=slices)
    proc = fastsim("family", "fit", path, cwd=str(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "slice 0 central (0 <= angle < 30 deg): preparing" in proc.stdout
    index = read_index(tmp_path / "family.json")
    ranges = [load_generator(index["trained"][s["name"]]["checkpoint"]).angle_range for s in slices]
    assert ranges == [(0.0, 20.0), None]
    out = tmp_path / "gen.h5"
    gen = fastsim(
        "generate", "--index", tmp_path / "family.json", "-o", out, "--like", REF, "--device", "cpu"
    )
    assert gen.returncode == 0, gen.stderr
    assert "showers per slice: central 300, wide 150" in gen.stderr
    np.testing.assert_array_equal(_read(str(out))[2], _read(REF)[2])
