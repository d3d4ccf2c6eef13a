"""A family of models: one description, one model per energy slice, one index, one generated file.

Fast tests build the index by hand from tiny checkpoints (routing, order, provenance, bad inputs
through the command line); the slow ones train 2 slices through `fastsim family fit` and run the
SLURM array script's per-task command line under a simulated SLURM environment.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import h5py
import numpy as np
import pytest
from helpers_cli import REPO, cli_env, fastsim, small_model_args, tiny_checkpoint, write_toy_showers

from fastsim.geometry import Geometry
from fastsim.training.family import load_family, read_index, record_slice

GEO = Geometry.builtin("1-photons")
LOW, HIGH = (1000.0, 3000.0), (3000.0, 9000.0)  # MeV: the toy energies 1024, 2048 | 4096, 8192


def _description(tmp, inputs, fit_args=(), extra_slice=None, slices=None, prep=None) -> str:
    """A family description of 2 energy slices, or ``slices``, (plus ``extra_slice``) over ``inputs``."""
    import yaml

    slices = list(slices or [
        {"name": "low", "select": {"energy": list(LOW)}, "overrides": {"data": {"val_fraction": 0.2}}},
        {"name": "high", "select": {"energy": list(HIGH)}},
    ])  # fmt: skip
    if extra_slice:
        slices.append(extra_slice)
    desc = {
        "name": "toy",
        "geometry": "1-photons",
        "inputs": [os.path.relpath(p, tmp) for p in inputs],
        "workdir": "runs",
        "index": "family.json",
        "configs": ["wgan_gp", "photons", "cpu", "csv"],
        "fit_args": list(fit_args),
        "slices": slices,
        **({"prep": prep} if prep is not None else {}),
    }
    path = os.path.join(tmp, "family.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(desc, f)
    return path


@pytest.fixture(scope="module")
def showers(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("family_data") / "showers.h5")
    write_toy_showers(path, GEO, 240, seed=5)
    return path


@pytest.fixture(scope="module")
def hand_index(tmp_path_factory, showers) -> str:
    """An index of the 2 slices, each with a tiny checkpoint trained on its own slice's showers."""
    from fastsim.training.family import prepare_slice

    tmp = str(tmp_path_factory.mktemp("family_hand"))
    family = load_family(_description(tmp, [showers]))
    for s in family.slices:
        tensors = prepare_slice(family, s)
        ckpt = tiny_checkpoint(family.run_dir(s), tensors, name=f"{s.name}.ckpt")
        record_slice(family, s, ckpt, "test")
    return family.index


def test_description_is_read_with_paths_relative_to_it(tmp_path, showers) -> None:
    family = load_family(_description(str(tmp_path), [showers]))
    assert [s.name for s in family.slices] == ["low", "high"] and family.slices[1].task == 1
    assert family.slices[0].energy == LOW and family.slices[0].inputs == (showers,)
    assert family.index == str(tmp_path / "family.json")
    assert family.run_dir(family.slices[1]) == str(tmp_path / "runs" / "high")
    assert family.configs[0].endswith(os.path.join("model", "wgan_gp.yaml"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"extra_slice": {"name": "mid", "select": {"energy": [2500, 5000]}}}, "overlap in energy"),
        ({"extra_slice": {"name": "fwd", "select": {"energy": [9000, 1e5], "abs_eta": [2.0, 2.5]}}},
         "selection 'abs_eta' is not supported: |η| range (the simulated detector is flat slabs"),
        ({"extra_slice": {"name": "fwd", "select": {"angle": [30, 60]}}}, "overlap in energy × angle"),
        ({"extra_slice": {"name": "fwd", "select": {"angle": [30, 95]}}}, "select.angle must be [lo, hi]"),
        ({"extra_slice": {"name": "fwd", "select": {}}}, "an angle range or both"),
        ({"extra_slice": {"name": "low", "select": {"energy": [9000, 1e5]}}}, "slice name 'low' used twice"),
        ({"extra_slice": {"name": "bad", "select": {"energy": [5, 1]}}}, "select.energy must be [lo, hi]"),
        ({"extra_slice": {"name": "x", "select": {"energy": [9000, 1e5]}, "lr": 1}}, "unknown key 'lr'"),
    ],
)  # fmt: skip
def test_bad_descriptions_are_refused_naming_the_file(tmp_path, showers, change, message) -> None:
    from fastsim.errors import InputFileError

    path = _description(str(tmp_path), [showers], **change)
    with pytest.raises(InputFileError, match="family.yaml") as err:
        load_family(path)
    assert message in str(err.value)


def test_a_bad_description_is_one_line_exit_2_on_the_command_line(tmp_path, showers) -> None:
    path = _description(
        str(tmp_path), [showers], extra_slice={"name": "mid", "select": {"energy": [2500, 5000]}}
    )
    proc = fastsim("family", "fit", path)
    assert proc.returncode == 2, proc.stderr
    assert (
        proc.stderr.count("\n") == 1 and "overlap in energy" in proc.stderr and "family.yaml" in proc.stderr
    )
    assert not (tmp_path / "runs").exists()  # nothing prepared


def test_index_records_each_slice_and_fit_args_skips_recorded_ones(tmp_path, showers) -> None:
    path = _description(str(tmp_path), [showers])
    family = load_family(path)
    ckpt = tmp_path / "a.ckpt"
    ckpt.write_bytes(b"weights")
    record_slice(family, family.slices[1], str(ckpt), "test")
    index = read_index(family.index)
    assert [s["name"] for s in index["slices"]] == ["low", "high"] and set(index["trained"]) == {"high"}
    assert index["trained"]["high"]["checkpoint"] == str(ckpt)
    assert not [p for p in os.listdir(tmp_path) if ".partial" in p]  # written atomically
    done = fastsim("family", "fit-args", path, "--slice", "1")
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr
    todo = fastsim("family", "fit-args", path, "--slice", "low")
    assert todo.returncode == 0, todo.stderr
    lines = todo.stdout.strip().splitlines()
    assert lines[0] == family.run_dir(family.slices[0])
    assert lines[lines.index("--data.train_file") + 1] == family.tensors_path(family.slices[0])
    assert os.path.exists(family.tensors_path(family.slices[0]))  # prepared, only low-energy showers
    with h5py.File(family.tensors_path(family.slices[0])) as f:
        e = f["e_inc"][:]
    assert len(e) > 0 and e.min() >= LOW[0] and e.max() < LOW[1]
    # the slice's overrides went into a config file given after the shared ones
    configs = [lines[i + 1] for i, a in enumerate(lines) if a == "--config"]
    assert configs[-1].endswith(os.path.join("low", "overrides.yaml"))
    # a changed selection drops the old entry: it would route events to the wrong model
    import yaml

    with open(path) as f:
        desc = yaml.safe_load(f)
    desc["slices"][1]["select"]["energy"] = [3000.0, 10000.0]
    with open(path, "w") as f:
        yaml.safe_dump(desc, f)
    family = load_family(path)
    assert family.slices[1].energy == (3000.0, 10000.0)
    record_slice(family, family.slices[0], str(ckpt), "test")
    assert set(read_index(family.index)["trained"]) == {"low"}


def test_generate_from_index_routes_each_event_to_its_slice_in_order(tmp_path, hand_index) -> None:
    import torch

    from fastsim.generation.generate import generate_batch
    from fastsim.models.io import load_generator

    out = tmp_path / "gen.h5"
    proc = fastsim("generate", "--index", hand_index, "-o", out, "--points", "8192:3,1024:4,4096:2,2048:3",
                   "--batch-size", "5", "--seed", "7", "--device", "cpu")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with h5py.File(out) as f:
        e = f["incident_energies"][:, 0]
        got = f["showers"][:]
        attrs = dict(f.attrs)
    assert e.tolist() == [8192.0] * 3 + [1024.0] * 4 + [4096.0] * 2 + [2048.0] * 3  # the requested order
    index = read_index(hand_index)
    recorded = json.loads(attrs["family_checkpoints"])
    assert [r["slice"] for r in recorded] == ["low", "high"] and [r["n_showers"] for r in recorded] == [7, 5]
    assert [r["checkpoint"] for r in recorded] == [index["trained"][n]["checkpoint"] for n in ("low", "high")]
    assert attrs["family_index"] == os.path.abspath(hand_index)
    # each event's shower is its own slice's model's, with the documented noise stream
    models = [load_generator(index["trained"][n]["checkpoint"]).eval() for n in ("low", "high")]
    torch.manual_seed(0)
    for b, start in enumerate(range(0, len(e), 5)):
        eb = e[start : start + 5]
        for k, model in enumerate(models):
            rows = (eb >= LOW[0]) & (eb < LOW[1]) if k == 0 else eb >= HIGH[0]
            if rows.any():
                want = generate_batch(model, eb[rows], 7, b * 2 + k, "cpu")
                np.testing.assert_array_equal(got[start : start + 5][rows], want)


def test_family_generate_is_generate_with_an_index(tmp_path, hand_index) -> None:
    ref = tmp_path / "ref.h5"
    write_toy_showers(str(ref), GEO, 6, seed=1, energies=(2048.0, 8192.0))
    out = tmp_path / "gen.h5"
    proc = fastsim("family", "generate", "--index", hand_index, "-o", out, "--like", ref, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    with h5py.File(out) as f, h5py.File(ref) as r:
        np.testing.assert_array_equal(f["incident_energies"][:], r["incident_energies"][:])


@pytest.mark.parametrize(
    "case", ["missing index", "missing checkpoint", "energy in no slice", "untrained slice"]
)
def test_generate_from_a_bad_index_is_one_line_exit_2_no_output(tmp_path, hand_index, case) -> None:
    index = read_index(hand_index)
    bad = tmp_path / "index.json"
    energies = "2048,4096"
    if case == "missing index":
        bad = tmp_path / "nowhere.json"
        want = "family index not found"
    elif case == "missing checkpoint":
        index["trained"]["high"]["checkpoint"] = str(tmp_path / "gone.ckpt")
        want = "slice 'high': checkpoint"
    elif case == "energy in no slice":
        energies = "2048,20000"
        want = "in no slice of the family, the first 20000 MeV"
    else:
        del index["trained"]["low"]
        want = "slice(s) low not trained yet"
    if case != "missing index":
        bad.write_text(json.dumps(index))
    out = tmp_path / "gen.h5"
    proc = fastsim(
        "generate", "--index", bad, "-o", out, "--energies", energies, "--n", "2", "--device", "cpu"
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and want in proc.stderr, proc.stderr
    assert not [p for p in os.listdir(tmp_path) if p.startswith(("gen.h5", ".gen.h5"))]


def test_angles_for_a_family_that_does_not_use_them_are_refused(tmp_path, hand_index) -> None:
    """Energy slices and energy-only models: --angles would be written but never used (exit 2, one line)."""
    out = tmp_path / "gen.h5"
    proc = fastsim("generate", "--index", hand_index, "-o", out, "--energies", "2048", "--n", "2", "--angles", "20",
                   "--device", "cpu")  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "neither selects by incidence angle nor has models conditioned on it: drop --angles" in proc.stderr
    assert os.listdir(tmp_path) == []


def test_generate_needs_a_checkpoint_or_an_index(tmp_path) -> None:
    proc = fastsim("generate", "-o", tmp_path / "x.h5", "--energies", "1000", "--n", "1")
    assert proc.returncode == 2 and "--checkpoint" in proc.stderr and "--index" in proc.stderr, proc.stderr


# ---------------------------------------------------------------------------------------- training
SMALL_FIT = [a for a in small_model_args("X") if a not in ("--config", "wgan_gp", "photons", "cpu", "csv")]
SMALL_FIT = (
    SMALL_FIT[: SMALL_FIT.index("--data.train_file")] + SMALL_FIT[SMALL_FIT.index("--data.train_file") + 2 :]
)
SMALL_FIT += ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
              "--trainer.num_sanity_val_steps", "0"]  # fmt: skip


@pytest.mark.slow
def test_family_fit_trains_each_slice_records_it_and_resumes(tmp_path, showers) -> None:
    """2 slices through `fastsim family fit` (each a real `fastsim fit`), a re-run that skips both,
    and generation from the index they made."""
    path = _description(str(tmp_path), [showers], fit_args=SMALL_FIT)
    proc = fastsim("family", "fit", path, cwd=str(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    index = read_index(tmp_path / "family.json")
    assert set(index["trained"]) == {"low", "high"}
    for name, entry in index["trained"].items():
        assert entry["checkpoint"].startswith(str(tmp_path / "runs" / name / "checkpoints"))
        assert os.path.basename(entry["checkpoint"]).startswith("best-"), entry
        assert entry["chosen_by"] == "best validation checkpoint"
    assert (tmp_path / "runs" / "low" / "logs").is_dir()  # each slice ran in its own directory
    again = fastsim("family", "fit", path, cwd=str(tmp_path))
    assert again.returncode == 0 and again.stdout.count("already trained") == 2, again.stdout
    listed = fastsim("family", "list", path)
    assert (
        "sbatch --array=0-1 scripts/slurm_family.sh" in listed.stdout
        and listed.stdout.count("trained: ") == 2
    )
    out = tmp_path / "gen.h5"
    gen = fastsim("generate", "--index", tmp_path / "family.json", "-o", out, "--energies", "1024,8192", "--n", "3",
                  "--device", "cpu")  # fmt: skip
    assert gen.returncode == 0, gen.stderr
    with h5py.File(out) as f:
        assert f["showers"].shape == (6, GEO.n_voxels)


FAKE_SRUN = '''#!{python}
"""srun stand-in: run the command once as task 0 of 1, with the SLURM rank variables srun sets."""
import os, subprocess, sys
env = dict(os.environ, SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0")
sys.exit(subprocess.call(sys.argv[1:], env=env))
'''


@pytest.mark.slow
def test_slurm_array_script_trains_its_own_slice(tmp_path, showers) -> None:
    """scripts/slurm_family.sh as SLURM runs array task 1: only slice 1 is trained and recorded."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text(FAKE_SRUN.format(python=sys.executable))
    srun.chmod(srun.stat().st_mode | stat.S_IXUSR)
    fastsim_bin = bin_dir / "fastsim"
    fastsim_bin.write_text(f'#!/bin/bash\nexec {sys.executable} -m fastsim.cli "$@"\n')
    fastsim_bin.chmod(fastsim_bin.stat().st_mode | stat.S_IXUSR)
    path = _description(str(tmp_path), [showers], fit_args=SMALL_FIT)
    env = {k: v for k, v in cli_env().items() if not k.startswith("SLURM_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env.update(SLURM_JOB_ID="4242", SLURM_ARRAY_JOB_ID="4242", SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_TASK_COUNT="2",
               SLURM_NTASKS="1", SLURM_JOB_NUM_NODES="1", SLURM_NNODES="1", SLURM_NODELIST="127.0.0.1")  # fmt: skip
    script = os.path.join(REPO, "scripts", "slurm_family.sh")
    proc = subprocess.run(["bash", script, path, "--trainer.max_epochs", "1"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    index = read_index(tmp_path / "family.json")
    assert set(index["trained"]) == {"high"}
    assert index["trained"]["high"]["checkpoint"].startswith(str(tmp_path / "runs" / "high" / "checkpoints"))
    assert not (tmp_path / "runs" / "low").exists()
    again = subprocess.run(
        ["bash", script, path], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0 and "already in its index" in again.stdout, again.stdout + again.stderr


def test_prep_threshold_reads_out_each_slice_like_the_detector(tmp_path, showers) -> None:
    from fastsim.data.tensors import TrainingTensors
    from fastsim.errors import InputFileError
    from fastsim.training.family import prepare_slice

    family = load_family(_description(str(tmp_path), [showers], prep={"threshold": 1.0}))
    with TrainingTensors(prepare_slice(family, family.slices[0])) as tt:
        assert tt.attrs["readout_threshold"] == 1.0  # what the WGAN-GP's readout_threshold checks against
        d = tt.read()
        mev = d["x"] * d["e_inc"][:, None]
        assert (mev > 0).any() and mev[mev > 0].min() >= 1.0 - 1e-3
    (tmp_path / "bad").mkdir()
    for bad in (-1.0, "1 MeV", True):
        with pytest.raises(InputFileError, match=r"family\.yaml.*prep\.threshold must be a readout threshold"):
            load_family(_description(str(tmp_path / "bad"), [showers], prep={"threshold": bad}))
    with pytest.raises(InputFileError, match=r"family\.yaml.*prep\.no_angle must be true or false, got 'no'"):
        load_family(_description(str(tmp_path / "bad"), [showers], prep={"no_angle": "no"}))
