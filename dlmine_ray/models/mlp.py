"""Multi-layer perceptrons for tabular data."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """Linear -> [BatchNorm] -> ReLU -> Dropout blocks, then a linear head of ``out_dim``."""

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (256, 128),
                 dropout: float = 0.1, batch_norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the head's raw outputs (logits or values), shape (batch, out_dim)."""
        return self.net(x)


class _ResBlock(nn.Module):
    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.body = nn.Sequential(
            nn.LayerNorm(width), nn.Linear(width, width * 2), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(width * 2, width),
        )

    def forward(self, x):
        return x + self.body(x)


class ResMLP(nn.Module):
    """A residual MLP: input projection to ``hidden[0]``, one residual block per entry of
    ``hidden``, then a normalised linear head."""

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (256, 256),
                 dropout: float = 0.1, batch_norm: bool = False):
        super().__init__()
        width = hidden[0]
        self.proj = nn.Linear(in_dim, width)
        self.blocks = nn.Sequential(*[_ResBlock(width, dropout) for _ in hidden])
        self.head = nn.Sequential(nn.LayerNorm(width), nn.ReLU(), nn.Linear(width, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the head's raw outputs, shape (batch, out_dim)."""
        return self.head(self.blocks(self.proj(x)))


def build_backbone(kind: str, in_dim: int, out_dim: int, hidden, dropout: float, batch_norm: bool) -> nn.Module:
    """Return the model named by ``kind`` ('mlp' or 'resmlp')."""
    cls = {"mlp": MLP, "resmlp": ResMLP}[kind]
    return cls(in_dim, out_dim, list(hidden), dropout, batch_norm)
