"""WGAN networks: a conditional generator and a conditional critic (plain ``nn.Module``s).

Defaults follow FastCaloGAN (ATLAS, Comput. Softw. Big Sci. 6 (2022) 7, arXiv:2109.02551): the
generator has hidden layers of 50, 100 and 200 nodes with swish activations and a ReLU output
(energy fractions are non-negative); the critic has three hidden layers as wide as the voxel
count, ReLU, a linear output and no batch normalisation (batch norm would make the critic's
output for one event depend on the others, which breaks the per-event gradient penalty).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fastsim.models.components.mlp import MLP


class Generator(nn.Module):
    """``G(z, c)``: noise and conditions to model-space voxels.

    Args:
        latent_dim: noise dimension.
        n_conditions: condition columns (column 0 the scaled incident energy).
        n_voxels: output voxels V.
        hidden: hidden widths.
        act: hidden activation.
        out_act: output activation; a non-negative one ("relu", "softplus") for energy fractions.

    Shapes: z (n, latent_dim), cond (n, n_conditions) -> (n, V).
    """

    def __init__(
        self,
        latent_dim: int,
        n_conditions: int,
        n_voxels: int,
        hidden: Sequence[int] = (50, 100, 200),
        act: str = "swish",
        out_act: str = "relu",
    ) -> None:
        super().__init__()
        self.net = MLP(latent_dim + n_conditions, hidden, n_voxels, act=act, out_act=out_act)

    def forward(self, z: Tensor, cond: Tensor) -> Tensor:
        return self.net(torch.cat([z, cond], dim=1))

    def last_linear(self) -> nn.Linear:
        """The output layer (before the output activation)."""
        return [m for m in self.net if isinstance(m, nn.Linear)][-1]


class Critic(nn.Module):
    """``h(x, c)``: the WGAN critic, an unbounded real score per event.

    Args:
        n_voxels: input voxels V.
        n_conditions: condition columns.
        hidden: hidden widths (FastCaloGAN: three layers of V nodes).
        act: hidden activation.

    Shapes: x (n, V), cond (n, n_conditions) -> (n,).
    """

    def __init__(self, n_voxels: int, n_conditions: int, hidden: Sequence[int], act: str = "relu") -> None:
        super().__init__()
        self.net = MLP(n_voxels + n_conditions, hidden, 1, act=act, out_act="none")

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        return self.net(torch.cat([x, cond], dim=1)).squeeze(1)


class HierarchicalGenerator(nn.Module):
    """``G(z, c)`` with hierarchical outputs (CaloShowerGAN, arXiv:2309.06515): energy-consistent showers.

    The network emits, per event, ``1 + L + V`` numbers: ``u``, the total energy standardised per
    incident energy; ``L`` layer logits; ``V`` voxel logits. The output (fractions of the incident
    energy, the model space of the ``DivideByIncident`` transform) is

        x_v = r · f_layer(v) · f_v,   r = E_tot/E_inc = m(c) + s(c)·u_max·tanh(u/u_max)

    with ``f_layer = softmax`` over the layers and ``f_v = softmax`` over the voxels of each layer, so
    every shower is non-negative, its layers sum to ``r`` and ``r`` is bounded by ``m + u_max·s``
    (``m``, ``s``: mean and standard deviation of E_tot/E_inc at the condition, from ``total``).

    A deterministic function of 50 latent numbers makes smooth showers, where Geant4's voxels
    fluctuate independently around their shower's shape. With ``voxel_noise`` the network also
    emits a log-width ``log σ_v`` per voxel and draws ``f_v = softmax(logit_v + σ_v·ε_v)`` per layer,
    ``ε_v ~ N(0, 1)`` read from the noise input (``z`` is then ``latent_dim + V`` wide, so
    generation stays a deterministic function of its inputs: seeds and ONNX export unchanged): a
    log-normal fluctuation of every voxel, renormalised within its layer, with widths the critic
    teaches (reparameterised: the gradient reaches σ).

    A softmax is never zero, Geant4 showers are sparse: with ``threshold > 0`` (MeV) a voxel below
    it is set to 0, as a detector's readout does. The forward value is exactly the thresholded
    shower; in training its gradient passes the threshold unchanged (straight-through), so the
    critic's wish to raise a zeroed voxel still reaches the logits.

    Args:
        latent_dim: noise dimension.
        n_conditions: condition columns (column 0 the scaled incident energy).
        layer_slices: voxel ranges ``(start, stop)`` of the layers, contiguous from 0 to V.
        total: fitted :class:`~fastsim.models.components.features.EnergyFeatures` without layers
            (the per-energy mean and width of E_tot/E_inc).
        condition: the condition transform (config rebuilt here), to turn ``c`` back into MeV for
            the threshold.
        hidden: hidden widths.
        act: hidden activation.
        threshold: readout threshold in MeV (0: none).
        u_max: bound of ``|u|`` (in standard deviations of E_tot/E_inc).
        voxel_noise: emit per-voxel widths σ_v and draw the voxel fractions (see above).
        energy_noise: emit a width σ_u and draw ``u`` around the network's value, ``u + σ_u·ε_u``
            (one more noise column, last): the spread of E_tot/E_inc then need not come from
            the latent alone.

    Shapes: z (n, latent_dim [+ V with voxel_noise] [+ 1 with energy_noise]), cond (n, n_conditions) -> (n, V).
    """

    def __init__(
        self,
        latent_dim: int,
        n_conditions: int,
        layer_slices: Sequence[Sequence[int]],
        total: nn.Module,
        condition: nn.Module,
        hidden: Sequence[int] = (50, 100, 200),
        act: str = "swish",
        threshold: float = 0.0,
        u_max: float = 6.0,
        voxel_noise: bool = False,
        energy_noise: bool = False,
    ) -> None:
        super().__init__()
        self.layer_slices = [(int(a), int(b)) for a, b in layer_slices]
        self.n_layers = len(self.layer_slices)
        self.n_voxels = self.layer_slices[-1][1]
        self.latent_dim = int(latent_dim)
        self.voxel_noise = bool(voxel_noise)
        self.energy_noise = bool(energy_noise)
        n_out = 1 + self.n_layers + self.n_voxels * (2 if self.voxel_noise else 1) + int(self.energy_noise)
        self.net = MLP(latent_dim + n_conditions, hidden, n_out, act=act)
        self.total = total
        self.condition = condition
        self.threshold = float(threshold)
        self.u_max = float(u_max)
        sizes = [b - a for a, b in self.layer_slices]
        self.register_buffer(
            "layer_of_voxel", torch.repeat_interleave(torch.arange(self.n_layers), torch.tensor(sizes))
        )

    def parts(self, z: Tensor, cond: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``r`` (n,) = E_tot/E_inc, layer fractions (n, L), voxel fractions within each layer (n, V)."""
        h = self.net(torch.cat([z[:, : self.latent_dim], cond], dim=1))
        u = h[:, :1]
        if self.energy_noise:  # σ_u in (0, 5]: standard deviations of E_tot/E_inc at the energy
            u = u + 5.0 * torch.sigmoid(h[:, -1:] - math.log(4.0)) * z[:, -1:]
        u = self.u_max * torch.tanh(u / self.u_max)
        r = torch.clamp(self.total.destandardise(u, cond[:, 0])[:, 0], min=0.0)
        f_layer = torch.softmax(h[:, 1 : 1 + self.n_layers], dim=1)
        a = 1 + self.n_layers
        logits = h[:, a : a + self.n_voxels]
        if self.voxel_noise:  # σ in (0, 20]: a bounded log-width keeps exp finite
            sigma = 20.0 * torch.sigmoid(h[:, a + self.n_voxels : a + 2 * self.n_voxels] - math.log(19.0))
            logits = logits + sigma * z[:, self.latent_dim : self.latent_dim + self.n_voxels]
        f_vox = torch.cat([torch.softmax(logits[:, a:b], dim=1) for a, b in self.layer_slices], dim=1)
        return r, f_layer, f_vox

    def forward(self, z: Tensor, cond: Tensor, straight_through: bool = True) -> Tensor:
        """Showers (n, V); with ``straight_through=False`` the gradient of a thresholded voxel is
        zero even in training (the exact derivative of the read-out shower, e.g. of its sum)."""
        r, f_layer, f_vox = self.parts(z, cond)
        x = r.unsqueeze(1) * f_layer[:, self.layer_of_voxel] * f_vox
        if self.threshold > 0:
            e_inc = self.condition.inverse(cond[:, 0]).reshape(-1, 1).to(x)
            kept = x * (x * e_inc >= self.threshold).to(x)
            x = kept + (x - x.detach()) if self.training and straight_through else kept
        return x

    @torch.no_grad()
    def init_from_mean(
        self, mean_fractions: Tensor, scale: float, eps: float = 1e-6, sigma: float = 0.5, sigma_u: float = 1.0
    ) -> None:
        """Start at the mean shower: last-layer bias = (0, log layer fractions, log voxel fractions
        [, the bias that gives σ_v = ``sigma``] [, the bias that gives σ_u = ``sigma_u``]), weights ×
        ``scale``. ``mean_fractions`` (V,): the mean training shower over E_inc."""
        last = [m for m in self.net if isinstance(m, nn.Linear)][-1]
        m = mean_fractions.double().clamp(min=0)
        e_layer = torch.stack([m[a:b].sum() for a, b in self.layer_slices])
        f_layer = (e_layer + eps * e_layer.sum()) / (e_layer + eps * e_layer.sum()).sum()
        f_vox = []
        for a, b in self.layer_slices:  # a never-hit voxel starts at eps of its layer's mean voxel
            p = m[a:b] + eps * m[a:b].sum() / (b - a) + 1e-30
            f_vox.append(p / p.sum())
        f_vox = torch.cat(f_vox)
        parts = [torch.zeros(1, dtype=torch.float64), f_layer.log(), f_vox.log()]
        if self.voxel_noise:  # inverse of σ = 20·sigmoid(b − log 19)
            q = min(max(sigma / 20.0, 1e-6), 1 - 1e-6)
            parts.append(torch.full((self.n_voxels,), math.log(q / (1 - q)) + math.log(19.0), dtype=torch.float64))
        if self.energy_noise:  # inverse of σ_u = 5·sigmoid(b − log 4)
            q = min(max(sigma_u / 5.0, 1e-6), 1 - 1e-6)
            parts.append(torch.full((1,), math.log(q / (1 - q)) + math.log(4.0), dtype=torch.float64))
        bias = torch.cat(parts)
        last.bias.copy_(bias.to(last.bias))
        last.weight.mul_(scale)

    def last_linear(self) -> nn.Linear:
        """The output layer."""
        return [m for m in self.net if isinstance(m, nn.Linear)][-1]
