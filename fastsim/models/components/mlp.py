"""Multi-layer perceptrons with named activations: the building block of every network here."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from fastsim.errors import FastsimError

#: activation name -> factory. "swish" is an alias of SiLU (FastCaloGAN's hidden activation).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
    "none": nn.Identity,
    "linear": nn.Identity,
}


def activation(name: str) -> nn.Module:
    """A fresh activation module by name (see :data:`ACTIVATIONS`)."""
    try:
        return ACTIVATIONS[name.lower()]()
    except KeyError:
        raise FastsimError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


class MLP(nn.Sequential):
    """``Linear -> act -> … -> Linear -> out_act``.

    Args:
        in_dim: input features.
        hidden: widths of the hidden layers (may be empty: one linear layer).
        out_dim: output features.
        act: hidden activation name.
        out_act: output activation name ("none" for a linear output).

    Shapes: (n, in_dim) -> (n, out_dim).
    """

    def __init__(
        self, in_dim: int, hidden: Sequence[int], out_dim: int, act: str = "relu", out_act: str = "none"
    ) -> None:
        widths = [int(in_dim), *(int(h) for h in hidden), int(out_dim)]
        if any(w < 1 for w in widths):
            raise FastsimError(f"MLP widths must be >= 1, got {widths}")
        layers: list[nn.Module] = []
        for i in range(len(widths) - 1):
            layers.append(nn.Linear(widths[i], widths[i + 1]))
            layers.append(activation(act) if i < len(widths) - 2 else activation(out_act))
        super().__init__(*layers)
