"""CaloChallenge HDF5: streamed reading, atomic writing, validation of bad inputs (real files in tmp_path)."""

from __future__ import annotations

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from conftest import toy_showers

from fastsim.data.hdf5 import (
    NEGATIVE_TOLERANCE_MEV,
    ShowerWriter,
    check_calochallenge,
    open_calochallenge,
    read_calochallenge,
    validate_calochallenge,
    write_calochallenge,
)
from fastsim.errors import InputFileError
from fastsim.geometry import Geometry

GEO = Geometry.regular(3, 4, [0, 5, 10, 20, 50, 100], name="small")
V = GEO.n_voxels  # 3 layers x 4 alpha x 5 r = 60


def _showers(rng: np.random.Generator, n: int, v: int = V) -> tuple[np.ndarray, np.ndarray]:
    """conftest's toy showers on the small geometry (30 % of the voxels empty, ~90 % of E_inc
    deposited) at incident energies log-uniform in 1–100 GeV; ``v > V`` appends empty voxels
    (a file of another geometry)."""
    energies = np.exp(rng.uniform(np.log(1e3), np.log(1e5), n))
    e, s = toy_showers(GEO, n, int(rng.integers(2**31)), energies, empty=0.3)
    return e, np.pad(s, ((0, 0), (0, v - V)))


def _raw(path, e, s, **kw) -> str:
    """Write the two datasets with h5py directly (bypassing fastsim), to build bad files."""
    with h5py.File(path, "w") as f:
        if e is not None:
            f.create_dataset("incident_energies", data=e, **kw)
        if s is not None:
            f.create_dataset("showers", data=s, **kw)
    return os.fspath(path)


# --------------------------------------------------------------------------- reading / writing


def test_write_read_round_trip_and_attrs(tmp_path, rng):
    e, s = _showers(rng, 50)
    p = tmp_path / "a.h5"
    write_calochallenge(p, e, s, attrs={"producer": "geant4", "seed": 7, "detector": {"name": "x"}})
    with h5py.File(p) as f:
        assert f["incident_energies"].shape == (50, 1)
        assert f["showers"].shape == (50, V)
        assert f["showers"].compression == "gzip"
        assert f["showers"].compression_opts == 4
        assert f["showers"].maxshape == (None, V)
        assert f.attrs["producer"] == "geant4"
        assert f.attrs["seed"] == 7
        assert "fastsim_version" in f.attrs  # provenance
    e2, s2 = read_calochallenge(p)
    assert e2.dtype == np.float64 and e2.shape == (50,)
    assert s2.dtype == np.float32
    np.testing.assert_array_equal(e2, e)
    np.testing.assert_array_equal(s2, s)
    assert validate_calochallenge(p, Geometry.regular(3, 4, [0, 5, 10, 20, 50, 100])) == []


def test_chunked_reading_equals_full_reading(tmp_path, rng):
    e, s = _showers(rng, 103)
    p = tmp_path / "a.h5"
    write_calochallenge(p, e, s, chunk_rows=16)
    with open_calochallenge(p) as cf:
        assert (cf.n_showers, cf.n_voxels, len(cf)) == (103, V, 103)
        full_e, full_s = cf.read()
        parts = list(cf.iter_chunks(chunk_size=10))
        assert [len(pe) for pe, _ in parts] == [10] * 10 + [3]
        np.testing.assert_array_equal(np.concatenate([pe for pe, _ in parts]), full_e)
        np.testing.assert_array_equal(np.concatenate([ps for _, ps in parts]), full_s)
        sub = list(cf.iter_chunks(chunk_size=7, start=20, stop=41))
        np.testing.assert_array_equal(np.concatenate([ps for _, ps in sub]), s[20:41])
        np.testing.assert_array_equal(cf.incident_energies(), e)
        assert cf.attrs["fastsim_version"]


def test_reads_1d_incident_energies(tmp_path, rng):
    e, s = _showers(rng, 20)
    p = _raw(tmp_path / "flat.h5", e, s)
    e2, s2 = read_calochallenge(p)
    assert e2.shape == (20,)
    np.testing.assert_array_equal(e2, e)
    assert validate_calochallenge(p) == []


def test_writer_appends_blocks_and_compression_options(tmp_path, rng):
    e, s = _showers(rng, 30)
    for comp in (None, "lzf"):
        p = tmp_path / f"c_{comp}.h5"
        with ShowerWriter(p, V, compression=comp, chunk_rows=8) as w:
            for lo in range(0, 30, 7):
                w.append(e[lo : lo + 7, None], s[lo : lo + 7])  # (n, 1) accepted too
            assert w.n_written == 30
            w.set_attrs(time_per_shower_s=0.5)
        with h5py.File(p) as f:
            assert f["showers"].compression == comp
            assert f.attrs["time_per_shower_s"] == 0.5
        np.testing.assert_array_equal(read_calochallenge(p)[1], s)


def test_writer_refuses_overwrite_unless_asked(tmp_path, rng):
    e, s = _showers(rng, 5)
    p = tmp_path / "a.h5"
    write_calochallenge(p, e, s)
    with pytest.raises(InputFileError, match="a.h5: output file exists"):
        write_calochallenge(p, e[:2], s[:2])
    assert read_calochallenge(p)[0].shape == (5,)
    write_calochallenge(p, e[:2], s[:2], overwrite=True)
    assert read_calochallenge(p)[0].shape == (2,)
    assert sorted(os.listdir(tmp_path)) == ["a.h5"]


def test_two_writers_of_one_path_never_clobber(tmp_path, rng):
    """Without overwrite, the writer that finishes second fails instead of replacing the first's file."""
    e, s = _showers(rng, 6)
    p = tmp_path / "out.h5"
    w1, w2 = ShowerWriter(p, V), ShowerWriter(p, V)
    assert w1.tmp_path != w2.tmp_path
    w1.append(e[:3], s[:3])
    w2.append(e[3:], s[3:])
    w1.close()
    with pytest.raises(InputFileError, match="out.h5: output file appeared while writing"):
        w2.close()
    np.testing.assert_array_equal(read_calochallenge(p)[0], e[:3])
    assert os.listdir(tmp_path) == ["out.h5"]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_interrupted_writer_leaves_nothing(tmp_path, rng, exc):
    e, s = _showers(rng, 10)
    p = tmp_path / "out.h5"
    with pytest.raises(exc), ShowerWriter(p, V) as w:
        w.append(e, s)
        assert os.path.exists(w.tmp_path)
        assert os.path.dirname(w.tmp_path) == str(tmp_path)
        raise exc("stop")
    assert os.listdir(tmp_path) == []


def test_interrupted_overwrite_keeps_old_file(tmp_path, rng):
    e, s = _showers(rng, 10)
    p = tmp_path / "out.h5"
    write_calochallenge(p, e, s)
    with pytest.raises(RuntimeError), ShowerWriter(p, V, overwrite=True) as w:
        w.append(e[:3], s[:3])
        raise RuntimeError
    np.testing.assert_array_equal(read_calochallenge(p)[1], s)
    assert os.listdir(tmp_path) == ["out.h5"]


def test_killed_process_leaves_only_a_hidden_partial(tmp_path):
    """A process killed hard mid-write never produces the final name (the temp is hidden)."""
    p = tmp_path / "out.h5"
    code = (
        "import os, numpy as np\n"
        "from fastsim.data.hdf5 import ShowerWriter\n"
        f"w = ShowerWriter({str(p)!r}, 4)\n"
        "w.append(np.ones(3) * 100, np.ones((3, 4)))\n"
        "os._exit(1)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert not p.exists()
    assert all(name.startswith(".out.h5.partial-") for name in os.listdir(tmp_path))


def test_unclosed_writer_is_cleaned_up_when_collected(tmp_path, rng):
    e, s = _showers(rng, 4)
    w = ShowerWriter(tmp_path / "x.h5", V)
    w.append(e, s)
    tmp = w.tmp_path
    assert os.path.exists(tmp)
    del w
    import gc

    gc.collect()
    assert os.listdir(tmp_path) == []


def test_append_mode_is_atomic(tmp_path, rng):
    e, s = _showers(rng, 20)
    p = tmp_path / "a.h5"
    write_calochallenge(p, e[:12], s[:12], attrs={"producer": "geant4"})
    with ShowerWriter(p, V, mode="a", attrs={"appended": 1}) as w:
        assert w.n_written == 12
        w.append(e[12:], s[12:])
    e2, s2 = read_calochallenge(p)
    np.testing.assert_array_equal(e2, e)
    np.testing.assert_array_equal(s2, s)
    with open_calochallenge(p) as cf:
        assert cf.attrs["producer"] == "geant4" and cf.attrs["appended"] == 1
    # a failed append leaves the finished file exactly as it was
    with pytest.raises(RuntimeError), ShowerWriter(p, V, mode="a") as w:
        w.append(e[:5], s[:5])
        raise RuntimeError
    assert read_calochallenge(p)[0].shape == (20,)
    assert os.listdir(tmp_path) == ["a.h5"]
    with pytest.raises(InputFileError, match="cannot append showers of 7 voxels"):
        ShowerWriter(p, 7, mode="a")
    with pytest.raises(InputFileError, match="file not found"):
        ShowerWriter(tmp_path / "none.h5", V, mode="a")


def test_append_to_fixed_size_file_rewrites_it(tmp_path, rng):
    """A plain h5py file (contiguous datasets, 1-D incident energies) is rewritten, then extended."""
    e, s = _showers(rng, 25)
    p = tmp_path / "plain.h5"
    _raw(p, e[:10], s[:10])
    with h5py.File(p, "a") as f:
        f.attrs["origin"] = "CaloChallenge"
    with ShowerWriter(p, V, mode="a") as w:
        assert w.n_written == 10
        w.append(e[10:], s[10:])
    with h5py.File(p) as f:
        assert f["incident_energies"].shape == (25, 1) and f["showers"].maxshape == (None, V)
        assert f.attrs["origin"] == "CaloChallenge"
    e2, s2 = read_calochallenge(p)
    np.testing.assert_array_equal(e2, e)
    np.testing.assert_array_equal(s2, s)
    assert os.listdir(tmp_path) == ["plain.h5"]


# --------------------------------------------------------------------------- parallel compressed writes


def _plain_gzip(path, s, rows, level=4):
    """The reference: one h5py write of all rows into the layout ShowerWriter uses."""
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("showers", shape=(0, s.shape[1]), maxshape=(None, s.shape[1]), dtype=np.float32,
                              chunks=(rows, s.shape[1]), compression="gzip", compression_opts=level)  # fmt: skip
        ds.resize(len(s), axis=0)
        ds[:] = s


def _stored_chunks(path):
    with h5py.File(path) as f:
        ds = f["showers"]
        meta = (ds.dtype, ds.shape, ds.chunks, ds.compression, ds.compression_opts, ds.shuffle, ds.fletcher32)
        return meta, [ds.id.read_direct_chunk((lo, 0)) for lo in range(0, ds.shape[0], ds.chunks[0])]


@pytest.mark.parametrize("threads", [1, 4])
def test_parallel_writes_store_the_chunks_h5py_stores(tmp_path, rng, threads):
    """Blocks of every size (inside one chunk, across several, ending mid-chunk), compressed on
    ``threads`` threads, give the chunks of one plain h5py gzip write, in order, byte for byte."""
    e, s = _showers(rng, 403)
    s += np.arange(403, dtype=np.float32)[:, None]  # every row distinct: a swapped chunk shows
    p, ref = tmp_path / "ours.h5", tmp_path / "plain.h5"
    with ShowerWriter(p, V, chunk_rows=8, threads=threads) as w:
        assert w._rows.direct and (w._rows._pool is None) == (threads == 1)
        lo = 0
        for size in (3, 5, 1, 16, 40, 7, 200, 131):
            w.append(e[lo : lo + size], s[lo : lo + size])
            lo += size
        assert lo == 403
    _plain_gzip(ref, s, 8)
    assert _stored_chunks(p) == _stored_chunks(ref)
    np.testing.assert_array_equal(read_calochallenge(p)[1], s)
    np.testing.assert_array_equal(read_calochallenge(p)[0], e)


def test_parallel_append_mode_rewrites_the_partial_last_chunk(tmp_path, rng):
    e, s = _showers(rng, 45)
    p, ref = tmp_path / "a.h5", tmp_path / "plain.h5"
    write_calochallenge(p, e[:13], s[:13], chunk_rows=8)
    with ShowerWriter(p, V, mode="a", threads=2) as w:
        w.append(e[13:], s[13:])
    _plain_gzip(ref, s, 8)
    assert _stored_chunks(p) == _stored_chunks(ref)


def test_writer_copies_appended_blocks(tmp_path, rng):
    """The caller may refill its array as soon as append returns (chunks compress later)."""
    e, s = _showers(rng, 64)
    p = tmp_path / "a.h5"
    buf = np.empty((16, V), dtype=np.float32)
    with ShowerWriter(p, V, chunk_rows=8, threads=2) as w:
        for lo in range(0, 64, 16):
            buf[:] = s[lo : lo + 16]
            w.append(e[lo : lo + 16], buf)
    np.testing.assert_array_equal(read_calochallenge(p)[1], s)


def test_chunks_in_flight_are_bounded(tmp_path, rng, monkeypatch):
    """Slow compression makes append wait instead of queueing the whole run in memory."""
    import time

    import fastsim.data.hdf5 as hdf5

    encode, most = hdf5._encode_chunk, []

    def slow(*args):
        time.sleep(0.002)
        return encode(*args)

    monkeypatch.setattr(hdf5, "_encode_chunk", slow)
    monkeypatch.setattr(hdf5, "MAX_PENDING_BYTES", 0)  # the floor: two chunks per thread
    e, s = _showers(rng, 400)
    with ShowerWriter(tmp_path / "a.h5", V, chunk_rows=4, threads=2) as w:
        for lo in range(0, 400, 40):
            w.append(e[lo : lo + 40], s[lo : lo + 40])
            most.append(len(w._rows._pending))
    assert max(most) <= 4
    np.testing.assert_array_equal(read_calochallenge(tmp_path / "a.h5")[1], s)


@pytest.mark.parametrize("threads", [1, 3])
def test_failed_compression_leaves_nothing(tmp_path, rng, monkeypatch, threads):
    """A chunk that fails to compress on a worker thread fails the write; no file appears."""
    import fastsim.data.hdf5 as hdf5

    encode, calls = hdf5._encode_chunk, []

    def failing(*args):
        calls.append(1)
        if len(calls) == 5:
            raise MemoryError("deflate ran out of memory")
        return encode(*args)

    monkeypatch.setattr(hdf5, "_encode_chunk", failing)
    e, s = _showers(rng, 200)
    with pytest.raises(MemoryError, match="deflate"), ShowerWriter(tmp_path / "out.h5", V, chunk_rows=8, threads=threads) as w:  # fmt: skip
        for lo in range(0, 200, 20):
            w.append(e[lo : lo + 20], s[lo : lo + 20])
    assert os.listdir(tmp_path) == []


def test_layouts_not_encoded_here_go_through_h5py(tmp_path, rng):
    """lzf (or shuffle, checksums) cannot be made by zlib, and uncompressed chunks have no work to
    spread over threads: those datasets are written by h5py."""
    from fastsim.data.hdf5 import ChunkRowWriter

    e, s = _showers(rng, 30)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        layouts = {"lzf": {"compression": "lzf"}, "shuffle": {"compression": "gzip", "shuffle": True}, "none": {}}
        for name, kw in layouts.items():
            ds = f.create_dataset(name, shape=(0, V), maxshape=(None, V), chunks=(8, V), dtype=np.float32, **kw)
            with ChunkRowWriter(ds) as w:
                assert not w.direct
                w.append(s[:11])
                w.append(s[11:])
            np.testing.assert_array_equal(ds[:], s)


def test_writer_rejects_bad_blocks(tmp_path, rng):
    e, s = _showers(rng, 4)
    with pytest.raises(ValueError, match="shape"), ShowerWriter(tmp_path / "a.h5", V) as w:
        w.append(e, s[:, :10])
    with (
        pytest.raises(ValueError, match="3 incident energies for 4 showers"),
        ShowerWriter(tmp_path / "a.h5", V) as w,
    ):
        w.append(e[:3], s)
    assert os.listdir(tmp_path) == []


def test_output_directory_must_exist(tmp_path, rng):
    e, s = _showers(rng, 2)
    with pytest.raises(InputFileError, match="does not exist"):
        write_calochallenge(tmp_path / "no" / "a.h5", e, s)


# --------------------------------------------------------------------------- validation


def _expect(path, *fragments, geometry=GEO):
    problems = validate_calochallenge(path, geometry)
    joined = "; ".join(problems)
    for frag in fragments:
        assert frag in joined, f"{frag!r} not in {problems}"
    with pytest.raises(InputFileError) as info:
        check_calochallenge(path, geometry)
    msg = str(info.value)
    assert msg.startswith(os.fspath(path) + ": ")
    assert "\n" not in msg
    for frag in fragments:
        assert frag in msg
    return problems


def test_missing_file(tmp_path):
    _expect(tmp_path / "nope.h5", "file not found")
    with pytest.raises(InputFileError, match="nope.h5: file not found"):
        open_calochallenge(tmp_path / "nope.h5")


def test_not_hdf5(tmp_path):
    p = tmp_path / "text.h5"
    p.write_text("this is not HDF5\n")
    _expect(p, "not a readable HDF5 file")


def test_missing_datasets(tmp_path, rng):
    e, s = _showers(rng, 5)
    _expect(_raw(tmp_path / "a.h5", None, s), "missing dataset 'incident_energies'")
    _expect(_raw(tmp_path / "b.h5", e[:, None], None), "missing dataset 'showers'")
    probs = _expect(
        _raw(tmp_path / "c.h5", None, None),
        "missing dataset 'incident_energies'",
        "missing dataset 'showers'",
    )
    assert len(probs) == 2
    with pytest.raises(InputFileError, match="c.h5: missing dataset"):
        open_calochallenge(tmp_path / "c.h5")


def test_showers_not_2d(tmp_path, rng):
    e, s = _showers(rng, 5)
    _expect(_raw(tmp_path / "a.h5", e[:, None], s.reshape(5, 3, 20)), "showers must be 2-D", "(5, 3, 20)")


def test_incident_energy_shape(tmp_path, rng):
    e, s = _showers(rng, 6)
    _expect(_raw(tmp_path / "a.h5", e.reshape(3, 2), s), "incident_energies must have shape (N, 1) or (N,)")


def test_n_mismatch(tmp_path, rng):
    e, s = _showers(rng, 6)
    _expect(_raw(tmp_path / "a.h5", e[:4, None], s), "incident_energies has 4 rows but showers has 6")


def test_voxel_count_against_geometry(tmp_path, rng):
    e, s = _showers(rng, 6, v=61)
    _expect(_raw(tmp_path / "a.h5", e[:, None], s), "showers have 61 voxels but geometry 'small' has 60")
    # also against a built-in by name
    probs = validate_calochallenge(tmp_path / "a.h5", "1-photons")
    assert probs == ["showers have 61 voxels but geometry '1-photons' has 368"]
    assert validate_calochallenge(tmp_path / "a.h5") == []  # no geometry: count not checked


def test_empty_file(tmp_path):
    p = _raw(tmp_path / "a.h5", np.zeros((0, 1)), np.zeros((0, V), np.float32))
    _expect(p, "no showers (N = 0)")
    with open_calochallenge(p) as cf:  # readable, just empty
        assert cf.n_showers == 0 and list(cf.iter_chunks()) == []


def test_non_numeric_dataset(tmp_path, rng):
    e, _ = _showers(rng, 3)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["incident_energies"] = e[:, None]
        f["showers"] = np.array([b"a", b"b", b"c"])
    _expect(tmp_path / "a.h5", "'showers' is not numeric")


def test_damaged_file_is_an_input_error(tmp_path, rng):
    """A corrupt compressed chunk: validation reports it, reading raises InputFileError (not OSError)."""
    e, s = _showers(rng, 2000)
    p = tmp_path / "damaged.h5"
    write_calochallenge(p, e, s, chunk_rows=100)
    size = os.path.getsize(p)
    with open(p, "r+b") as f:  # the middle of the file is compressed shower data
        f.seek(size // 2)
        f.write(b"\xff" * 4096)
    _expect(p, "cannot read rows", "file damaged?")
    with pytest.raises(InputFileError, match="damaged.h5: cannot read rows"):
        read_calochallenge(p)
    with pytest.raises(InputFileError, match="damaged.h5: cannot read rows"), open_calochallenge(p) as cf:
        for _ in cf.iter_chunks(chunk_size=100):
            pass


def test_nan_and_inf_are_counted(tmp_path, rng):
    e, s = _showers(rng, 40)
    e[3] = np.nan
    s[5, 2] = np.nan
    s[5, 7] = np.inf
    s[9, 0] = -np.inf
    p = _raw(tmp_path / "a.h5", e[:, None], s)
    _expect(
        p,
        "incident_energies has 1 non-finite values",
        "showers have 3 non-finite voxel values (NaN/inf) in 2 showers",
    )


def test_non_positive_and_absurd_incident_energies(tmp_path, rng):
    e, s = _showers(rng, 40)
    e[0], e[1], e[2] = 0.0, -5.0, 3e8
    p = _raw(tmp_path / "a.h5", e[:, None], s)
    _expect(p, "incident_energies has 2 values <= 0 MeV", "1 values above 1e+08 MeV (100 TeV)")


def test_negative_voxels_with_tolerance(tmp_path, rng):
    e, s = _showers(rng, 40)
    s[0, 0] = -0.5 * NEGATIVE_TOLERANCE_MEV  # float noise: tolerated
    p = _raw(tmp_path / "ok.h5", e[:, None], s)
    assert validate_calochallenge(p, GEO) == []
    s[1, :4] = -2.0
    s[2, 0] = -0.01
    p = _raw(tmp_path / "bad.h5", e[:, None], s)
    _expect(p, "5 negative voxel energies below -0.001 MeV in 2 showers (min -2 MeV)")


def test_gev_incident_energies_with_mev_deposits(tmp_path, rng):
    e, s = _showers(rng, 50)
    p = _raw(tmp_path / "a.h5", (e / 1000)[:, None], s)  # E_inc in GeV, deposits in MeV
    _expect(
        p, "deposited energy exceeds 1.5 x the incident energy in 50 of 50 showers", "units look mixed up"
    )
    assert validate_calochallenge(p, GEO, check_units=False) == []
    check_calochallenge(p, GEO, check_units=False)


def test_everything_in_gev_below_1_gev(tmp_path, rng):
    e = rng.uniform(256, 900, 30)  # MeV
    s = (rng.dirichlet(np.ones(V), size=30) * (0.9 * e)[:, None]).astype(np.float32)
    assert validate_calochallenge(_raw(tmp_path / "mev.h5", e[:, None], s), GEO) == []
    p = _raw(tmp_path / "gev.h5", (e / 1000)[:, None], s / 1000)
    _expect(p, "all incident energies are below 1 MeV", "look like GeV")


def test_a_few_high_ratio_showers_are_fine(tmp_path, rng):
    """Fluctuations above 1.5 x E_inc in a small fraction (here 5 %) are not a unit problem."""
    e, s = _showers(rng, 100)
    s[:5] *= 2.0
    assert validate_calochallenge(_raw(tmp_path / "a.h5", e[:, None], s), GEO) == []


def test_validation_streams_in_chunks(tmp_path, rng):
    """Counts are the same whatever the chunk size (problems split across chunk boundaries)."""
    e, s = _showers(rng, 57)
    s[::4, 3] = np.nan
    p = _raw(tmp_path / "a.h5", e[:, None], s)
    ref = validate_calochallenge(p, GEO, chunk_size=10_000)
    for cs in (1, 4, 13):
        assert validate_calochallenge(p, GEO, chunk_size=cs) == ref
    assert "15 non-finite voxel values" in ref[0]


def test_auto_chunk_size_caps_memory_for_wide_geometries():
    from fastsim.data.hdf5 import auto_chunk_size

    assert auto_chunk_size(368) == 10_000  # dataset 1: 15 MB per chunk
    assert auto_chunk_size(40_500) == (64 << 20) // (4 * 40_500)  # dataset 3: 414 rows, not 1.6 GB
    assert auto_chunk_size(40_500, 7) == 7
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        auto_chunk_size(368, 0)


def test_row_info_matches_elementwise_definition(rng):
    """The two-pass row checks agree with the plain element-wise definitions, mixed problems included."""
    from fastsim.data.hdf5 import row_info

    e, s = _showers(rng, 300)
    s[rng.random(s.shape) < 0.01] = np.nan
    s[rng.random(s.shape) < 0.005] = np.inf
    s[rng.random(s.shape) < 0.005] = -np.inf
    s[rng.random(s.shape) < 0.01] = -0.5
    s[rng.random(s.shape) < 0.01] = -1e-4  # tolerated
    e[rng.random(300) < 0.05] = np.nan
    e[rng.random(300) < 0.05] = -3.0
    e[rng.random(300) < 0.05] = 1e9
    info = row_info(e, s)
    fin = np.isfinite(s)
    with np.errstate(invalid="ignore"):
        neg = s < -1e-3
    assert info.nonfinite_values == int((~fin).sum())
    assert info.negative_values == int(neg.sum())
    assert info.min_finite == float(s[fin].min())
    np.testing.assert_array_equal(info.masks["non-finite"], ~(np.isfinite(e) & fin.all(1)))
    np.testing.assert_array_equal(info.masks["negative voxel energies"], neg.any(1))
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(info.masks["incident energy <= 0"], np.isfinite(e) & (e <= 0))
        np.testing.assert_array_equal(info.masks["incident energy > 1e8 MeV"], np.isfinite(e) & (e > 1e8))
    ok = fin.all(1)
    np.testing.assert_allclose(info.row_sum[ok], s[ok].astype(np.float64).sum(1))
