"""Training tensors: prepare (validate, fit, two-pass shuffle, atomic), read back, CLI exit codes."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from fastsim.cli import main as fastsim_main
from fastsim.data.hdf5 import write_calochallenge
from fastsim.data.tensors import FORMAT, TrainingTensors, bucket_of, prepare_training_tensors, shuffle_order
from fastsim.data.transforms import DivideByIncident, build_transform
from fastsim.errors import FastsimError, InputFileError
from fastsim.geometry import Geometry

GEO = Geometry.regular(3, 4, [0, 5, 10, 20, 50, 100], name="small")
V = GEO.n_voxels
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _make(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Showers with distinct incident energies (MeV), so every row can be identified after shuffling."""
    e = np.exp(rng.uniform(np.log(1e3), np.log(1e5), n))
    s = (rng.dirichlet(np.ones(V), size=n) * (0.9 * e)[:, None]).astype(np.float32)
    s[rng.random(s.shape) < 0.3] = 0.0
    return e, s


@pytest.fixture
def inputs(tmp_path, rng):
    """Two CaloChallenge files of 70 and 45 showers; returns (paths, e_all, s_all)."""
    e1, s1 = _make(rng, 70)
    e2, s2 = _make(rng, 45)
    p1, p2 = tmp_path / "in1.h5", tmp_path / "in2.h5"
    write_calochallenge(p1, e1, s1)
    write_calochallenge(p2, e2, s2)
    return [str(p1), str(p2)], np.concatenate([e1, e2]), np.concatenate([s1, s2])


def _row_index(e_out: np.ndarray, e_in: np.ndarray) -> np.ndarray:
    """Input row of each output row, matched by incident energy (unique by construction)."""
    order = np.argsort(e_in)
    idx = order[np.searchsorted(e_in[order], e_out)]
    np.testing.assert_array_equal(e_in[idx], e_out)
    return idx


def _listing(d) -> list[str]:
    return sorted(os.listdir(d))


def test_prepare_and_read_back(tmp_path, inputs):
    paths, e_in, s_in = inputs
    out = tmp_path / "train.h5"
    summary = prepare_training_tensors(paths, out, GEO, seed=3, chunk_size=16, progress=False)
    assert summary["n_read"] == summary["n_written"] == 115 and summary["n_skipped"] == 0
    assert [f["n_written"] for f in summary["files"]] == [70, 45]
    assert _listing(tmp_path) == ["in1.h5", "in2.h5", "train.h5"]  # no temporaries left

    with TrainingTensors(out) as tt:
        assert len(tt) == 115 and tt.n_voxels == V and tt.n_conditions == 1
        assert tt.geometry == GEO
        assert tt.transform_config == {"class": "Chain", "transforms": [{"class": "DivideByIncident"}]}
        assert tt.condition_config["class"] == "EnergyCondition"
        assert tt.condition_config["e_min"] == e_in.min() and tt.condition_config["e_max"] == e_in.max()
        assert tt.attrs["format"] == FORMAT and tt.attrs["seed"] == 3
        sources = json.loads(tt.attrs["sources"])
        assert [os.path.basename(s["path"]) for s in sources] == ["in1.h5", "in2.h5"]
        assert all(len(s["sha256"]) == 64 for s in sources)
        d = tt.read()
        assert d["x"].dtype == np.float32 and d["x"].shape == (115, V)
        assert d["cond"].dtype == np.float32 and d["cond"].shape == (115, 1)
        assert d["e_inc"].dtype == np.float64 and d["e_inc"].shape == (115,)
        # a permutation: every input row exactly once, and x/cond/e_inc stay aligned
        idx = _row_index(d["e_inc"], e_in)
        assert sorted(idx.tolist()) == list(range(115))
        assert not np.array_equal(idx, np.arange(115))  # actually shuffled
        np.testing.assert_allclose(d["x"], s_in[idx] / e_in[idx, None], rtol=1e-6)
        np.testing.assert_allclose(d["x"].sum(1), s_in[idx].sum(1) / e_in[idx], rtol=1e-5)
        cond = tt.build_condition()
        np.testing.assert_allclose(
            d["cond"][:, 0], cond(torch.from_numpy(d["e_inc"]))[:, 0].numpy(), rtol=1e-6
        )
        assert d["cond"].min() == pytest.approx(0.0, abs=1e-7) and d["cond"].max() == pytest.approx(1.0)
        # transform from the file inverts x back to MeV
        back = tt.build_transform().inverse(torch.from_numpy(d["x"]), torch.from_numpy(d["e_inc"])).numpy()
        np.testing.assert_allclose(back, s_in[idx], rtol=1e-5, atol=1e-3)
        # block reads equal the full read
        parts = [tt.read(lo, lo + 20) for lo in range(0, 115, 20)]
        for key in ("x", "cond", "e_inc"):
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), d[key])


def test_readout_threshold_zeroes_small_voxels(tmp_path, inputs):
    """--threshold: voxels below it become 0 (one equal to it stays), the rest are untouched."""
    paths, e_in, s_in = inputs
    thr = float(np.quantile(s_in[s_in > 0], 0.4))  # an energy that really splits the filled voxels
    with h5py.File(paths[0], "r+") as f:  # one voxel exactly at the threshold
        f["showers"][0, 0] = thr
    s_in[0, 0] = thr
    out = tmp_path / "train.h5"
    prepare_training_tensors(paths, out, GEO, seed=3, progress=False, threshold=thr)
    with TrainingTensors(out) as tt:
        assert tt.attrs["readout_threshold"] == thr
        d = tt.read()
    idx = _row_index(d["e_inc"], e_in)
    expected = np.where(s_in >= thr, s_in, 0.0)[idx] / e_in[idx, None]
    np.testing.assert_allclose(d["x"], expected, rtol=1e-6)
    assert (s_in > 0).sum() > (expected > 0).sum() > 0
    assert d["x"][np.flatnonzero(idx == 0)[0], 0] > 0  # the voxel at the threshold is kept
    # default: nothing removed, recorded as 0
    prepare_training_tensors(paths, tmp_path / "plain.h5", GEO, seed=3, progress=False)
    with TrainingTensors(tmp_path / "plain.h5") as tt:
        assert tt.attrs["readout_threshold"] == 0.0
        assert (tt.read()["x"] > 0).sum() == (s_in > 0).sum()


def test_shuffle_is_seeded_and_chunk_size_independent(tmp_path, inputs):
    paths, e_in, _ = inputs
    outs = {}
    for name, seed, cs, bucket in [
        ("a", 1, 16, 1 << 28),
        ("b", 1, 16, 1 << 28),
        ("c", 1, 7, 1 << 28),
        ("d", 2, 16, 1 << 28),
        ("e", 1, 16, 4096),  # many buckets
        ("f", 1, 5, 4096),
    ]:
        out = tmp_path / f"{name}.h5"
        summ = prepare_training_tensors(
            paths, out, GEO, seed=seed, chunk_size=cs, progress=False, bucket_bytes=bucket
        )
        with TrainingTensors(out) as tt:
            outs[name] = (tt.read(), summ["n_buckets"])
    assert outs["a"][1] == 1 and outs["e"][1] > 5
    for key in ("x", "cond", "e_inc"):
        np.testing.assert_array_equal(outs["a"][0][key], outs["b"][0][key])
        np.testing.assert_array_equal(outs["a"][0][key], outs["c"][0][key])
        np.testing.assert_array_equal(outs["e"][0][key], outs["f"][0][key])
    assert not np.array_equal(outs["a"][0]["e_inc"], outs["d"][0]["e_inc"])
    for name in "de":  # other seed / bucket count: still a permutation
        idx = _row_index(outs[name][0]["e_inc"], e_in)
        assert sorted(idx.tolist()) == list(range(115))


def test_bucket_assignment_is_uniform():
    b = bucket_of(np.arange(200_000), seed=5, n_buckets=8)
    counts = np.bincount(b, minlength=8)
    assert counts.min() > 24_000 and counts.max() < 26_000
    assert not np.array_equal(b, bucket_of(np.arange(200_000), seed=6, n_buckets=8))


def test_output_order_is_shuffle_order(tmp_path, inputs):
    """prepare_training_tensors applies exactly shuffle_order, with one bucket and with many."""
    paths, e_in, _ = inputs
    for bucket, seed in ((1 << 28, 0), (3000, 11)):
        out = tmp_path / f"t{seed}.h5"
        summ = prepare_training_tensors(paths, out, GEO, seed=seed, progress=False, bucket_bytes=bucket)
        with TrainingTensors(out) as tt:
            np.testing.assert_array_equal(
                tt.read()["e_inc"], e_in[shuffle_order(115, seed, summ["n_buckets"])]
            )


@pytest.mark.parametrize("n_buckets", [1, 4])
def test_two_pass_shuffle_positions_are_uniform(n_buckets):
    """Over many seeds every input row lands in every output position about equally often."""
    n, n_seeds = 10, 3000
    counts = np.zeros((n, n), dtype=int)  # counts[input row, output position]
    for seed in range(n_seeds):
        counts[shuffle_order(n, seed, n_buckets), np.arange(n)] += 1
    # expected 300 per cell, binomial sd ~16: a biased scheme (e.g. bucket order kept) is far off
    assert counts.min() > 300 - 5 * 16 and counts.max() < 300 + 5 * 16


def test_standardize_transform_is_fitted_streaming(tmp_path, inputs):
    paths, _, _ = inputs
    out = tmp_path / "t.h5"
    prepare_training_tensors(
        paths, out, GEO, transform_config="log-standardize", chunk_size=10, progress=False
    )
    with TrainingTensors(out) as tt:
        x = tt.read()["x"]
        np.testing.assert_allclose(x.mean(0), 0.0, atol=1e-4)
        np.testing.assert_allclose(x.std(0), 1.0, atol=1e-3)
        cfg = tt.transform_config
        assert [c["class"] for c in cfg["transforms"]] == ["DivideByIncident", "LogTransform", "Standardize"]
        assert len(cfg["transforms"][2]["mean"]) == V
        assert isinstance(build_transform(cfg), torch.nn.Module)


def test_prefitted_transform_is_kept(tmp_path, inputs):
    paths, e_in, s_in = inputs
    cfg = {
        "class": "Chain",
        "transforms": [
            {"class": "DivideByIncident"},
            {"class": "Standardize", "mean": [0.5] * V, "std": [2.0] * V},
        ],
    }
    out = tmp_path / "t.h5"
    prepare_training_tensors(paths, out, GEO, transform_config=json.dumps(cfg), progress=False)
    with TrainingTensors(out) as tt:
        d = tt.read()
        idx = _row_index(d["e_inc"], e_in)
        np.testing.assert_allclose(d["x"], (s_in[idx] / e_in[idx, None] - 0.5) / 2.0, rtol=1e-5, atol=1e-6)
        assert tt.transform_config["transforms"][1]["mean"] == [0.5] * V


def test_multiple_files_with_bad_rows_skip_bad(tmp_path, rng):
    e1, s1 = _make(rng, 40)
    e2, s2 = _make(rng, 30)
    s1[3, 5] = np.nan
    e1[7] = np.inf
    e2[0] = -1.0
    s2[4, :3] = -5.0
    s2[5, 0] = -1e-4  # tolerated noise: kept, clipped to 0
    p1, p2 = tmp_path / "a.h5", tmp_path / "b.h5"
    write_calochallenge(p1, e1, s1)
    write_calochallenge(p2, e2, s2)
    out = tmp_path / "t.h5"
    with pytest.raises(InputFileError) as info:
        prepare_training_tensors([p1, p2], out, GEO, progress=False)
    assert str(info.value).startswith(f"{p1}: ") and "non-finite" in str(info.value)
    assert "--skip-bad" in str(info.value)
    assert _listing(tmp_path) == ["a.h5", "b.h5"]

    summary = prepare_training_tensors([p1, p2], out, GEO, progress=False, skip_bad=True)
    assert summary["n_read"] == 70 and summary["n_written"] == 66 and summary["n_skipped"] == 4
    assert summary["skipped"] == {"non-finite": 2, "incident energy <= 0": 1, "negative voxel energies": 1}
    assert summary["files"][0]["skipped"] == {"non-finite": 2}
    with TrainingTensors(out) as tt:
        d = tt.read()
        assert np.isfinite(d["x"]).all() and (d["x"] >= 0).all()
        keep_e = np.concatenate([np.delete(e1, [3, 7]), np.delete(e2, [0, 4])])
        np.testing.assert_array_equal(np.sort(d["e_inc"]), np.sort(keep_e))
        assert json.loads(tt.attrs["skipped"]) == summary["skipped"]
        assert tt.attrs["n_skipped"] == 4


@pytest.mark.parametrize(
    "spoil, fragment, skip_bad",
    [
        (lambda e, s: (e, s[:, :-1]), "showers have 59 voxels but geometry 'small' has 60", True),
        (lambda e, s: (e / 1000, s), "units look mixed up", True),  # file-wide: not skippable
        (lambda e, s: (e[:0], s[:0]), "no showers (N = 0)", True),
        (lambda e, s: (np.where(np.arange(len(e)) == 2, 5e8, e), s), "above 1e+08 MeV", False),
        (
            lambda e, s: (e, np.where(np.arange(len(e))[:, None] == 1, -3.0, s)),
            "negative voxel energies",
            False,
        ),
    ],
)
def test_bad_input_stops_with_file_and_problem(tmp_path, inputs, spoil, fragment, skip_bad):
    paths, _, _ = inputs
    e, s = _make(np.random.default_rng(9), 20)
    bad = tmp_path / "bad.h5"
    e, s = spoil(e, s)
    with h5py.File(bad, "w") as f:
        f["incident_energies"] = e[:, None]
        f["showers"] = s
    out = tmp_path / "t.h5"
    with pytest.raises(InputFileError) as info:
        prepare_training_tensors([paths[0], bad], out, GEO, progress=False, skip_bad=skip_bad)
    assert str(info.value).startswith(f"{bad}: ") and fragment in str(info.value)
    assert not out.exists() and not any(n.startswith(".t.h5") for n in os.listdir(tmp_path))


def test_missing_and_non_hdf5_inputs(tmp_path, inputs):
    paths, _, _ = inputs
    (tmp_path / "junk.h5").write_bytes(b"\x00not hdf5")
    for bad, frag in [
        (tmp_path / "none.h5", "file not found"),
        (tmp_path / "junk.h5", "not a readable HDF5 file"),
    ]:
        with pytest.raises(InputFileError, match=frag) as info:
            prepare_training_tensors([*paths, bad], tmp_path / "t.h5", GEO, progress=False)
        assert info.value.path == str(bad)
    assert not (tmp_path / "t.h5").exists()


def test_output_rules(tmp_path, inputs):
    paths, _, _ = inputs
    out = tmp_path / "t.h5"
    prepare_training_tensors(paths, out, GEO, progress=False)
    with pytest.raises(InputFileError, match="output file exists"):
        prepare_training_tensors(paths, out, GEO, progress=False)
    prepare_training_tensors(paths, out, GEO, progress=False, overwrite=True, seed=4)
    assert TrainingTensors(out).attrs["seed"] == 4
    with pytest.raises(InputFileError, match="output file is also an input"):
        prepare_training_tensors(paths, paths[0], GEO, progress=False, overwrite=True)


class _Interrupting(DivideByIncident):
    """A real transform that raises KeyboardInterrupt on its third chunk (a user pressing Ctrl-C)."""

    calls = 0

    def forward(self, showers, e_inc):
        type(self).calls += 1
        if type(self).calls == 3:
            raise KeyboardInterrupt
        return super().forward(showers, e_inc)


def test_interrupted_preparation_leaves_nothing(tmp_path, inputs):
    paths, _, _ = inputs
    out = tmp_path / "t.h5"
    with pytest.raises(KeyboardInterrupt):
        prepare_training_tensors(
            paths, out, GEO, transform_config=_Interrupting(), chunk_size=10, progress=False
        )
    assert _listing(tmp_path) == ["in1.h5", "in2.h5"]


# --------------------------------------------------------------------------- TrainingTensors errors


def test_training_tensors_rejects_other_files(tmp_path, inputs):
    paths, _, _ = inputs
    with pytest.raises(InputFileError, match="in1.h5: not a fastsim training tensors file"):
        TrainingTensors(paths[0])
    with pytest.raises(InputFileError, match="file not found"):
        TrainingTensors(tmp_path / "none.h5")
    out = tmp_path / "t.h5"
    prepare_training_tensors(paths, out, GEO, progress=False)
    with h5py.File(out, "a") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(InputFileError, match="unsupported format_version 99"):
        TrainingTensors(out)
    with h5py.File(out, "a") as f:
        f.attrs["format_version"] = 1
        del f["cond"]
    with pytest.raises(InputFileError, match="t.h5: missing dataset 'cond'"):
        TrainingTensors(out)


def test_training_tensors_pickles_for_workers(tmp_path, inputs):
    paths, _, _ = inputs
    out = tmp_path / "t.h5"
    prepare_training_tensors(paths, out, GEO, progress=False)
    tt = TrainingTensors(out)
    first = tt.read(0, 5)
    clone = pickle.loads(pickle.dumps(tt))
    np.testing.assert_array_equal(clone.read(0, 5)["x"], first["x"])
    tt.close()
    clone.close()


# --------------------------------------------------------------------------- CLI


def test_cli_prep_train_and_validate(tmp_path, inputs, capsys):
    paths, _, _ = inputs
    out = tmp_path / "t.h5"
    rc = fastsim_main(
        ["prep-train", *paths, "-o", str(out), "--geometry", json.dumps(GEO.to_dict()), "--no-progress"]
    )
    assert rc == 0 and out.exists()
    assert "wrote" in capsys.readouterr().out
    assert fastsim_main(["validate", *paths, "--geometry", GEO.to_json()]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{p}: OK" for p in paths]
    # a bad file: exit 2, one line per problem, each naming the file
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f["incident_energies"] = np.full((3, 1), np.nan)
        f["showers"] = np.full((3, V), -1.0)
    assert fastsim_main(["validate", paths[0], str(bad)]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{paths[0]}: OK"
    assert len(lines) == 3 and all(line.startswith(f"{bad}: ") for line in lines[1:])
    gev = tmp_path / "gev.h5"
    e, s = _make(np.random.default_rng(3), 10)
    write_calochallenge(gev, e / 1000, s)
    assert fastsim_main(["validate", str(gev)]) == 2
    assert "units look mixed up" in capsys.readouterr().out
    assert fastsim_main(["validate", str(gev), "--no-unit-check"]) == 0
    assert capsys.readouterr().out == f"{gev}: OK\n"
    out2 = tmp_path / "t2.h5"
    assert fastsim_main(["prep-train", paths[0], str(bad), "-o", str(out2), "--geometry", GEO.to_json()]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: " in err and "non-finite" in err
    assert not out2.exists() and not any(".t2.h5" in n for n in os.listdir(tmp_path))
    with pytest.raises(FastsimError, match="unknown transform 'bogus'"):
        from fastsim.data.cli import main as data_main

        data_main(
            ["prep-train", paths[0], "-o", str(out2), "--geometry", GEO.to_json(), "--transform", "bogus"]
        )


def test_data_prep_scripts_exit_2_on_bad_input(tmp_path, inputs):
    """The thin scripts, run as real processes: exit status 2 and no output on a bad input."""
    paths, _, _ = inputs
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "t.h5"
    r = subprocess.run(
        [sys.executable, os.path.join(REPO, "data_prep", "h5_to_tensors.py"), paths[0], str(tmp_path / "none.h5"),
         "-o", str(out), "--geometry", GEO.to_json(), "--no-progress"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "none.h5: file not found" in r.stderr
    assert not out.exists()
    r = subprocess.run(
        [sys.executable, os.path.join(REPO, "data_prep", "validate.py"), *paths, "--geometry", "1-photons"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert r.returncode == 2
    assert "in1.h5: showers have 60 voxels but geometry '1-photons' has 368" in r.stdout


def test_cli_preset_names_match_the_library():
    """The CLI lists presets without importing torch; the list must stay in step with PRESETS."""
    from fastsim.data.cli import _PRESETS
    from fastsim.data.transforms import PRESETS

    assert set(_PRESETS) == set(PRESETS)


@pytest.mark.slow
def test_memory_stays_flat_for_a_large_input(tmp_path):
    """prep-train and iter_chunks on 440 MB of showers: peak memory far below the data size.

    Run in a fresh process with a fixed glibc mmap threshold, so that RSS measures live buffers
    rather than heap the allocator keeps after large frees.
    """
    n, v = 300_000, 368
    src = tmp_path / "big.h5"
    rng = np.random.default_rng(0)
    from fastsim.data.hdf5 import ShowerWriter

    with ShowerWriter(src, v, compression=None) as w:
        for _ in range(0, n, 20_000):
            e = np.exp(rng.uniform(np.log(256.0), np.log(4.2e6), 20_000))
            s = rng.random((20_000, v), dtype=np.float32) * (e / v)[:, None].astype(np.float32)
            w.append(e, s)
    data_mb = n * v * 4 / 2**20
    code = (
        "import torch, numpy as np\n"
        "from fastsim.data.hdf5 import open_calochallenge\n"
        "from fastsim.data.tensors import prepare_training_tensors\n"
        "def hwm():\n"
        "    return int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]) / 1024\n"
        "base = hwm()\n"
        f"with open_calochallenge({str(src)!r}) as cf:\n"
        "    total = sum(float(s.sum()) for _, s in cf.iter_chunks())\n"
        "read_peak = hwm() - base\n"
        f"prepare_training_tensors([{str(src)!r}], {str(tmp_path / 't.h5')!r}, '1-photons', progress=False,"
        " transform_config='log-standardize', bucket_bytes=16 << 20)\n"
        "print(read_peak, hwm() - base)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    read_peak, prep_peak = map(float, r.stdout.split())
    assert read_peak < 0.25 * data_mb, (read_peak, data_mb)
    assert prep_peak < 0.5 * data_mb, (prep_peak, data_mb)
    assert len(TrainingTensors(tmp_path / "t.h5")) == n
