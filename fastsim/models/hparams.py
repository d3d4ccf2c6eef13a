"""Checks of the hyper-parameters a user can set, before anything is built.

Each generator system calls its check at the top of ``__init__``; ``fastsim fit`` calls the
same check on the parsed config before LightningCLI instantiates the model, so a mistake is one
line naming the key (``model.init_args.n_critic: must be an integer >= 1, got 0``) instead of a
traceback from inside a network or an optimiser. The checks only look at values: the networks,
transforms and geometry are built (and check themselves) afterwards.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from typing import Any

from fastsim.errors import FastsimError

#: hidden activations the MLPs know (fastsim.models.components.mlp.ACTIVATIONS), kept here
#: without importing torch
ACTIVATION_NAMES = (
    "relu", "leaky_relu", "silu", "swish", "elu", "gelu", "tanh", "sigmoid", "softplus", "none", "linear",
)  # fmt: skip


class HyperparameterError(FastsimError):
    """A hyper-parameter with a value the model cannot train with; ``key`` names it."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key} {problem}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int_at_least(hp: dict[str, Any], key: str, low: int) -> None:
    v = hp[key]
    if not _is_int(v) or v < low:
        raise HyperparameterError(key, f"must be an integer >= {low}, got {v!r}")


def _positive(hp: dict[str, Any], key: str, allow_zero: bool = False) -> None:
    v = hp[key]
    if not _is_real(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise HyperparameterError(key, f"must be a finite number {bound}, got {v!r}")


def _unit_interval(hp: dict[str, Any], key: str) -> None:
    v = hp[key]
    if not _is_real(v) or not 0 <= v < 1:
        raise HyperparameterError(key, f"must be a number in [0, 1), got {v!r}")


def _choice(hp: dict[str, Any], key: str, choices: Iterable[str], lower: bool = False) -> None:
    v = hp[key]
    choices = tuple(choices)
    if not isinstance(v, str) or (v.lower() if lower else v) not in choices:
        raise HyperparameterError(key, f"must be one of {', '.join(map(repr, choices))}, got {v!r}")


def _flag(hp: dict[str, Any], key: str) -> None:
    if not isinstance(hp[key], bool):
        raise HyperparameterError(key, f"must be true or false, got {hp[key]!r}")


def _widths(hp: dict[str, Any], key: str, allow_none: bool = False) -> None:
    v = hp[key]
    if v is None and allow_none:
        return
    if isinstance(v, (str, bytes)) or not isinstance(v, Iterable):
        raise HyperparameterError(key, f"must be a list of layer widths, got {v!r}")
    widths = list(v)
    if not widths or not all(_is_int(w) and w >= 1 for w in widths):
        raise HyperparameterError(key, f"must be a non-empty list of integers >= 1, got {v!r}")


def _seed(hp: dict[str, Any]) -> None:
    if not _is_int(hp["seed"]) or hp["seed"] < 0:
        raise HyperparameterError("seed", f"must be an integer >= 0, got {hp['seed']!r}")


def check_shared(hp: dict[str, Any]) -> None:
    """What every :class:`~fastsim.models.base.ShowerGeneratorModule` needs."""
    _int_at_least(hp, "n_conditions", 1)
    _int_at_least(hp, "latent_dim", 1)
    _seed(hp)


def check_wgan_gp(hp: dict[str, Any]) -> None:
    """The :class:`~fastsim.models.wgan_gp.WGANGP` arguments (a dict of all of them)."""
    check_shared(hp)
    _widths(hp, "generator_hidden")
    _widths(hp, "critic_hidden", allow_none=True)
    for key in ("generator_activation", "output_activation", "critic_activation"):
        _choice(hp, key, ACTIVATION_NAMES, lower=True)
    _positive(hp, "lr_generator")
    _positive(hp, "lr_critic")
    _unit_interval(hp, "beta1")
    _unit_interval(hp, "beta2")
    _int_at_least(hp, "n_critic", 1)
    _choice(hp, "lipschitz", ("gp", "gp_one_sided", "clip"))
    # λ = 0 leaves the critic unconstrained (its loss runs away): useless with a penalty
    _positive(hp, "lambda_gp", allow_zero=hp["lipschitz"] == "clip")
    _positive(hp, "clip_value")
    _choice(hp, "critic_features", ("none", "energy", "energy_layers", "shapes", "shapes_sparsity"))
    _positive(hp, "feature_weight")
    _choice(hp, "output_init", ("default", "mean_shower"))
    _positive(hp, "output_init_scale")
    _choice(hp, "output", ("voxels", "hierarchical"))
    _positive(hp, "readout_threshold", allow_zero=True)
    _positive(hp, "voxel_noise", allow_zero=True)
    if hp["voxel_noise"] > 0 and hp["output"] != "hierarchical":
        raise HyperparameterError(
            "voxel_noise",
            f"{hp['voxel_noise']:g} needs output: hierarchical (it draws the voxel fractions of its "
            f"per-layer softmax), got output: {hp['output']!r}",
        )
    _flag(hp, "energy_noise")
    if hp["energy_noise"] and hp["output"] != "hierarchical":
        raise HyperparameterError("energy_noise", f"needs output: hierarchical, got output: {hp['output']!r}")
    _choice(hp, "critic_voxels", ("model", "log"))
    _positive(hp, "critic_log_scale")
    _flag(hp, "critic_batch_std")
    if hp["critic_batch_std"] and hp["critic_features"] == "none":
        raise HyperparameterError("critic_batch_std", "needs critic features (critic_features other than 'none')")
    _positive(hp, "response_weight", allow_zero=True)


def check_vae(hp: dict[str, Any]) -> None:
    """The :class:`~fastsim.models.vae.ShowerVAE` arguments (a dict of all of them)."""
    check_shared(hp)
    _widths(hp, "encoder_hidden")
    _widths(hp, "decoder_hidden")
    _widths(hp, "energy_hidden")
    _choice(hp, "activation", ACTIVATION_NAMES, lower=True)
    _positive(hp, "lr")
    _positive(hp, "weight_decay", allow_zero=True)
    _positive(hp, "beta", allow_zero=True)
    _int_at_least(hp, "kl_warmup_steps", 0)
    _int_at_least(hp, "n_importance_samples", 1)
    if not _is_real(hp["zero_threshold"]):
        raise HyperparameterError("zero_threshold", f"must be a finite number, got {hp['zero_threshold']!r}")
    _choice(hp, "decode", ("mean", "median", "sample", "sample_zeros"))
    _flag(hp, "energy_head")


def with_defaults(cls: type, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` completed with the defaults of ``cls.__init__`` (what the check sees)."""
    hp = {
        name: p.default
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and p.default is not inspect.Parameter.empty
    }
    hp.update(given)
    return hp


def check_data(hp: dict[str, Any]) -> None:
    """The :class:`~fastsim.data.datamodule.ShowerDataModule` options other than the file."""
    _int_at_least(hp, "batch_size", 1)
    _unit_interval(hp, "val_fraction")
    _int_at_least(hp, "num_workers", 0)
    _int_at_least(hp, "buffer_blocks", 1)
    for key in ("block_size", "val_batch_size"):
        if hp.get(key) is not None:
            _int_at_least(hp, key, 1)
    _seed(hp)


def check_model_selection(hp: dict[str, Any]) -> None:
    """The :class:`~fastsim.training.callbacks.Chi2ModelSelection` options."""
    _int_at_least(hp, "n_bins", 1)
    _positive(hp, "n_rms")
    for key in ("oversample", "max_discrete", "n_ranges", "batch_size"):
        _int_at_least(hp, key, 1)
    _seed(hp)
    if hp.get("threshold") is not None:
        _positive(hp, "threshold", allow_zero=True)


def check_divergence(hp: dict[str, Any]) -> None:
    """The :class:`~fastsim.training.callbacks.DivergenceCheck` options."""
    _int_at_least(hp, "every_n_steps", 1)


#: system class name -> its check (the systems call theirs at the top of ``__init__``)
CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {"WGANGP": check_wgan_gp, "ShowerVAE": check_vae}


def check_hparams(cls: type, given: dict[str, Any]) -> None:
    """Run the check of ``cls`` (or of its nearest base class that has one) on ``given`` plus
    the defaults of ``cls.__init__``; a class without a check passes.

    Raises:
        HyperparameterError: the first bad value, naming its key.
    """
    for klass in cls.__mro__:
        if klass.__name__ in CHECKS:
            CHECKS[klass.__name__](with_defaults(cls, given))
            return
