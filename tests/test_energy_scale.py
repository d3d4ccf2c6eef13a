"""The energy scale travels with the showers: Geant4 file → training tensors → checkpoint →
generated file, and the benchmark refuses a pair on different scales (through the command line)."""

from __future__ import annotations

import glob
import os

import h5py
import pytest
from test_training import GEO, REPO, write_showers

from fastsim.cli import main
from fastsim.data.hdf5 import read_calochallenge, write_calochallenge


def _labelled(src: str, dst: str, scale: str, factor: float = 1.0) -> str:
    e, s = read_calochallenge(src)
    write_calochallenge(dst, e, s * factor, attrs={"energy_scale": scale, "geometry": GEO.to_json()})
    return dst


def test_scale_from_simulation_to_generated_file_and_benchmark_refuses_a_mix(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    raw = str(tmp_path / "raw.h5")
    write_showers(raw, 300, seed=5)
    em = _labelled(raw, str(tmp_path / "em.h5"), "em")
    active = _labelled(raw, str(tmp_path / "active.h5"), "active", 0.25)

    # mixing the two scales in one training set: one line naming the file, nothing written
    capsys.readouterr()
    mixed = tmp_path / "mixed_tensors.h5"
    assert main(["prep-train", em, active, "-o", str(mixed), "--geometry", GEO.to_json()]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and active in err and "active energy scale" in err and "em scale" in err
    assert not mixed.exists()

    tensors = str(tmp_path / "tensors.h5")
    assert main(["prep-train", em, "-o", tensors, "--geometry", GEO.to_json()]) == 0
    with h5py.File(tensors) as f:
        assert f.attrs["energy_scale"] == "em"
    cfg = os.path.join(REPO, "configs")
    assert main([
        "fit", "--config", f"{cfg}/model/wgan_gp.yaml", "--config", f"{cfg}/data/photons.yaml",
        "--config", f"{cfg}/trainer/cpu.yaml", "--data.train_file", tensors, "--data.batch_size", "32",
        "--data.num_workers", "0", "--model.init_args.generator_hidden", "[16, 32]",
        "--model.init_args.critic_hidden", "[32, 32]", "--trainer.max_steps", "12",
        "--trainer.limit_train_batches", "2", "--trainer.enable_progress_bar", "false",
    ]) == 0  # fmt: skip
    (ckpt,) = glob.glob(str(tmp_path / "logs" / "fastsim" / "*" / "checkpoints" / "last.ckpt"))
    gen = tmp_path / "gen.h5"
    assert main(["generate", "--checkpoint", ckpt, "--like", em, "-o", str(gen), "--seed", "1"]) == 0
    with h5py.File(gen) as f:
        assert f.attrs["energy_scale"] == "em"  # the model's training scale

    capsys.readouterr()
    out = tmp_path / "report"
    assert main(["benchmark", "--generated", str(gen), "--reference", active, "--out", str(out),
                 "--protocol", "quick", "--no-classifier", "--no-plots"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(gen) in err and active in err
    assert "on the em energy scale but the reference" in err and "fastsim em-scale" in err
    assert not out.exists()
    # the same generated file against the reference on its own scale is accepted
    assert main(["benchmark", "--generated", str(gen), "--reference", em, "--out", str(out),
                 "--protocol", "quick", "--no-classifier", "--no-plots"]) in (0, 1)  # fmt: skip
    assert (out / "metrics.json").exists()


@pytest.mark.parametrize("labels", [("em", None), (None, "active"), (None, None)])
def test_files_that_do_not_say_their_scale_are_not_judged(tmp_path, labels) -> None:
    from fastsim.report.inputs import check_energy_scales

    g, r = ({} if x is None else {"energy_scale": x} for x in labels)
    check_energy_scales("gen.h5", g, "ref.h5", r)  # no error: nothing to compare
