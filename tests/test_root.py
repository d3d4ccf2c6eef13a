"""ROOT readers and `fastsim prep-root` on real TTrees written with uproot in tmp_path."""

from __future__ import annotations

import os

import awkward as ak
import numpy as np
import pytest
import uproot

from fastsim.data.root import RootSpec, check_root_inputs, iter_root_showers, read_root_showers
from fastsim.errors import FastsimError, InputFileError
from fastsim.geometry import Geometry

R_EDGES = [0.0, 5.0, 10.0, 20.0, 50.0, 100.0]
Z_EDGES = (0.0, 10.0, 20.0, 30.0)


@pytest.fixture
def geo() -> Geometry:
    return Geometry.regular(3, 4, R_EDGES, name="small")  # 60 voxels


def write_tree(path, branches: dict, name: str = "events", chunks: int = 1, compression=None) -> str:
    """A real TTree: ``mktree`` + ``extend`` (``file[name] = ...`` would write an RNTuple).

    ``branches`` maps names to numpy arrays (one row per entry) or awkward arrays (jagged); the
    entries are written in ``chunks`` baskets so that reading crosses basket boundaries.
    """
    n = len(next(iter(branches.values())))
    kwargs = {"compression": compression} if compression is not None else {}
    with uproot.recreate(path, **kwargs) as f:
        types = {}
        for key, value in branches.items():
            if isinstance(value, ak.Array):
                types[key] = value.type.content
            else:
                types[key] = (value.dtype, value.shape[1:]) if value.ndim > 1 else value.dtype
        tree = f.mktree(name, types, counter_name=lambda counted: "n_" + counted)
        for part in np.array_split(np.arange(n), chunks):
            if len(part):
                tree.extend({k: v[part[0] : part[-1] + 1] for k, v in branches.items()})
    return os.fspath(path)


def make_hits(rng, n: int, geo: Geometry, tilted: bool = False):
    """Random events of hits and their expected showers from Geometry.voxel_index (float64)."""
    counts = rng.integers(0, 60, n)
    m = int(counts.sum())
    x = rng.normal(0, 30, m).astype(np.float32)
    y = rng.normal(0, 30, m).astype(np.float32)
    z = rng.uniform(-2, 32, m).astype(np.float32)
    e = rng.exponential(5.0, m).astype(np.float32)
    x0 = rng.normal(0, 3, n)
    y0 = rng.normal(0, 3, n)
    branches = {
        "e_inc": rng.uniform(1e3, 1e5, n),
        "x0": x0,
        "y0": y0,
        "z0": np.zeros(n),
    }
    for key, flat in (("hit_x", x), ("hit_y", y), ("hit_z", z), ("hit_e", e)):
        branches[key] = ak.unflatten(flat, counts)
    ev = np.repeat(np.arange(n), counts)
    u = x.astype(np.float64) - np.repeat(x0.astype(np.float32), counts)
    v = y.astype(np.float64) - np.repeat(y0.astype(np.float32), counts)
    layer = np.searchsorted(Z_EDGES, z, side="right") - 1
    index = geo.voxel_index(layer, np.sqrt(u * u + v * v), np.arctan2(v, u))
    inside = index >= 0
    expected = np.zeros((n, geo.n_voxels))
    np.add.at(expected, (ev[inside], index[inside]), e[inside])
    return branches, expected, (m, int((~inside).sum()), float(e[~inside].sum(dtype=np.float64)))


HIT_SPEC = RootSpec(kind="hits", impact_branches=("x0", "y0", "z0"), layer_z=Z_EDGES)


# ------------------------------------------------------------------------------ per-hit layout
def test_hits_are_voxelised_with_energy_conserved(tmp_path, geo, rng):
    branches, expected, (m, n_out, e_out) = make_hits(rng, 200, geo)
    path = write_tree(tmp_path / "hits.root", branches, chunks=3)
    e_inc, showers, stats = read_root_showers(path, geo, HIT_SPEC, step_size=37)
    np.testing.assert_allclose(e_inc, branches["e_inc"])
    np.testing.assert_allclose(showers, expected, rtol=1e-5, atol=1e-4)
    assert stats.n_events == 200 and stats.n_hits == m
    assert stats.n_hits_outside == n_out > 0
    assert stats.e_outside == pytest.approx(e_out, rel=1e-6)
    assert showers.sum(dtype=np.float64) + stats.e_outside == pytest.approx(stats.e_hits, rel=1e-6)


def test_chunked_reading_over_several_files_equals_reading_at_once(tmp_path, geo, rng):
    parts = [make_hits(rng, n, geo) for n in (50, 1, 80)]
    paths = [write_tree(tmp_path / f"f{i}.root", b, chunks=2) for i, (b, _, _) in enumerate(parts)]
    chunks = list(iter_root_showers(paths, geo, HIT_SPEC, step_size=7))
    assert {c[2].path for c in chunks} == set(paths)
    assert all(len(c[0]) <= 7 for c in chunks)
    e_chunked = np.concatenate([c[0] for c in chunks])
    s_chunked = np.concatenate([c[1] for c in chunks])
    e_all, s_all, _ = read_root_showers(paths, geo, HIT_SPEC, step_size=10_000)
    np.testing.assert_array_equal(e_chunked, e_all)
    np.testing.assert_array_equal(s_chunked, s_all)
    # no read-ahead thread, no worker threads: the same numbers
    e_one, s_one, _ = read_root_showers(paths, geo, HIT_SPEC, step_size=7, prefetch=0, threads=1)
    np.testing.assert_array_equal(e_one, e_all)
    np.testing.assert_array_equal(s_one, s_all)
    # two threads decompressing and voxelising blocks (the default before): the same numbers
    _, s_two, _ = read_root_showers(paths, geo, HIT_SPEC, step_size=7, threads=2)
    np.testing.assert_array_equal(s_two, s_all)
    with pytest.raises(FastsimError, match="threads must be >= 1, got 0"):
        read_root_showers(paths, geo, HIT_SPEC, threads=0)
    np.testing.assert_allclose(s_all, np.concatenate([p[1] for p in parts]), rtol=1e-5, atol=1e-4)
    # entry ranges tile each file
    first = [c[2] for c in chunks if c[2].path == paths[2]]
    assert first[0].entry_start == 0 and first[-1].entry_stop == 80


def test_tilted_direction_and_units_from_branches(tmp_path, geo):
    # one event: axis through (1, 2, 0) cm along (sin 30°, 0, cos 30°); hits 7 mm from the axis
    theta = np.radians(30.0)
    d = np.array([np.sin(theta), 0.0, np.cos(theta)])
    e1 = np.array([np.cos(theta), 0.0, -np.sin(theta)])
    p0 = np.array([10.0, 20.0, 0.0])  # mm
    hits_mm = np.array([p0 + 10.0 * d + 7.0 * e1, p0 + 22.0 * d + 30.0 * np.array([0.0, 1.0, 0.0])])
    hits_cm = (hits_mm / 10.0).astype(np.float64)
    branches = {
        "E0": np.array([50.0]),  # GeV
        "px": np.array([1.0]), "py": np.array([2.0]), "pz": np.array([0.0]),  # cm
        "ux": np.array([d[0] * 2]), "uy": np.array([0.0]), "uz": np.array([d[2] * 2]),
        "hx": ak.Array([hits_cm[:, 0]]), "hy": ak.Array([hits_cm[:, 1]]), "hz": ak.Array([hits_cm[:, 2]]),
        "he": ak.Array([[0.25, 0.5]]),  # GeV
    }
    path = write_tree(tmp_path / "tilted.root", branches, name="showers")
    spec = RootSpec(
        kind="hits", tree="showers", incident_branch="E0", hit_e="he", hit_x="hx", hit_y="hy", hit_z="hz",
        impact_branches=("px", "py", "pz"), direction_branches=("ux", "uy", "uz"), layer_z=Z_EDGES,
        energy_unit="GeV", length_unit="cm",
    )
    e_inc, showers, stats = read_root_showers(path, geo, spec)
    assert e_inc[0] == 50_000.0
    # hit 1: z = 10 cos30 - 7 sin30 = 5.2 mm -> layer 0, α = 0 (bin 2), r = 7 (bin 1)
    # hit 2: z = 22 cos30 = 19.05 mm -> layer 1, α = π/2 (bin 3), r = 30 (bin 3)
    assert showers[0, 0 * 20 + 2 * 5 + 1] == pytest.approx(250.0)
    assert showers[0, 1 * 20 + 3 * 5 + 3] == pytest.approx(500.0)
    assert stats.n_hits_outside == 0


def test_hits_with_layer_and_cell_branches(tmp_path):
    g = Geometry.builtin("1-photons")  # layer ids 0, 1, 2, 3, 12
    branches = {
        "e_inc": np.array([1000.0, 2000.0]),
        "layer": ak.values_astype(ak.Array([[12, 1], [7]]), np.int32),
        "cell": ak.values_astype(ak.Array([[3, 99], [0]]), np.int32),
        "edep": ak.Array([[1.0, 2.0], [4.0]]),
    }
    path = write_tree(tmp_path / "cells.root", branches)
    spec = RootSpec(kind="hits", hit_e="edep", hit_layer="layer", hit_cell="cell", hit_x=None, hit_y=None, hit_z=None)
    _, showers, stats = read_root_showers(path, g, spec)
    assert showers[0, g.layer_slice(4).start + 3] == 1.0
    assert showers[0, g.layer_slice(1).start + 99] == 2.0
    assert stats.n_hits_outside == 1 and stats.e_outside == 4.0  # layer id 7 is not used


# ------------------------------------------------------------------------------ voxel layout
@pytest.mark.parametrize("layout", ["fixed", "jagged"])
def test_voxel_arrays_fixed_and_jagged(tmp_path, geo, rng, layout):
    showers = rng.exponential(1.0, (40, geo.n_voxels)).astype(np.float32)
    e_inc = rng.uniform(1e3, 1e4, 40)
    vox = showers if layout == "fixed" else ak.Array(list(showers))
    path = write_tree(tmp_path / "vox.root", {"e_inc": e_inc, "voxels": vox}, chunks=3)
    got_e, got_s, stats = read_root_showers(path, geo, RootSpec(), step_size=9)
    np.testing.assert_array_equal(got_e, e_inc)
    np.testing.assert_array_equal(got_s, showers)
    assert got_s.dtype == np.float32 and stats.n_events == 40


def test_voxel_energy_unit_scaling(tmp_path, geo, rng):
    showers = rng.exponential(1.0, (5, geo.n_voxels)).astype(np.float32)
    path = write_tree(tmp_path / "gev.root", {"e_inc": np.full(5, 2.0), "voxels": showers})
    e, s, _ = read_root_showers(path, geo, RootSpec(energy_unit="GeV", incident_energy_unit="TeV"))
    np.testing.assert_allclose(e, 2e6)
    np.testing.assert_allclose(s, showers * 1000.0, rtol=1e-6)


# ------------------------------------------------------------------------------ errors
def good_voxels(geo, n=4):
    return {"e_inc": np.full(n, 1000.0), "voxels": np.ones((n, geo.n_voxels), np.float32)}


def test_missing_file_and_not_root(tmp_path, geo):
    with pytest.raises(InputFileError, match=r"nope\.root: file not found"):
        check_root_inputs(tmp_path / "nope.root", RootSpec(), geo)
    text = tmp_path / "text.root"
    text.write_text("hello, not ROOT\n")
    with pytest.raises(InputFileError, match=r"text\.root: not a readable ROOT file"):
        check_root_inputs(text, RootSpec(), geo)


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_damaged_files_give_one_line_errors(tmp_path, geo, rng, damage):
    b = {"e_inc": np.full(4000, 10.0), "voxels": rng.random((4000, geo.n_voxels)).astype(np.float32)}
    path = write_tree(tmp_path / "d.root", b, chunks=4)
    data = bytearray(open(path, "rb").read())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2 : len(data) // 2 + 2000] = bytes(2000)
    open(path, "wb").write(bytes(data))
    with pytest.raises(InputFileError, match=r"d\.root(:events)?: (cannot read entries|not a readable ROOT file)") as info:
        read_root_showers(path, geo, RootSpec(), step_size=1000)
    assert "\n" not in str(info.value)


def test_missing_tree_lists_the_trees_and_rntuple_is_refused(tmp_path, geo):
    path = write_tree(tmp_path / "a.root", good_voxels(geo), name="showers")
    with pytest.raises(InputFileError, match=r"a\.root:events: no such TTree; the file has TTrees: showers"):
        check_root_inputs(path, RootSpec(), geo)
    rn = tmp_path / "rntuple.root"
    with uproot.recreate(rn) as f:
        f["events"] = {"e_inc": np.ones(3)}  # uproot >= 5.7 writes an RNTuple here
    with pytest.raises(InputFileError, match=r"rntuple\.root:events: is a .*RNTuple.*, not a TTree"):
        check_root_inputs(rn, RootSpec(), geo)


def test_missing_branch_lists_the_branches(tmp_path, geo):
    path = write_tree(tmp_path / "a.root", good_voxels(geo))
    with pytest.raises(InputFileError, match=r"a\.root:events/edep: no such branch; the tree has: e_inc, voxels"):
        check_root_inputs(path, RootSpec(voxels_branch="edep"), geo)


def test_wrong_branch_types(tmp_path, geo):
    branches = {
        "e_inc": np.full(3, 10.0),
        "e_jag": ak.Array([[1.0], [2.0], [3.0]]),
        "flag": np.array([True, False, True]),
        "voxels": np.ones((3, geo.n_voxels), np.float32),
        "vox_small": np.ones((3, 50), np.float32),
        "hx": ak.Array([[1.0], [2.0], [3.0]]),
        "fx": np.ones((3, 4), np.float32),
    }
    path = write_tree(tmp_path / "t.root", branches)
    with pytest.raises(InputFileError, match=r"t\.root:events/e_jag: expected one number per entry, found variable-length"):
        check_root_inputs(path, RootSpec(incident_branch="e_jag"), geo)
    with pytest.raises(InputFileError, match=r"t\.root:events/flag: expected one number per entry, found bool"):
        check_root_inputs(path, RootSpec(incident_branch="flag"), geo)
    with pytest.raises(InputFileError, match=r"t\.root:events/vox_small: 50 voxels per entry but geometry 'small' has 60"):
        check_root_inputs(path, RootSpec(voxels_branch="vox_small"), geo)
    with pytest.raises(InputFileError, match=r"t\.root:events/e_inc: expected an array of voxel energies per entry, found float64"):
        check_root_inputs(path, RootSpec(voxels_branch="e_inc"), geo)
    hit = RootSpec(kind="hits", hit_x="fx", hit_y="hx", hit_z="hx", hit_e="hx", layer_z=Z_EDGES)
    with pytest.raises(InputFileError, match=r"t\.root:events/fx: expected a variable-length array of numbers per entry, found float32\[4\]"):
        check_root_inputs(path, hit, geo)


def test_string_branches_are_refused(tmp_path, geo):
    path = tmp_path / "s.root"
    with uproot.recreate(path) as f:
        tree = f.mktree("events", {"e_inc": "string", "voxels": ("float32", (geo.n_voxels,))})
        tree.extend({"e_inc": np.array(["10 GeV", "20 GeV"]), "voxels": np.ones((2, geo.n_voxels), np.float32)})
    with pytest.raises(InputFileError, match=r"s\.root:events/e_inc: expected one number per entry, found AsStrings"):
        check_root_inputs(path, RootSpec(), geo)


def test_jagged_voxels_of_the_wrong_length(tmp_path, geo):
    vox = ak.Array([np.ones(60), np.ones(60), np.ones(59)])
    path = write_tree(tmp_path / "j.root", {"e_inc": np.full(3, 10.0), "voxels": vox})
    with pytest.raises(InputFileError, match=r"j\.root:events/voxels: entry 2 has 59 voxels but geometry 'small' has 60"):
        read_root_showers(path, geo, RootSpec())


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("e_inc", np.nan, r"events/e_inc: entry 2: incident energy is NaN or infinite"),
        ("e_inc", -5.0, r"events/e_inc: entry 2: incident energy <= 0"),
        ("e_inc", 0.0, r"events/e_inc: entry 2: incident energy <= 0"),
        ("e_inc", 1e12, r"events/e_inc: entry 2: incident energy > 1e\+08 MeV"),
        ("voxels", np.inf, r"events/voxels: entry 2: voxel energy is NaN or infinite"),
        ("voxels", -1.0, r"events/voxels: entry 2: negative voxel energy"),
    ],
)
def test_bad_voxel_entries_raise_or_are_skipped(tmp_path, geo, column, value, message):
    b = good_voxels(geo, 6)
    if column == "e_inc":
        b["e_inc"][2] = value
    else:
        b["voxels"][2, 17] = value
    path = write_tree(tmp_path / "bad.root", b)
    with pytest.raises(InputFileError, match=r"bad\.root:" + message):
        read_root_showers(path, geo, RootSpec())
    e, s, stats = read_root_showers(path, geo, RootSpec(), bad="skip")
    assert len(e) == 5 and stats.n_skipped == 1 and stats.n_events == 5
    assert sum(stats.skipped_reasons.values()) == 1
    assert np.all(np.isfinite(s)) and np.all(e > 0)


def test_bad_hit_entries(tmp_path, geo, rng):
    branches, expected, _ = make_hits(rng, 20, geo)
    counts = ak.to_numpy(ak.num(branches["hit_x"]))
    k = int(np.flatnonzero(counts > 0)[3])  # an event with hits
    flat_x = ak.to_numpy(ak.flatten(branches["hit_x"])).copy()
    flat_x[counts[:k].sum()] = np.nan
    branches["hit_x"] = ak.unflatten(flat_x, counts)
    flat_e = ak.to_numpy(ak.flatten(branches["hit_e"])).copy()
    j = int(np.flatnonzero(counts > 0)[6])
    flat_e[counts[:j].sum()] = -2.0
    branches["hit_e"] = ak.unflatten(flat_e, counts)
    path = write_tree(tmp_path / "badhits.root", branches)
    with pytest.raises(InputFileError, match=rf"badhits\.root:events/hit_x: entry {k}: hit value is NaN or infinite \(1 more invalid"):
        read_root_showers(path, geo, HIT_SPEC)
    e, s, stats = read_root_showers(path, geo, HIT_SPEC, bad="skip", step_size=6)
    keep = np.ones(20, bool)
    keep[[k, j]] = False
    assert stats.n_skipped == 2 and stats.skipped_reasons == {"hit value is NaN or infinite": 1, "negative hit energy": 1}
    np.testing.assert_allclose(s, expected[keep], rtol=1e-5, atol=1e-4)



def test_numba_and_numpy_voxelisers_read_the_same_showers(tmp_path, geo, rng):
    """The per-hit path with the compiled loops and with the numpy passes: identical showers and
    stats, also where invalid entries are skipped (the check inside the compiled loop)."""
    from fastsim.data.voxelise import compiled_kernels

    if compiled_kernels() is None:
        pytest.skip("numba is not installed")
    branches, _, _ = make_hits(rng, 120, geo)
    counts = ak.to_numpy(ak.num(branches["hit_x"]))
    flat_z = ak.to_numpy(ak.flatten(branches["hit_z"])).copy()
    flat_z[counts[: int(np.flatnonzero(counts > 0)[5])].sum()] = np.inf
    branches["hit_z"] = ak.unflatten(flat_z, counts)
    path = write_tree(tmp_path / "hits.root", branches, chunks=2)
    tilted = RootSpec(kind="hits", impact_branches=("x0", "y0", "z0"), layer_z=Z_EDGES, direction=(0.1, -0.2, 1.0))
    for spec in (HIT_SPEC, tilted):
        ref = read_root_showers(path, geo, spec, bad="skip", step_size=25, engine="numpy")
        out = read_root_showers(path, geo, spec, bad="skip", step_size=25, engine="numba")
        np.testing.assert_array_equal(out[0], ref[0])
        np.testing.assert_array_equal(out[1], ref[1])
        assert out[2] == ref[2] and ref[2].n_skipped == 1

def test_hit_branches_with_different_counts(tmp_path, geo):
    branches = {
        "e_inc": np.full(2, 10.0), "x0": np.zeros(2), "y0": np.zeros(2), "z0": np.zeros(2),
        "hit_x": ak.Array([[1.0], [1.0, 2.0]]), "hit_y": ak.Array([[1.0], [1.0, 2.0]]),
        "hit_z": ak.Array([[1.0], [1.0, 2.0]]), "hit_e": ak.Array([[1.0], [1.0]]),
    }
    path = write_tree(tmp_path / "c.root", branches)
    with pytest.raises(InputFileError, match=r"c\.root:events/hit_x: entry 1 has 2 hits but branch 'hit_e' has 1"):
        read_root_showers(path, geo, HIT_SPEC)


def test_spec_and_geometry_mismatch_are_option_errors(tmp_path, geo):
    path = write_tree(tmp_path / "a.root", good_voxels(geo))
    with pytest.raises(FastsimError, match="4 layer z boundaries given but geometry 'photons"):
        check_root_inputs(path, RootSpec(kind="hits", layer_z=Z_EDGES), Geometry.regular(5, 1, [0, 1], name="photons"))
    with pytest.raises(FastsimError, match="unknown energy unit"):
        RootSpec(energy_unit="erg")
    with pytest.raises(FastsimError, match="needs a z branch"):
        RootSpec(kind="hits")


# ------------------------------------------------------------------------------ CLI
def test_prep_root_cli_end_to_end(tmp_path, geo, rng, capsys):
    from fastsim.cli import main
    from fastsim.data.hdf5 import open_calochallenge, read_calochallenge

    parts = [make_hits(rng, n, geo) for n in (30, 25)]
    for b, _, _ in parts:
        b["e_inc"] = b["e_inc"] / 1000.0  # GeV in the file, MeV in the output
    parts[1][0]["e_inc"][4] = np.nan
    paths = [write_tree(tmp_path / f"h{i}.root", b) for i, (b, _, _) in enumerate(parts)]
    out = tmp_path / "out.h5"
    geo_xml = tmp_path / "geo.xml"
    layers = "".join(f'<Layer id="{i}" r_edges="{",".join(map(str, R_EDGES))}" n_bin_alpha="4"/>' for i in range(3))
    geo_xml.write_text(f'<Bins><Bin name="x">{layers}</Bin></Bins>')
    args = [
        "prep-root", *paths, "-o", str(out), "--geometry", str(geo_xml), "--kind", "hits",
        "--impact-branches", "x0,y0,z0", "--layer-z", ",".join(map(str, Z_EDGES)),
        "--incident-energy-unit", "GeV", "--step-size", "8", "--no-progress",
    ]
    assert main(args) == 2  # the NaN stops the conversion ...
    err = capsys.readouterr().err
    assert "h1.root:events/e_inc: entry 4: incident energy is NaN or infinite" in err
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if "partial" in p]  # ... leaving nothing
    assert main([*args, "--skip-bad"]) == 0
    text = capsys.readouterr().out
    assert "54 showers" in text and "from 55 events" in text and "skipped 1 invalid events" in text
    e, s = read_calochallenge(out)
    keep = np.ones(55, bool)
    keep[30 + 4] = False
    np.testing.assert_allclose(e, np.concatenate([p[0]["e_inc"] for p in parts])[keep] * 1000.0)
    np.testing.assert_allclose(s, np.concatenate([p[1] for p in parts])[keep], rtol=1e-5, atol=1e-4)
    with open_calochallenge(out) as cf:
        assert cf.attrs["producer"] == "fastsim-prep-root"
        assert int(cf.attrs["n_skipped"]) == 1
    assert main([*args, "--skip-bad"]) == 2  # exists: needs --overwrite
    assert capsys.readouterr().err.strip() == (
        f"fastsim prep-root: error: {out}: already exists (pass --overwrite to replace it)"
    )


def test_prep_root_voxels_script(tmp_path, geo, rng):
    import subprocess
    import sys

    showers = rng.exponential(1.0, (12, geo.n_voxels)).astype(np.float32)
    path = write_tree(tmp_path / "v.root", {"E": rng.uniform(1, 2, 12), "vox": showers}, name="t")
    out = tmp_path / "v.h5"
    script = os.path.join(os.path.dirname(__file__), "..", "data_prep", "root_to_h5.py")
    geo_json = geo.to_json()
    r = subprocess.run(
        [sys.executable, script, path, "-o", str(out), "--geometry", geo_json, "--tree", "t",
         "--e-inc-branch", "E", "--voxels-branch", "vox", "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    from fastsim.data.hdf5 import read_calochallenge

    e, s = read_calochallenge(out)
    np.testing.assert_array_equal(s, showers)
    r2 = subprocess.run(
        [sys.executable, script, path, "-o", str(tmp_path / "w.h5"), "--geometry", "1-photons", "--tree", "t",
         "--e-inc-branch", "E", "--voxels-branch", "vox", "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )
    assert r2.returncode == 2
    assert "v.root:t/vox: 60 voxels per entry but geometry '1-photons' has 368" in r2.stderr
