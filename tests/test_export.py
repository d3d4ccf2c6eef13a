"""``fastsim export``: ONNX Runtime reproduces the PyTorch generator (MeV in, MeV out), metadata, bad input.

Checkpoints are real tiny WGAN-GP / VAE trainings (see ``train_tiny_checkpoint`` in test_generate.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from test_generate import TINY_GEOMETRY, train_tiny_checkpoint

from fastsim.cli import main as fastsim_main

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module", params=["wgan", "wgan_hier", "vae", "vae_energy"])
def exported(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path, Path]:
    """(model name, checkpoint, exported .onnx) made once per model through the CLI."""
    d = tmp_path_factory.mktemp(f"export-{request.param}")
    ckpt = train_tiny_checkpoint(request.param, d / f"{request.param}.ckpt")
    out = d / f"{request.param}.onnx"
    assert fastsim_main(["export", "--checkpoint", str(ckpt), "-o", str(out)]) == 0
    return request.param, ckpt, out


def test_fallback_exporter_is_visible(exported: tuple[str, Path, Path], tmp_path: Path, monkeypatch, capsys) -> None:
    """When the dynamo exporter fails, the TorchScript file still matches PyTorch, records its
    exporter, and the command says so on one warning line (fault injected into torch.onnx.export)."""
    import torch

    name, ckpt, _ = exported
    if name != "wgan":
        pytest.skip("the fallback does not depend on the model")
    real = torch.onnx.export

    def dynamo_broken(*args, **kwargs):  # noqa: ANN002, ANN003
        if kwargs.get("dynamo", True):
            raise RuntimeError("injected: torch.export cannot trace this graph")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", dynamo_broken)
    out = tmp_path / "fallback.onnx"
    capsys.readouterr()
    assert fastsim_main(["export", "--checkpoint", str(ckpt), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        "fastsim export: warning: the dynamo exporter failed (dynamo: RuntimeError: injected: torch.export "
        f"cannot trace this graph); {out} was made by the TorchScript exporter"
    )
    assert "(torchscript exporter)" in captured.out
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["exporter"] == "torchscript"


def test_onnxruntime_equals_pytorch(exported: tuple[str, Path, Path]) -> None:
    import torch

    from fastsim.models.io import load_generator

    _, ckpt, path = exported
    model = load_generator(ckpt)
    module = model.export_module().eval()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["noise", "e_inc"]
    assert [o.name for o in session.get_outputs()] == ["showers"]
    for n in (1, 7):
        g = torch.Generator().manual_seed(100 + n)
        noise = model.sample_noise(n, generator=g)
        e_inc = torch.exp(torch.empty(n, 1).uniform_(np.log(256.0), np.log(16384.0), generator=g))
        with torch.inference_mode():
            expected = module(noise, e_inc).numpy()
            # the same noise through the generation path: the ONNX graph is what `fastsim generate` runs
            generated = model.generate(e_inc[:, 0], generator=torch.Generator().manual_seed(100 + n)).numpy()
        got = session.run(["showers"], {"noise": noise.numpy(), "e_inc": e_inc.numpy()})[0]
        assert got.shape == (n, TINY_GEOMETRY.n_voxels) and got.dtype == np.float32
        assert expected.sum() > 0  # a non-trivial comparison
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(generated, expected, rtol=1e-6, atol=0)


def test_metadata_and_dynamic_batch(exported: tuple[str, Path, Path]) -> None:
    from fastsim.models.io import load_generator
    from fastsim.provenance import file_sha256

    name, ckpt, path = exported
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    model = load_generator(ckpt)
    assert json.loads(meta["geometry"]) == json.loads(model.geometry.to_json())
    assert int(meta["latent_dim"]) == model.latent_dim and int(meta["n_voxels"]) == TINY_GEOMETRY.n_voxels
    assert meta["input_names"] == "noise,e_inc" and meta["output_names"] == "showers"
    assert "MeV" in meta["inputs"] and "MeV" in meta["outputs"]
    assert meta["checkpoint_sha256"] == file_sha256(ckpt)
    assert meta["model_class"].endswith("WGANGP" if name.startswith("wgan") else "ShowerVAE")
    assert json.loads(meta["hparams"])["latent_dim"] == model.latent_dim
    # the preferred exporter made the file: a broken dynamo path would not hide behind the fallback
    assert meta["fastsim_version"] and meta["exporter"] == "dynamo"
    # the batch axis is symbolic, the feature axes fixed
    noise_dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert noise_dims[0].dim_param and not noise_dims[0].dim_value
    assert noise_dims[1].dim_value == model.noise_dim
    onnx.checker.check_model(proto)


def test_bad_input_exit_2_and_no_file(
    exported: tuple[str, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, ckpt, path = exported
    if name != "wgan":
        pytest.skip("bad-input handling does not depend on the model")
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"\x00not a checkpoint" * 10)
    out = tmp_path / "m.onnx"
    for args, expected in (
        (["--checkpoint", str(tmp_path / "missing.ckpt"), "-o", str(out)], "missing.ckpt"),
        (["--checkpoint", str(corrupt), "-o", str(out)], "corrupt.ckpt"),
        (["--checkpoint", str(ckpt), "-o", str(tmp_path / "nodir" / "m.onnx")], "does not exist"),
        (["-o", str(out)], "required"),
    ):
        capsys.readouterr()
        assert fastsim_main(["export", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, err
    assert sorted(os.listdir(tmp_path)) == ["corrupt.ckpt"]
    # an existing output is kept unless --overwrite
    before = path.read_bytes()
    assert fastsim_main(["export", "--checkpoint", str(ckpt), "-o", str(path)]) == 2
    assert path.read_bytes() == before
    assert (
        fastsim_main(["export", "--checkpoint", str(ckpt), "-o", str(path), "--overwrite", "--opset", "18"])
        == 0
    )
    assert max(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx")) == 18
    assert not [p for p in os.listdir(path.parent) if p.startswith(".")]  # no temporary left
