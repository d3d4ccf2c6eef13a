"""``fastsim fit``: train a generator with LightningCLI.

    fastsim fit --config configs/model/wgan_gp.yaml --config configs/data/photons.yaml \\
                --config configs/trainer/cpu.yaml [--trainer.max_epochs 10] [--ckpt_path last.ckpt]

The model is any :class:`~fastsim.models.base.ShowerGeneratorModule` (``--model WGANGP``,
``--model ShowerVAE`` or a ``class_path`` in a config); the data is a
:class:`~fastsim.data.datamodule.ShowerDataModule`. The geometry, the fitted transforms and the
number of conditions are linked from the data into the model at instantiation, so they are
never written twice. Always present and configurable: ``--checkpoint.*`` (periodic checkpoints,
``every_n_train_steps`` counts optimiser steps: n_critic + 1 per batch for the WGAN),
``--best_checkpoint.*`` (best ``val/chi2_ndf_sum``), ``--model_selection.*`` (χ²/ndf callback)
and ``--divergence.*``; ``--benchmark.reference g4.h5`` (and ``--benchmark.*``) also logs the
benchmark's E_tot/E_inc observables per energy at each validation
(:class:`~fastsim.report.callback.BenchmarkCallback`). The default logger is wandb in offline mode; ``--config configs/logger/csv.yaml``
switches to CSV.

``--config`` takes a file or the name of a packaged config (``wgan_gp``, ``photons``, ``cpu``,
``csv``, …; ``fastsim config`` lists them). Mistakes are one line naming the file or option and
the key: unknown keys, values of the wrong type, hyper-parameters the model cannot train with.

Resume: the command that started the run plus ``--ckpt_path <dir>/last.ckpt``. The model's
hyper-parameters must equal the checkpoint's (a different model is refused, naming the key), and
the checkpoints keep going to ``<dir>`` (unless ``--checkpoint.dirpath`` says otherwise), so
``last.ckpt`` there stays the newest state and a second resume from it continues the run.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from typing import Any

from fastsim.errors import FastsimError, InputFileError

#: logger used unless the config or command line sets ``trainer.logger``
DEFAULT_LOGGER = {
    "class_path": "lightning.pytorch.loggers.WandbLogger",
    "init_args": {"offline": True, "project": "fastsim", "save_dir": "logs"},
}
#: ``--ckpt_path`` values Lightning resolves itself (not files)
_SPECIAL_CKPT = {"last", "best", "hpc", "registry"}
#: hyper-parameters linked from the data: compared on resume like the others, named as data
_LINKED = {"geometry": "data", "transform": "data", "condition": "data", "n_conditions": "data"}


def _split_configs(args: list[str]) -> list[tuple[int, str]]:
    """(index of the value in args, value) of every ``--config``/``-c`` option."""
    found = []
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            found.append((i + 1, args[i + 1]))
        elif arg.startswith("--config="):
            found.append((i, arg.split("=", 1)[1]))
    return found


def _nested_get(data: Any, key: str) -> bool:
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


def _one_line(message: str) -> tuple[str | None, str]:
    """A jsonargparse error (often dozens of lines: union alternatives, given values) as
    (the dotted key it is about or None, one line)."""
    lines = [ln.strip() for ln in str(message).strip().splitlines() if ln.strip()]
    if not lines:
        return None, "invalid arguments"
    m = re.search(r"does not accept option '([^']+)'", lines[0])
    if m:
        return None, f"unknown option --{m.group(1)}"
    m = re.search(r"Option '([^']+)' is not accepted", message)
    if m:
        return None, f"unknown key {m.group(1)!r}"
    keys = re.findall(r'Parser key "([^"]+)"', message)
    if keys[:1] == ["model"] and len(keys) > 1:
        keys = ["model.init_args", *keys[1:]]
    given = next((ln[len("Given value:") :].strip() for ln in lines if ln.startswith("Given value:")), None)
    skip = ("Given value", "Subtypes:", "Errors:", "Does not validate", "- Expected a <class 'NoneType'>",
            "- Problem with given class_path")  # fmt: skip
    detail = [ln.lstrip("- ") for ln in lines[1:] if not ln.startswith(skip) and "Parser key" not in ln]
    text = "; ".join(dict.fromkeys(detail[:2])) if detail else lines[0]
    text = re.sub(r"Expected a <class '([^']+)'>", r"expected \1", text).replace(". Got value:", ", got")
    text = re.sub(r"Expected a typing\.Literal\[([^\]]*)\]", r"expected one of \1", text)
    if given and "got" not in text and len(given) < 80:
        text += f", got {given}"
    return (".".join(keys) or None), text[:300]


class _HeldLogs:
    """Holds Lightning's start-up log lines (seed, devices) until training really starts, so that
    a mistake found while the classes are built is the only line on stderr; replayed otherwise.
    Propagation is held too: with ``lightning`` imported (or a root handler present) the records
    would otherwise reach the parent loggers' handlers anyway."""

    NAMES = ("lightning.pytorch", "lightning.fabric")

    def __init__(self) -> None:
        self.records: list[Any] = []
        self.saved: dict[str, tuple[list[Any], bool]] = {}
        holder = self

        class _Hold(logging.Handler):
            def emit(self, record: Any) -> None:
                holder.records.append(record)

        self.handler = _Hold()

    def start(self) -> None:
        self.saved = self.state()
        for name in self.NAMES:
            log = logging.getLogger(name)
            log.handlers = [self.handler]
            log.propagate = False

    @classmethod
    def state(cls) -> dict[str, tuple[list[Any], bool]]:
        """The handlers and propagation of the held loggers, for :meth:`restore`."""
        return {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate) for n in cls.NAMES}

    @staticmethod
    def restore(state: dict[str, tuple[list[Any], bool]]) -> None:
        for name, (handlers, propagate) in state.items():
            log = logging.getLogger(name)
            log.handlers = handlers
            log.propagate = propagate

    def stop(self) -> None:
        self.restore(self.saved)
        self.saved = {}

    def replay(self) -> None:
        self.stop()
        for record in self.records:  # the path it would have taken: its logger, then up the tree
            logging.getLogger(record.name).handle(record)
        self.records = []


def _cli_class() -> type:
    from jsonargparse import ArgumentError
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

    from fastsim.models.hparams import (
        HyperparameterError,
        check_data,
        check_divergence,
        check_hparams,
        check_model_selection,
    )
    from fastsim.models.vae import ShowerVAE
    from fastsim.models.wgan_gp import WGANGP
    from fastsim.report.callback import BenchmarkCallback
    from fastsim.training.callbacks import Chi2ModelSelection, DivergenceCheck, ResumableCheckpoint
    from fastsim.training.configs import model_class, read_config, resolve_config, unknown_keys

    systems = (WGANGP, ShowerVAE)

    class FastsimCLI(LightningCLI):
        """LightningCLI with the data → model links, fastsim's callbacks, one-line errors and resume."""

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            for src, dst in (
                ("data.geometry_config", "model.init_args.geometry"),
                ("data.transform_config", "model.init_args.transform"),
                ("data.condition_config", "model.init_args.condition"),
                ("data.n_conditions", "model.init_args.n_conditions"),
            ):
                parser.link_arguments(src, dst, apply_on="instantiate")
            parser.add_lightning_class_args(DivergenceCheck, "divergence")
            parser.add_lightning_class_args(Chi2ModelSelection, "model_selection")
            parser.add_lightning_class_args(ResumableCheckpoint, "checkpoint")
            parser.add_lightning_class_args(ResumableCheckpoint, "best_checkpoint")
            # off unless --benchmark.reference names a file
            parser.add_lightning_class_args(BenchmarkCallback, "benchmark")
            parser.set_defaults(
                {
                    "trainer.logger": DEFAULT_LOGGER,
                    # periodic: the newest step checkpoint plus last.ckpt to resume from
                    "checkpoint.filename": "periodic-{step:08d}",
                    "checkpoint.every_n_train_steps": 3000,
                    "checkpoint.save_top_k": 1,
                    "checkpoint.save_last": True,
                    # a run killed after writing a checkpoint newer than the last.ckpt it resumes
                    # from leaves that file behind; the resumed run writes the same name again (the
                    # same state: resuming is exact) and must replace it, not start "-v1" copies
                    # beside it (nor a last-v1.ckpt)
                    "checkpoint.enable_version_counter": False,
                    "best_checkpoint.enable_version_counter": False,
                    # model selection as FastCaloGAN: the lowest summed χ²/ndf of E_tot/E_inc
                    "best_checkpoint.monitor": "val/chi2_ndf_sum",
                    "best_checkpoint.mode": "min",
                    "best_checkpoint.save_top_k": 1,
                    "best_checkpoint.filename": "best-epoch{epoch:03d}-chi2sum{val/chi2_ndf_sum:.3f}",
                    "best_checkpoint.auto_insert_metric_name": False,
                }
            )

        # ------------------------------------------------------------ parsing: one line per mistake
        def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
            args = list(args)
            self._args = args
            self._configs: dict[str, dict[str, Any]] = {}
            sub = parser._subcommands_action._name_parser_map["fit"]
            allowed = set(sub.get_defaults().keys())
            model = None
            for i, value in _split_configs(args[1:]):
                path = resolve_config(value)
                args[1 + i] = path if not args[1 + i].startswith("--config=") else f"--config={path}"
                data = read_config(path)
                bad, model = unknown_keys(data, allowed, systems, model)
                if bad:
                    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
                    raise InputFileError(path, f"unknown key {bad[0]!r}{more}")
                self._configs[path] = data
            self._args = args
            try:
                super().parse_arguments(parser, args)
            except ArgumentError as err:
                key, text = _one_line(str(err))
                if key is None:
                    raise FastsimError(text) from None
                raise self._bad_option(key, text.split(": ", 1)[-1] if text.startswith(key) else text) from None

        def _source(self, key: str) -> str | None:
            """The config file or option that last set the dotted ``key`` (None: a default)."""
            source = None
            short = key.replace("model.init_args.", "model.")
            for i, arg in enumerate(self._args):
                if arg in ("--config", "-c") or arg.startswith("--config="):
                    path = arg.split("=", 1)[1] if "=" in arg else self._args[i + 1] if i + 1 < len(self._args) else ""
                    if _nested_get(self._configs.get(path), key):
                        source = path
                elif arg.split("=", 1)[0] in (f"--{key}", f"--{short}"):
                    source = arg.split("=", 1)[0]
            return source

        def _parse_ckpt_path(self) -> None:
            # Lightning's version re-parses the checkpoint's hyper-parameters as model options, which
            # fails for fastsim's (linked geometry dicts); the command line defines the model here and
            # before_fit checks that it is the checkpoint's
            self._resume: tuple[str, dict[str, Any]] | None = None
            ckpt_path = self.config.get("fit", {}).get("ckpt_path") if self.config.get("subcommand") else None
            if not ckpt_path or ckpt_path in _SPECIAL_CKPT:
                return
            from fastsim.models.io import checkpoint_class

            _, ckpt = checkpoint_class(ckpt_path)
            if not isinstance(ckpt.get("loops"), dict) or "optimizer_states" not in ckpt:
                raise InputFileError(ckpt_path, "holds weights only (no training state): it cannot be resumed")
            self._resume = (ckpt_path, ckpt)

        # ------------------------------------------------------------ instantiation
        def _set_seed(self) -> None:
            pass  # seeded in before_instantiate_classes, after the checks (no "Seed set" before an error)

        def _bad_option(self, key: str, problem: str) -> FastsimError:
            """``--key problem`` or ``file: key problem`` after where the value came from."""
            source = self._source(key)
            sep = " " if problem.startswith("must") else ": "
            if source is None or source.startswith("--"):
                return FastsimError(f"{source or key}{sep}{problem}")
            return FastsimError(f"{source}: {key}{sep}{problem}")

        def before_instantiate_classes(self) -> None:
            self._held = _HeldLogs()
            self._held.start()  # until on_fit_start (below) or an error
            cfg = self.config["fit"]
            for group, check in (("data", check_data), ("model_selection", check_model_selection),
                                 ("divergence", check_divergence)):  # fmt: skip
                try:
                    check(cfg[group].as_dict())
                except HyperparameterError as err:
                    raise self._bad_option(f"{group}.{err.key}", err.problem) from None
            model = cfg["model"]
            cls = model_class(model.get("class_path"), systems) if model is not None else None
            if cls is not None:
                init = {k: v for k, v in (model.get("init_args") or {}).items() if k not in _LINKED}
                try:
                    check_hparams(cls, dict(init))
                except HyperparameterError as err:
                    raise self._bad_option(f"model.init_args.{err.key}", err.problem) from None
            if self._resume is not None:
                # keep writing where the run wrote: last.ckpt there is then always the newest state
                where = os.path.dirname(os.path.abspath(self._resume[0]))
                for group in ("checkpoint", "best_checkpoint"):
                    if cfg[group]["dirpath"] is None:
                        cfg[group]["dirpath"] = where
            super()._set_seed()

        def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> Any:
            from lightning.pytorch.callbacks import Callback

            held = self._held

            class _ReplayLogs(Callback):
                def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
                    held.replay()

            return super()._instantiate_trainer(config, [*callbacks, _ReplayLogs()])

        def instantiate_classes(self) -> None:
            try:
                super().instantiate_classes()
            except ArgumentError as err:
                cause = err.__cause__ or err.__context__
                while cause is not None and not isinstance(cause, FastsimError):
                    cause = cause.__cause__ or cause.__context__
                if cause is not None:
                    raise cause from None
                key, text = _one_line(str(err))
                raise FastsimError(f"{key}: {text}" if key else text) from None
            except MisconfigurationException as err:
                raise FastsimError(_one_line(str(err))[1]) from None

        def before_fit(self) -> None:
            if self._resume is None:
                return
            # resuming writes into the run's own checkpoint directory on purpose
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
            path, ckpt = self._resume
            cls_name = f"{type(self.model).__module__}.{type(self.model).__qualname__}"
            from fastsim.models.base import CLASS_KEY

            if ckpt.get(CLASS_KEY) != cls_name:
                raise InputFileError(
                    path, f"checkpoint holds a {ckpt.get(CLASS_KEY)}, this command trains a {cls_name}"
                )
            saved = {k: v for k, v in ckpt.get("hyper_parameters", {}).items() if not k.startswith("_")}
            now = {k: v for k, v in self.model.hparams.items() if not k.startswith("_")}
            for key in sorted(set(saved) | set(now)):
                if _canonical(saved.get(key)) != _canonical(now.get(key)):
                    where = "the data's" if key in _LINKED else f"model.init_args.{key}"
                    shown = "" if key in _LINKED else f" ({saved.get(key)!r} there, {now.get(key)!r} here)"
                    raise InputFileError(
                        path,
                        f"checkpoint was trained with another {key}: {where} differs{shown}; "
                        "resume with the command that started the run",
                    )

    return FastsimCLI


def _canonical(value: Any) -> Any:
    """Lists and tuples compare equal (YAML gives lists, the systems store tuples)."""
    if isinstance(value, (list, tuple)):
        return tuple(_canonical(v) for v in value)
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    return value


def run_fit(args: list[str]) -> Any:
    """Run LightningCLI ``fit`` with command-line style ``args`` (without "fit"); returns the CLI."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from fastsim.data.datamodule import ShowerDataModule
    from fastsim.models.base import ShowerGeneratorModule

    # imported so that `--model WGANGP` / `--model ShowerVAE` resolve by class name
    from fastsim.models.vae import ShowerVAE  # noqa: F401
    from fastsim.models.wgan_gp import WGANGP  # noqa: F401

    with warnings.catch_warnings():
        # Lightning 2.6 warns that step checkpoints of manually optimised modules hold the weights
        # after the step: that is what fastsim wants (a resumed run continues from them)
        warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
        # `fastsim fit` hands LightningCLI its own argument list on purpose (sys.argv holds "fit" too)
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        held_before = _HeldLogs.state()
        try:
            cli = _cli_class()(
                ShowerGeneratorModule,
                ShowerDataModule,
                subclass_mode_model=True,
                args=["fit", *args],
                seed_everything_default=0,
                auto_configure_optimizers=False,
                # the systems save complete hyper-parameters themselves (geometry, fitted transforms)
                load_from_checkpoint_support=False,
                save_config_kwargs={"overwrite": True},
                parser_kwargs={"exit_on_error": False, "fit": {"prog": "fastsim fit", "exit_on_error": False}},
            )
        except MisconfigurationException as err:  # a Trainer or callback option Lightning rejects
            raise FastsimError(_one_line(str(err))[1]) from None
        finally:  # an error before training started: the held start-up lines are dropped
            _HeldLogs.restore(held_before)
    _finish_loggers(cli.trainer)
    return cli


def _finish_loggers(trainer: Any) -> None:
    # end wandb's run and stop its helper service now, not at interpreter exit, so that a
    # `fastsim fit` called from Python (a pipeline, a test) leaves no process behind
    from lightning.pytorch.loggers import WandbLogger

    used_wandb = False
    for logger in getattr(trainer, "loggers", []):
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish()
            used_wandb = True
    if used_wandb:
        import wandb

        wandb.teardown()


def main(argv: list[str] | None = None) -> int:
    """``fastsim fit …``: argv[0] is the command name. Returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "fit":
        argv = argv[1:]
    try:
        run_fit(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    return 0
