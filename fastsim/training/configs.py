"""The configs that ship with fastsim, and checks of config files before LightningCLI reads them.

The YAML groups live at the repository's top level (``configs/<group>/<name>.yaml``) and are
installed into the wheel as ``fastsim/configs/`` (see ``setup.py``), so ``fastsim fit --config
wgan_gp`` (or ``model/wgan_gp``) works from a checkout and from an installed package alike, and
``fastsim config`` lists them or writes copies to edit.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable
from typing import Any

from fastsim.errors import FastsimError, InputFileError

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_dir() -> str:
    """Directory holding the packaged config groups (``model/``, ``data/``, ``trainer/``, …).

    Raises:
        FastsimError: neither an installed ``fastsim/configs`` nor a checkout's ``configs/``.
    """
    for candidate in (
        os.path.join(_PACKAGE_DIR, "configs"),  # installed wheel
        os.path.join(os.path.dirname(_PACKAGE_DIR), "configs"),  # source checkout / editable install
    ):
        if os.path.isdir(os.path.join(candidate, "model")):
            return candidate
    raise FastsimError("the packaged configs are missing from this installation (no fastsim/configs)")


def packaged_configs() -> dict[str, str]:
    """``{"model/wgan_gp": path, …}`` for every packaged YAML file, sorted by name."""
    root = config_dir()
    found = {}
    for group in sorted(os.listdir(root)):
        gdir = os.path.join(root, group)
        if not os.path.isdir(gdir):
            continue
        for name in sorted(os.listdir(gdir)):
            if name.endswith(".yaml"):
                found[f"{group}/{name[:-5]}"] = os.path.join(gdir, name)
    return found


def resolve_config(value: str) -> str:
    """The file a ``--config`` value names: an existing path, else a packaged config by name
    (``wgan_gp``, ``model/wgan_gp`` or ``model/wgan_gp.yaml``).

    Raises:
        InputFileError: neither a file nor a packaged config.
    """
    if os.path.exists(value):
        if os.path.isdir(value):
            raise InputFileError(value, "is a directory, not a config file")
        return value
    configs = packaged_configs()
    key = value[:-5] if value.endswith(".yaml") else value
    if key in configs:
        return configs[key]
    by_name = [path for name, path in configs.items() if name.split("/", 1)[1] == key]
    if len(by_name) == 1:
        return by_name[0]
    names = ", ".join(name.split("/", 1)[1] for name in configs)
    raise InputFileError(value, f"no such config file, nor a packaged config (packaged: {names})")


def read_config(path: str) -> dict[str, Any]:
    """A config file's YAML mapping.

    Raises:
        InputFileError: unreadable, not YAML, or not a mapping of keys.
    """
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as err:
        raise InputFileError(path, f"cannot read config file ({err.strerror})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        what = getattr(err, "problem", None) or type(err).__name__
        raise InputFileError(path, f"not valid YAML{at}: {what}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputFileError(path, f"a config file must be a mapping of keys, got a {type(data).__name__}")
    return data


def _init_params(cls: type) -> set[str]:
    return {n for n in inspect.signature(cls.__init__).parameters if n not in ("self", "args", "kwargs")}


def model_class(value: Any, known: Iterable[type]) -> type | None:
    """The system a ``model`` / ``model.class_path`` value names (short or full), or None."""
    if not isinstance(value, str):
        return None
    for cls in known:
        if value in (cls.__name__, f"{cls.__module__}.{cls.__qualname__}"):
            return cls
    return None


def unknown_keys(
    data: dict[str, Any], allowed: set[str], model_classes: Iterable[type], current_model: type | None
) -> tuple[list[str], type | None]:
    """The keys of a config mapping that ``fastsim fit`` does not accept.

    Args:
        data: the file's mapping.
        allowed: the dotted leaf keys the parser accepts (``trainer.max_epochs``, ``model``, …).
        model_classes: the generator systems a ``model.class_path`` may name.
        current_model: the system chosen by earlier configs or options (None: not yet known).

    Returns:
        (unknown dotted keys, the system chosen after this file).
    """
    groups = {k.rsplit(".", 1)[0] for k in allowed if "." in k}
    groups |= {g.rsplit(".", i)[0] for g in list(groups) for i in range(1, g.count(".") + 1)}
    classes = list(model_classes)
    bad: list[str] = []

    def walk(prefix: str, value: Any) -> None:
        if prefix in allowed:
            return
        if prefix in groups and isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
            return
        bad.append(prefix)

    model = current_model
    for key, value in data.items():
        key = str(key)
        if key != "model":
            walk(key, value)
            continue
        if isinstance(value, str):
            model = model_class(value, classes) or model
            continue
        if not isinstance(value, dict):
            continue  # the parser reports the type
        for k in value:
            if k not in ("class_path", "init_args", "dict_kwargs"):
                bad.append(f"model.{k}")
        foreign = False
        if "class_path" in value:
            model = model_class(value["class_path"], classes)
            foreign = model is None  # a user's own subclass: the parser checks its arguments
        init_args = value.get("init_args")
        if isinstance(init_args, dict) and not foreign:
            params = _init_params(model) if model else set().union(*(_init_params(c) for c in classes))
            bad += [f"model.init_args.{k}" for k in init_args if k not in params]
    return bad, model
