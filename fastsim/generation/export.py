"""``fastsim export``: a generator checkpoint as a self-contained ONNX model.

The exported graph is ``model.export_module()``: inputs ``noise`` (n, noise_dim) float32 and
``e_inc`` (n, 1) float32 MeV (and ``angle`` (n, 1) float32 degrees for a model conditioned on the
incidence angle, scaled inside the graph by the checkpoint's ``AngleCondition``), output ``showers`` (n, n_voxels) float32 MeV, with the inverse
preprocessing inside, so a C++/ONNX Runtime user needs nothing but the file. The batch axis is
dynamic. The model's ``metadata_props`` hold the geometry (JSON, :meth:`Geometry.to_json`), the
latent and noise dimensions, the input/output names and units, and the provenance (package version,
checkpoint path and sha256, model class, hyper-parameters).

The default (``torch.export``-based, "dynamo") exporter is tried first; if it fails the
TorchScript exporter (``dynamo=False``) is used, the file records which one made it, and
``fastsim export`` prints a warning line with the dynamo exporter's error.
After export the file is checked with ONNX Runtime against PyTorch on a few random inputs.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from typing import Any

from fastsim.errors import FastsimError

#: Input and output names of the exported graph (part of the file's contract).
INPUT_NAMES = ("noise", "e_inc")
#: the third input of a model conditioned on the incidence angle
ANGLE_INPUT = "angle"
OUTPUT_NAMES = ("showers",)


def input_names(model: Any) -> tuple[str, ...]:
    """The graph's inputs: :data:`INPUT_NAMES`, plus :data:`ANGLE_INPUT` for an angle-conditioned model."""
    return INPUT_NAMES + ((ANGLE_INPUT,) if getattr(model, "angle_range", None) is not None else ())


@dataclass
class ExportInfo:
    """What :func:`export_onnx` wrote."""

    path: str
    opset: int
    exporter: str
    n_voxels: int
    noise_dim: int
    max_abs_diff: float | None = None
    #: why the preferred (dynamo) exporter was not used, when the TorchScript fallback made the file
    fallback_reason: str | None = None
    #: the graph has the ``angle`` input (degrees)
    angle: bool = False


def _example_inputs(model: Any, n: int, seed: int = 0) -> tuple[Any, ...]:
    """``(noise (n, noise_dim), e_inc (n, 1) MeV)`` with energies spread over 1 GeV – 100 GeV, and
    ``angle (n, 1)`` degrees uniform over the model's training angles when it takes one."""
    import torch

    g = torch.Generator().manual_seed(seed)
    noise = model.sample_noise(n, generator=g).to("cpu", torch.float32)
    e_inc = torch.exp(torch.empty(n, 1).uniform_(0.0, 1.0, generator=g) * 4.6) * 1000.0
    angle_range = getattr(model, "angle_range", None)
    if angle_range is None:
        return noise, e_inc
    lo, hi = angle_range
    return noise, e_inc, torch.empty(n, 1).uniform_(lo, hi if hi > lo else lo + 1.0, generator=g)


def _export(module: Any, example: tuple[Any, ...], opset: int | None) -> tuple[Any, str, str | None]:
    """Export ``module`` to an ``onnx.ModelProto``: dynamo exporter first, TorchScript as fallback.

    Returns:
        (proto, exporter name, the dynamo exporter's error when the fallback was used, else None).
    """
    import onnx
    import torch

    names = list(INPUT_NAMES) + ([ANGLE_INPUT] if len(example) > 2 else [])
    errors = []
    try:
        batch = torch.export.Dim("batch", min=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter warns about renaming shared dynamic axes
            program = torch.onnx.export(
                module, example, input_names=names, output_names=list(OUTPUT_NAMES),
                dynamic_shapes=tuple({0: batch} for _ in example), opset_version=opset,
                dynamo=True, verbose=False,
            )  # fmt: skip
        return program.model_proto, "dynamo", None
    except Exception as err:  # noqa: BLE001 - any exporter failure means: try the other exporter
        errors.append(f"dynamo: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
    try:
        import io

        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, example, buf, input_names=names, output_names=list(OUTPUT_NAMES),
                dynamic_axes={**{k: {0: "batch"} for k in names}, "showers": {0: "batch"}},
                opset_version=opset or 17, dynamo=False,
            )  # fmt: skip
        return onnx.load_from_string(buf.getvalue()), "torchscript", errors[0]
    except Exception as err:  # noqa: BLE001
        errors.append(f"torchscript: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
    raise FastsimError("ONNX export failed with both exporters (" + "; ".join(errors) + ")")


def onnx_metadata(model: Any, checkpoint: str | os.PathLike | None, exporter: str) -> dict[str, str]:
    """The ``metadata_props`` of an exported generator: all values are strings."""
    from fastsim.generation.runinfo import model_description
    from fastsim.provenance import file_sha256, provenance

    desc = model_description(model)
    inputs = {
        "noise": f"float32 (batch, {int(model.noise_dim)}), standard normal",
        "e_inc": "float32 (batch, 1), incident energy in MeV",
    }
    angle_range = getattr(model, "angle_range", None)
    if angle_range is not None:
        inputs[ANGLE_INPUT] = (
            f"float32 (batch, 1), incidence angle in degrees (trained on {angle_range[0]:g}-{angle_range[1]:g})"
        )
    attrs = provenance(
        producer="fastsim-export",
        geometry=model.geometry.to_json(),
        latent_dim=int(model.latent_dim),
        noise_dim=int(model.noise_dim),
        n_voxels=int(model.geometry.n_voxels),
        inputs=json.dumps(inputs),
        outputs=json.dumps({"showers": "float32 (batch, n_voxels), voxel energies in MeV"}),
        input_names=",".join(input_names(model)),
        output_names=",".join(OUTPUT_NAMES),
        checkpoint=os.path.abspath(checkpoint) if checkpoint is not None else None,
        checkpoint_sha256=file_sha256(checkpoint) if checkpoint is not None else None,
        exporter=exporter,
        **desc,
    )
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in attrs.items()}


def verify_onnx(
    path: str | os.PathLike, model: Any, batch_sizes: tuple[int, ...] = (1, 7), rtol: float = 1e-4
) -> float:
    """Compare ONNX Runtime with PyTorch on random inputs; return the largest absolute difference.

    Raises:
        FastsimError: if any output differs beyond ``rtol`` (relative) + 1e-6 MeV (absolute).
    """
    import numpy as np
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    module = model.export_module().eval()
    worst = 0.0
    for n in batch_sizes:
        example = _example_inputs(model, n, seed=n)
        with torch.inference_mode():
            expected = module(*example).numpy()
        feeds = {name: t.numpy() for name, t in zip(input_names(model), example, strict=True)}
        got = session.run(list(OUTPUT_NAMES), feeds)[0]
        if got.shape != expected.shape or not np.allclose(got, expected, rtol=rtol, atol=1e-6):
            raise FastsimError(
                f"{path}: ONNX Runtime output differs from PyTorch at batch size {n} "
                f"(max |diff| {np.max(np.abs(got - expected)) if got.shape == expected.shape else 'shape'})"
            )
        worst = max(worst, float(np.max(np.abs(got - expected))))
    return worst


def export_onnx(
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    *,
    opset: int | None = None,
    overwrite: bool = False,
    verify: bool = True,
    model: Any = None,
) -> ExportInfo:
    """Export a generator checkpoint to ONNX (atomic write).

    Args:
        checkpoint: the generator checkpoint.
        output: the ``.onnx`` file; it appears only when export (and verification) succeeded.
        opset: ONNX opset; the exporter's default when None.
        overwrite: replace an existing ``output``.
        verify: compare ONNX Runtime with PyTorch at batch sizes 1 and 7 before renaming.
        model: an already loaded generator for ``checkpoint`` (saves loading it again).

    Returns:
        an :class:`ExportInfo`.
    """
    import onnx
    import torch

    from fastsim.generation.batches import check_generator
    from fastsim.generation.generate import check_output_path
    from fastsim.models.io import load_generator

    output = check_output_path(output, overwrite)
    if model is None:
        model = load_generator(checkpoint, map_location="cpu")
    check_generator(model)
    model = model.to("cpu").eval()
    module = model.export_module().eval()
    # batch 2 as the example: torch.export specialises a dimension of size 1 to a constant
    example = _example_inputs(model, 2)
    with torch.inference_mode(False), torch.no_grad():
        proto, exporter, fallback_reason = _export(module, example, opset)
    for key, value in onnx_metadata(model, checkpoint, exporter).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    opset_used = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    from fastsim.outputs import atomic_output

    # hidden, with the pid: a killed export's file is recognised as stale
    with atomic_output(output) as tmp:
        onnx.save(proto, tmp)
        onnx.checker.check_model(tmp)
        diff = verify_onnx(tmp, model) if verify else None
    return ExportInfo(
        os.fspath(output),
        int(opset_used),
        exporter,
        int(model.geometry.n_voxels),
        int(model.noise_dim),
        diff,
        fallback_reason,
        ANGLE_INPUT in input_names(model),
    )
