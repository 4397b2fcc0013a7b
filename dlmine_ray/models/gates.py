"""Feature selection inside the network: stochastic gates on its inputs (STG, Yamada et al.,
"Feature Selection using Stochastic Gates", ICML 2020), and the same network behind a fixed mask
once the features are chosen. Plain torch modules; nothing here imports Ray."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

#: the gate noise's standard deviation (the paper's sigma)
SIGMA = 0.5


class FeatureGates(nn.Module):
    """One gate per group of input columns (a raw column; a one-hot group shares its gate).

    In training a gate is ``clamp(mu + eps + 0.5, 0, 1)`` with ``eps ~ N(0, SIGMA^2)``: a relaxed
    Bernoulli whose probability of being open, ``Phi((mu + 0.5) / SIGMA)``, is differentiable; the
    mean of these probabilities is the expected-L0 penalty. In evaluation the gate is its mean,
    ``clamp(mu + 0.5, 0, 1)``.

    ``mu`` is ``speed`` times the learned parameter, so that an optimiser's steps move the gates
    ``speed`` times faster than the network's weights (Adam's step is about its learning rate)."""

    def __init__(self, group_of: Sequence[int], n_groups: int, speed: float = 1.0):
        super().__init__()
        self.speed = float(speed)
        # the paper's start: mu = 0.5, every gate open
        self.raw_mu = nn.Parameter(torch.full((n_groups,), 0.5 / self.speed))
        self.register_buffer("group_of", torch.as_tensor(list(group_of), dtype=torch.int64))

    @property
    def mu(self) -> torch.Tensor:
        return self.raw_mu * self.speed

    def gates(self) -> torch.Tensor:
        """The gate of each group: sampled in training, its mean in evaluation."""
        z = self.mu + 0.5
        if self.training:
            z = z + SIGMA * torch.randn_like(self.mu)
        return z.clamp(0.0, 1.0)

    def open_probability(self) -> torch.Tensor:
        """P(gate > 0) of each group: the ranking the selector reports."""
        return 0.5 * (1.0 + torch.erf((self.mu + 0.5) / (SIGMA * math.sqrt(2.0))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gates()[self.group_of]


class GatedNet(nn.Module):
    """A network whose inputs pass through ``FeatureGates`` first."""

    def __init__(self, gates: FeatureGates, backbone: nn.Module):
        super().__init__()
        self.gates = gates
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.gates(x))


class MaskedNet(nn.Module):
    """A network that sees only the chosen input columns (the others are zeroed: after
    standardisation, their mean). Its parameters are named apart from ``GatedNet``'s, so that a
    refit on the chosen features starts from fresh weights."""

    def __init__(self, mask: Sequence[float], net: nn.Module):
        super().__init__()
        self.register_buffer("mask", torch.as_tensor(list(mask), dtype=torch.float32))
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * self.mask)
