"""Plain ``nn.Module`` networks, apart from the Lightning systems that train them."""

from fastsim.models.components.mlp import MLP, activation
from fastsim.models.components.vae import Decoder, Encoder
from fastsim.models.components.wgan import Critic, Generator

__all__ = ["MLP", "Critic", "Decoder", "Encoder", "Generator", "activation"]
