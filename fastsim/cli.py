"""The ``fastsim`` command: one entry point, one sub-command per job.

Sub-commands are imported lazily so that ``fastsim --help`` and data preparation start
without paying for ``import torch``/``import lightning``. Each sub-command module exposes
``main(argv: list[str]) -> int``. A :class:`fastsim.errors.FastsimError` raised anywhere is
printed as one line on stderr and the exit status is 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

#: sub-command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "geometry": ("fastsim.geometry_cli", "print a geometry (built-in name or XML file)"),
    "validate": ("fastsim.data.cli", "check CaloChallenge HDF5 files against a geometry"),
    "prep-root": ("fastsim.data.root_cli", "convert ROOT TTrees (voxel arrays or per-hit) to CaloChallenge HDF5"),
    "prep-train": ("fastsim.data.cli", "turn CaloChallenge HDF5 into training tensors"),
    "simulate": ("fastsim.fullsim.cli", "Geant4 full simulation of single particles into CaloChallenge HDF5"),
    "em-scale": ("fastsim.fullsim.rescale", "convert a Geant4 file between the active-material and the EM energy scale"),
    "config": ("fastsim.training.config_cli", "list the packaged configs, print one, or write copies to edit"),
    "fit": ("fastsim.training.cli", "train a generator (LightningCLI: fit --config …)"),
    "generate": ("fastsim.generation.cli", "generate showers from a checkpoint into HDF5"),
    "family": ("fastsim.training.family_cli", "one model per slice (energy range) from one YAML; fit all, generate by slice"),
    "export": ("fastsim.generation.cli", "export a generator checkpoint to ONNX"),
    "benchmark": ("fastsim.report.cli", "compare generated showers with full simulation; write a report"),
    "demo": ("fastsim.pipeline", "the main job end to end on the embedded Geant4 reference data"),
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse for the sub-commands: a bad option is a one-line :class:`FastsimError` (the
    dispatcher prints it and exits 2) instead of the usage text followed by the error."""

    def error(self, message: str) -> NoReturn:
        from fastsim.errors import FastsimError

        raise FastsimError(f"{message} (see {self.prog} --help)")


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: fastsim <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "Run 'fastsim <command> --help' for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    if argv[0] == "--version":
        from fastsim import __version__

        print(f"fastsim {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"fastsim: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    from fastsim.errors import FastsimError

    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.main([name, *rest]) or 0)
    except FastsimError as err:
        print(f"fastsim {name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fastsim {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
