"""Every bad input through the ``fastsim`` command line: one line on stderr, no traceback, nothing left.

Each case is a command line with one mistake (a file, a branch, a config key, a value, an output
path, a checkpoint) and the words its error line must hold (the file or key, and the problem).
The sweep asserts: non-zero exit status, exactly one line on stderr holding those words, no
"Traceback", and nothing (neither the output nor a hidden partial file) under the output name.
The commands run in this process through :func:`fastsim.cli.main`, with stderr captured at the
file-descriptor level (so log handlers and C libraries count too), to keep the sweep fast; one
tiny checkpoint and one set of input files serve every case.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from helpers_cli import small_model_args, tiny_checkpoint, write_toy_showers

from fastsim.geometry import Geometry

GEO = Geometry.regular(3, 4, [0.0, 5.0, 10.0, 20.0, 50.0, 100.0], name="small")  # 60 voxels
#: a location nobody can create files in, root included
READ_ONLY_DIR = "/proc"


@pytest.fixture(scope="session")
def fx(tmp_path_factory) -> SimpleNamespace:
    """Inputs shared by every case: showers, training tensors, a tiny WGAN-GP checkpoint, ROOT files."""
    import awkward as ak
    import uproot

    from fastsim.data.hdf5 import write_calochallenge
    from fastsim.data.tensors import prepare_training_tensors

    d = tmp_path_factory.mktemp("cli_errors")
    f = SimpleNamespace(dir=d)
    f.showers = str(d / "showers.h5")
    write_toy_showers(f.showers, GEO, 300, seed=0)
    f.tensors = str(d / "train.h5")
    prepare_training_tensors([f.showers], f.tensors, GEO, transform_config="divide", seed=0, progress=False)
    e, s = h5py.File(f.showers)["incident_energies"][:, 0], h5py.File(f.showers)["showers"][:]
    f.nan_tensors = str(d / "nan_tensors.h5")  # as if edited after prep-train (which refuses NaN)
    import shutil

    shutil.copyfile(f.tensors, f.nan_tensors)
    with h5py.File(f.nan_tensors, "r+") as h:
        row = h["x"][7]
        row[2] = np.nan
        h["x"][7] = row
    f.gev = str(d / "gev_deposits.h5")  # deposits in GeV, energies in MeV
    write_calochallenge(f.gev, e, s / 1000.0)
    f.nan = str(d / "nan.h5")
    s_nan = s.copy()
    s_nan[5, 3] = np.nan
    write_calochallenge(f.nan, e, s_nan)
    f.empty = str(d / "empty.h5")
    write_calochallenge(f.empty, np.zeros(0), np.zeros((0, GEO.n_voxels), np.float32))
    f.no_showers = str(d / "no_showers.h5")
    with h5py.File(f.no_showers, "w") as h:
        h["incident_energies"] = e[:, None]
    f.text = str(d / "notes.txt")
    with open(f.text, "w") as t:
        t.write("not a data file\n")
    f.garbage_ckpt = str(d / "garbage.ckpt")
    with open(f.garbage_ckpt, "wb") as g:
        g.write(os.urandom(4096))

    f.ckpt = tiny_checkpoint(str(d), f.tensors, weights_only="weights_only.ckpt")
    f.weights_only = str(d / "weights_only.ckpt")

    # ROOT: voxel arrays, and per-hit events whose hits all lie 5 m off axis
    f.root = str(d / "voxels.root")
    with uproot.recreate(f.root) as r:
        tree = r.mktree("events", {"e_inc": "float64", "voxels": ("float32", (GEO.n_voxels,))})
        tree.extend({"e_inc": e[:50], "voxels": s[:50]})
    f.root_hits = str(d / "hits_outside.root")
    counts = np.full(20, 10)
    m = int(counts.sum())
    with uproot.recreate(f.root_hits) as r:
        branches = {
            "e_inc": np.full(20, 1000.0),
            "hit_x": ak.unflatten(np.full(m, 5000.0, np.float32), counts),
            "hit_y": ak.unflatten(np.zeros(m, np.float32), counts),
            "hit_z": ak.unflatten(np.full(m, 5.0, np.float32), counts),
            "hit_e": ak.unflatten(np.full(m, 10.0, np.float32), counts),
        }
        tree = r.mktree("events", {k: (v.type.content if isinstance(v, ak.Array) else v.dtype)
                                   for k, v in branches.items()}, counter_name=lambda c: "n_" + c)  # fmt: skip
        tree.extend(branches)

    # config files with one mistake each
    def cfg(name: str, text: str) -> str:
        path = str(d / name)
        with open(path, "w") as c:
            c.write(text)
        return path

    f.cfg_unknown = cfg("unknown_key.yaml", "model:\n  init_args:\n    latent_dimm: 8\n")
    f.cfg_unknown_top = cfg("unknown_top.yaml", "traner:\n  max_epochs: 3\n")
    f.cfg_yaml = cfg("broken.yaml", "model:\n  init_args: [1, 2\n")
    f.cfg_list = cfg("list.yaml", "- 1\n- 2\n")
    f.cfg_latent0 = cfg("latent0.yaml", "model:\n  init_args:\n    latent_dim: 0\n")
    f.cfg_type = cfg("type.yaml", "trainer:\n  max_epochs: many\n")
    f.cfg_vae_bad = cfg("vae_bad.yaml", "model:\n  class_path: fastsim.models.vae.ShowerVAE\n"
                        "  init_args:\n    n_importance_samples: 0\n")  # fmt: skip
    f.gen_parent_file = str(d / "notes.txt" / "gen.h5")
    return f


@dataclass
class Case:
    """One bad command line: ``argv``, the words its error line holds, and its output path."""

    argv: list[str]
    needles: list[str]
    output: str | None = None
    keeps: str | None = None  # an existing file that must stay untouched


def _fit(fx, *extra: str, model: str = "wgan_gp") -> list[str]:
    return ["fit", *small_model_args(fx.tensors, model), "--trainer.max_steps", "3", *extra]


def cases(fx, tmp) -> dict[str, Case]:
    """The sweep. ``tmp``: a fresh directory for this case's outputs."""
    out = str(tmp / "out.h5")
    ro = f"{READ_ONLY_DIR}/fastsim-out.h5"
    missing_dir = str(tmp / "no_such_dir" / "out.h5")
    gen = ["generate", "--checkpoint", fx.ckpt, "--energies", "1024,2048", "--n", "10"]
    bench = ["benchmark", "--generated", fx.showers, "--reference", fx.showers, "--no-classifier", "--no-plots"]
    existing = str(tmp / "existing.h5")  # made by the test ("old")
    report_dir = tmp / "old_report"  # made by the test
    c = {
        # ---------------------------------------------------------------- prep-train: files and values
        "prep-train missing input": Case(["prep-train", str(tmp / "nope.h5"), "-o", out, "--geometry", GEO_XML],
                                         ["nope.h5", "not found"], out),
        "prep-train text input": Case(["prep-train", fx.text, "-o", out, "--geometry", GEO_XML],
                                      ["notes.txt", "HDF5"], out),
        "prep-train no showers dataset": Case(["prep-train", fx.no_showers, "-o", out, "--geometry", GEO_XML],
                                              ["no_showers.h5", "showers"], out),
        "prep-train NaN": Case(["prep-train", fx.nan, "-o", out, "--geometry", GEO_XML],
                               ["nan.h5", "non-finite", "--skip-bad"], out),
        "prep-train GeV deposits": Case(["prep-train", fx.gev, "-o", out, "--geometry", GEO_XML],
                                        ["gev_deposits.h5", "GeV", "1000x too small"], out),
        "prep-train unknown geometry": Case(["prep-train", fx.showers, "-o", out, "--geometry", "9-kaons"],
                                            ["9-kaons"], out),
        "prep-train bad transform": Case(["prep-train", fx.showers, "-o", out, "--geometry", GEO_XML,
                                          "--transform", "sqrt"], ["sqrt"], out),
        "prep-train negative threshold": Case(["prep-train", fx.showers, "-o", out, "--geometry", GEO_XML,
                                               "--threshold", "-1"], ["threshold", ">= 0 MeV", "-1"], out),
        "prep-train NaN threshold": Case(["prep-train", fx.showers, "-o", out, "--geometry", GEO_XML,
                                          "--threshold", "nan"], ["threshold", "nan"], out),
        "prep-train output dir missing": Case(["prep-train", fx.showers, "-o", missing_dir, "--geometry", GEO_XML],
                                              ["no_such_dir", "does not exist"], missing_dir),
        "prep-train output parent is a file": Case(
            ["prep-train", fx.showers, "-o", fx.gen_parent_file, "--geometry", GEO_XML],
            ["notes.txt", "is a file, not a directory"], fx.gen_parent_file),
        "prep-train read-only output": Case(["prep-train", fx.showers, "-o", ro, "--geometry", GEO_XML],
                                            [ro, "cannot write here"], ro),
        "prep-train output exists": Case(["prep-train", fx.showers, "-o", existing, "--geometry", GEO_XML],
                                         [existing, "already exists", "--overwrite"], keeps=existing),
        "prep-train missing -o": Case(["prep-train", fx.showers, "--geometry", GEO_XML],
                                      ["-o/--output", "required"]),
        # ---------------------------------------------------------------- prep-root: files, branches, data
        "prep-root missing file": Case(["prep-root", str(tmp / "nope.root"), "-o", out, "--geometry", GEO_XML],
                                       ["nope.root"], out),
        "prep-root not ROOT": Case(["prep-root", fx.text, "-o", out, "--geometry", GEO_XML], ["notes.txt"], out),
        "prep-root wrong tree": Case(["prep-root", fx.root, "-o", out, "--geometry", GEO_XML, "--tree", "evts"],
                                     ["voxels.root", "evts"], out),
        "prep-root missing branch": Case(["prep-root", fx.root, "-o", out, "--geometry", GEO_XML,
                                          "--voxels-branch", "cells"], ["voxels.root", "cells"], out),
        "prep-root hits all outside": Case(["prep-root", fx.root_hits, "-o", out, "--geometry", GEO_XML,
                                            "--kind", "hits", "--layer-z", "0,10,20,30", "--no-progress"],
                                           ["hits_outside.root", "all 200 hits fall outside the geometry"], out),
        "prep-root read-only output": Case(["prep-root", fx.root, "-o", ro, "--geometry", GEO_XML],
                                           [ro, "cannot write here"], ro),
        # ---------------------------------------------------------------- generate: checkpoints, values, outputs
        "generate missing checkpoint": Case(["generate", "--checkpoint", str(tmp / "no.ckpt"), "-o", out,
                                             "--energies", "1024", "--n", "5"], ["no.ckpt", "not found"], out),
        "generate garbage checkpoint": Case(["generate", "--checkpoint", fx.garbage_ckpt, "-o", out,
                                             "--energies", "1024", "--n", "5"],
                                            ["garbage.ckpt", "not a readable PyTorch checkpoint"], out),
        "generate HDF5 as checkpoint": Case(["generate", "--checkpoint", fx.showers, "-o", out,
                                             "--energies", "1024", "--n", "5"], ["showers.h5", "checkpoint"], out),
        "generate energies not numbers": Case([*gen[:3], "-o", out, "--energies", "1e3,abc", "--n", "5"],
                                              ["abc"], out),
        "generate negative energy": Case([*gen[:3], "-o", out, "--energies", "-5", "--n", "5"], ["-5"], out),
        "generate zero showers": Case([*gen[:3], "-o", out, "--energies", "1024", "--n", "0"], ["--n"], out),
        "generate like missing": Case([*gen[:3], "-o", out, "--like", str(tmp / "ref.h5")],
                                      ["ref.h5", "not found"], out),
        "generate like wrong voxels": Case([*gen[:3], "-o", out, "--like", PHOTONS_REF],
                                           ["photons_ds1_g4.h5", "368 voxels"], out),
        "generate batch size 0": Case([*gen, "-o", out, "--batch-size", "0"], ["--batch-size", ">= 1"], out),
        "generate output dir missing": Case([*gen, "-o", missing_dir], ["no_such_dir", "does not exist"], missing_dir),
        "generate output parent is a file": Case([*gen, "-o", fx.gen_parent_file],
                                                 ["notes.txt", "is a file, not a directory"], fx.gen_parent_file),
        "generate read-only output": Case([*gen, "-o", ro], [ro, "cannot write here"], ro),
        "generate output is a directory": Case([*gen, "-o", str(tmp)], [str(tmp), "is a directory"]),
        "generate output exists": Case([*gen, "-o", existing], [existing, "already exists"], keeps=existing),
        "generate unknown option": Case([*gen, "-o", out, "--sead", "3"], ["--sead"], out),
        # ---------------------------------------------------------------- export
        "export missing checkpoint": Case(["export", "--checkpoint", str(tmp / "no.ckpt"), "-o",
                                           str(tmp / "m.onnx")], ["no.ckpt", "not found"], str(tmp / "m.onnx")),
        "export read-only output": Case(["export", "--checkpoint", fx.ckpt, "-o", f"{READ_ONLY_DIR}/m.onnx"],
                                        [f"{READ_ONLY_DIR}/m.onnx", "cannot write here"], f"{READ_ONLY_DIR}/m.onnx"),
        "export output parent is a file": Case(["export", "--checkpoint", fx.ckpt, "-o", fx.text + "/m.onnx"],
                                               ["notes.txt", "is a file, not a directory"]),
        # ---------------------------------------------------------------- benchmark
        "benchmark empty generated": Case([*bench[:1], "--generated", fx.empty, *bench[3:], "--out",
                                           str(tmp / "rep")], ["empty.h5", "holds no showers"], str(tmp / "rep")),
        "benchmark missing reference": Case([*bench[:3], "--reference", str(tmp / "g4.h5"), *bench[5:], "--out",
                                             str(tmp / "rep")], ["g4.h5", "not found"], str(tmp / "rep")),
        "benchmark report exists": Case([*bench, "--out", str(report_dir)],
                                        [str(report_dir), "already exists", "--overwrite"]),
        "benchmark read-only report": Case([*bench, "--out", f"{READ_ONLY_DIR}/rep"],
                                           [f"{READ_ONLY_DIR}/rep", "cannot write here"], f"{READ_ONLY_DIR}/rep"),
        "benchmark report parent missing": Case([*bench, "--out", str(tmp / "a" / "rep")],
                                                ["does not exist"], str(tmp / "a" / "rep")),
        # ---------------------------------------------------------------- simulate (outputs: checked before Geant4)
        "simulate read-only output": Case(["simulate", "-o", ro, "--energies", "1000", "-n", "1"],
                                          [ro, "cannot write here"], ro),
        "simulate ROOT output dir missing": Case(["simulate", "-o", out, "--root", str(tmp / "x" / "g4.root"),
                                                  "--energies", "1000", "-n", "1"],
                                                 ["g4.root", "does not exist"], out),
        # ---------------------------------------------------------------- fit: configs, values, checkpoints
        "fit config missing": Case(["fit", "--config", str(tmp / "nope.yaml")], ["nope.yaml", "no such config"]),
        "fit config unknown name": Case(["fit", "--config", "wgan"], ["wgan", "packaged: "]),
        "fit config broken YAML": Case(["fit", "--config", fx.cfg_yaml], ["broken.yaml", "not valid YAML"]),
        "fit config not a mapping": Case(["fit", "--config", fx.cfg_list], ["list.yaml", "mapping"]),
        "fit config unknown key": Case(_fit(fx, "--config", fx.cfg_unknown),
                                       ["unknown_key.yaml", "'model.init_args.latent_dimm'"]),
        "fit config unknown group": Case(_fit(fx, "--config", fx.cfg_unknown_top),
                                         ["unknown_top.yaml", "'traner'"]),
        "fit config latent_dim 0": Case(_fit(fx, "--config", fx.cfg_latent0),
                                        ["latent0.yaml", "model.init_args.latent_dim must be an integer >= 1"]),
        "fit config wrong type": Case(_fit(fx, "--config", fx.cfg_type), ["trainer.max_epochs", "many"]),
        "fit VAE config bad value": Case(_fit(fx, "--config", fx.cfg_vae_bad, model="vae"),
                                         ["vae_bad.yaml", "n_importance_samples must be an integer >= 1"]),
        "fit unknown option": Case(_fit(fx, "--trainer.max_epochz", "3"), ["--trainer.max_epochz"]),
        "fit missing train file": Case(_fit(fx, "--data.train_file", str(tmp / "t.h5")), ["t.h5", "not found"]),
        "fit CaloChallenge file as tensors": Case(_fit(fx, "--data.train_file", fx.showers),
                                                  ["showers.h5", "training tensors"]),
        "fit NaN in the training tensors": Case(_fit(fx, "--data.train_file", fx.nan_tensors),
                                                ["nan_tensors.h5", "NaN/inf in the training showers"]),
        "fit batch size 0": Case(_fit(fx, "--data.batch_size", "0"), ["--data.batch_size", ">= 1"]),
        "fit devices 0": Case(_fit(fx, "--trainer.devices", "0"), ["devices"]),
        "fit resume missing checkpoint": Case(_fit(fx, "--ckpt_path", str(tmp / "last.ckpt")),
                                              ["last.ckpt", "not found"]),
        "fit resume garbage checkpoint": Case(_fit(fx, "--ckpt_path", fx.garbage_ckpt),
                                              ["garbage.ckpt", "not a readable PyTorch checkpoint"]),
        "fit resume weights-only checkpoint": Case(_fit(fx, "--ckpt_path", fx.weights_only),
                                                   ["weights_only.ckpt", "cannot be resumed"]),
        "fit resume another model": Case(_fit(fx, "--ckpt_path", fx.ckpt),
                                         ["tiny.ckpt", "checkpoint was trained with another", "resume with the command"]),
    }  # fmt: skip
    return c


GEO_XML = GEO.to_json()  # --geometry takes a JSON description too
PHOTONS_REF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fastsim", "refdata",
                           "photons_ds1_g4.h5")  # fmt: skip


#: every hyper-parameter a user can set, with a value the model cannot train with
BAD_HPARAMS = {
    "WGANGP": {
        "latent_dim": "0", "generator_hidden": "[16, 0]", "generator_activation": "swoosh",
        "output_activation": "cube", "critic_hidden": "[]", "critic_activation": "none2",
        "lr_generator": "-1e-4", "lr_critic": "0", "beta1": "1.0", "beta2": "-0.1", "n_critic": "0",
        "lipschitz": "spectral", "lambda_gp": "-10", "clip_value": "0", "critic_features": "layers",
        "feature_weight": "0", "output_init": "zeros", "output_init_scale": "-1", "seed": "-3",
    },
    "ShowerVAE": {
        "latent_dim": "-2", "encoder_hidden": "[0]", "decoder_hidden": "[]", "activation": "swoosh",
        "lr": "-1e-3", "weight_decay": "-1", "beta": "-0.5", "kl_warmup_steps": "-1",
        "n_importance_samples": "0", "zero_threshold": "nan", "decode": "mode", "energy_hidden": "[8, -1]",
        "seed": "-1",
    },
    "model_selection": {"n_bins": "0", "n_rms": "-3", "oversample": "0", "max_discrete": "0", "n_ranges": "0",
                        "seed": "-1", "batch_size": "0"},
    "divergence": {"every_n_steps": "0"},
    "data": {"batch_size": "0", "val_fraction": "1.0", "num_workers": "-1", "block_size": "0",
             "buffer_blocks": "0", "val_batch_size": "0", "seed": "-1"},
}  # fmt: skip


def _run(argv: list[str], capfd) -> tuple[int, str]:
    from fastsim.cli import main

    capfd.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse/jsonargparse exiting by itself: not the house style
        code = exc.code if isinstance(exc.code, int) else 1
        pytest.fail(f"SystemExit({exc.code}) escaped the dispatcher")
    return code, capfd.readouterr().err


def _check(case: Case, code: int, err: str, cwd) -> None:
    lines = err.strip().splitlines()
    assert code != 0, err
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    for needle in case.needles:
        assert needle in lines[0], (needle, lines[0])
    if case.output is not None:
        assert not os.path.lexists(case.output), f"{case.output} was left behind"
        parent = os.path.dirname(os.path.abspath(case.output))
        if os.path.isdir(parent) and not parent.startswith(READ_ONLY_DIR):
            name = os.path.basename(case.output)
            assert not [f for f in os.listdir(parent) if f.startswith(f".{name}.")], "a partial file was left"
    if case.keeps is not None:
        with open(case.keeps) as f:
            assert f.read() == "old"
    # fit: nothing trained, so no checkpoints or log directories in the working directory
    assert not list(cwd.glob("logs/**/*.ckpt")), "a run started"


def test_the_sweep_has_enough_distinct_cases(fx, tmp_path) -> None:
    all_cases = cases(fx, tmp_path)
    assert len(all_cases) >= 30
    assert len({tuple(c.argv) for c in all_cases.values()}) == len(all_cases)
    commands = {c.argv[0] for c in all_cases.values()}
    assert commands >= {"prep-train", "prep-root", "generate", "export", "benchmark", "simulate", "fit"}


class _Placeholder:
    """Stands for the fixture at collection time: the case names do not depend on the files."""

    def __getattr__(self, name: str) -> str:
        return f"<{name}>"


CASE_NAMES = list(cases(_Placeholder(), Path("/collecting")))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_is_one_line(name: str, fx, tmp_path, monkeypatch, capfd) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "existing.h5").write_text("old")
    (tmp_path / "old_report").mkdir()
    case = cases(fx, tmp_path)[name]
    code, err = _run(case.argv, capfd)
    _check(case, code, err, tmp_path)


@pytest.mark.parametrize(
    "system, key, value",
    [(s, k, v) for s, kv in BAD_HPARAMS.items() for k, v in kv.items()],
)
def test_every_hyperparameter_is_checked_through_the_command_line(
    system: str, key: str, value: str, fx, tmp_path, monkeypatch, capfd
) -> None:
    monkeypatch.chdir(tmp_path)
    prefix = f"--{system}." if system in ("data", "model_selection", "divergence") else "--model.init_args."
    option = prefix + key
    argv = _fit(fx, f"{option}={value}", model="vae" if system == "ShowerVAE" else "wgan_gp")
    case = Case(argv, [option, key])
    code, err = _run(argv, capfd)
    _check(case, code, err, tmp_path)


@pytest.mark.parametrize(
    "extra, needles",
    [  # one in the default suite (a process start costs ~10 s on a loaded machine), all in CI
        pytest.param(["--trainer.max_epochs=-5"], ["max_epochs", "-5"], marks=pytest.mark.slow),
        (["--data.train_file", "<nan_tensors>"], ["nan_tensors.h5", "NaN/inf"]),  # in setup("fit")
        pytest.param(["--ckpt_path", "<ckpt>"], ["tiny.ckpt", "checkpoint was trained with another"],
                     marks=pytest.mark.slow),
    ],
    ids=["trainer option", "NaN tensors", "resume another model"],
)
def test_fit_errors_are_one_line_in_a_real_process(extra, needles, fx, tmp_path) -> None:
    """As a user sees it: Lightning's start-up lines (seed, devices) are held until training
    starts, so an error found while building the run is the only line on stderr."""
    from helpers_cli import fastsim

    extra = [{"<nan_tensors>": fx.nan_tensors, "<ckpt>": fx.ckpt}.get(a, a) for a in extra]
    r = fastsim(*_fit(fx, *extra), cwd=str(tmp_path))
    _check(Case([], needles), r.returncode, r.stderr, tmp_path)
