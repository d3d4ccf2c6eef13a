"""Loading generator checkpoints: ``load_generator(path)`` finds the system's class and loads it."""

from __future__ import annotations

import importlib
import os
from typing import Any

from fastsim.errors import InputFileError

#: only classes under this package may be named by a checkpoint (never import arbitrary modules)
_ALLOWED_PREFIX = "fastsim.models."


def checkpoint_class(path: str | os.PathLike, map_location: Any = "cpu") -> tuple[type, dict[str, Any]]:
    """The generator class recorded in a checkpoint, and the checkpoint dict.

    Raises:
        InputFileError: missing, unreadable or corrupt file, or not a fastsim generator checkpoint.
    """
    import torch

    from fastsim.models.base import CLASS_KEY, ShowerGeneratorModule

    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputFileError(path, "checkpoint not found")
    if os.path.isdir(path):
        raise InputFileError(path, "is a directory, not a checkpoint file")
    try:
        # weights_only: the file is data, never code (hparams are plain dicts/tuples/strings)
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - damaged bytes make the unpickler raise almost anything
        # (IndexError, KeyError, UnicodeDecodeError, struct.error, ... besides UnpicklingError)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputFileError(path, f"not a readable PyTorch checkpoint ({first[:200]})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise InputFileError(path, "not a Lightning checkpoint (no state_dict)")
    name = ckpt.get(CLASS_KEY)
    if not isinstance(name, str):
        raise InputFileError(path, "not a fastsim generator checkpoint (no model class recorded)")
    module_name, _, cls_name = name.rpartition(".")
    if not module_name.startswith(_ALLOWED_PREFIX):
        raise InputFileError(path, f"checkpoint names class {name!r}, outside {_ALLOWED_PREFIX}*")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError):
        raise InputFileError(path, f"checkpoint names unknown model class {name!r}") from None
    if not (isinstance(cls, type) and issubclass(cls, ShowerGeneratorModule)):
        raise InputFileError(path, f"{name!r} is not a fastsim generator class")
    return cls, ckpt


def load_generator(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Load a generator system (WGANGP, ShowerVAE, …) from a Lightning checkpoint, in eval mode.

    Args:
        path: the ``.ckpt`` file written by ``fastsim fit``.
        map_location: where to put the weights (``torch.load``'s argument).

    Returns:
        The system, with ``.geometry``, ``.latent_dim``, ``.generate(e_inc_MeV, generator)``,
        ``.sample_noise(n)`` and ``.export_module()``.

    Raises:
        InputFileError: missing/corrupt/unrelated file, or weights that do not fit the stored
            hyper-parameters.
    """
    import torch

    from fastsim.errors import FastsimError

    path = os.fspath(path)
    cls, ckpt = checkpoint_class(path, map_location)
    hparams = ckpt.get("hyper_parameters")
    if not isinstance(hparams, dict):
        raise InputFileError(path, "checkpoint has no hyper-parameters to rebuild the model from")
    # LightningCLI may add bookkeeping keys ("_class_path", "_instantiator"): not init arguments
    hparams = {k: v for k, v in hparams.items() if not k.startswith("_")}
    try:
        model = cls(**hparams)
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (RuntimeError, TypeError, KeyError, FastsimError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputFileError(path, f"checkpoint does not match {cls.__name__}: {first[:300]}") from None
    if isinstance(map_location, (str, torch.device)):
        model = model.to(map_location)
    from fastsim.models.base import ENERGY_SCALE_KEY

    model._energy_scale = str(ckpt.get(ENERGY_SCALE_KEY, "") or "")
    return model.eval()
