"""Autoencoders for the unsupervised tasks: deep clustering (DEC) and anomaly detection
(denoising autoencoder, Deep SVDD). Plain torch modules; what ``forward`` returns is chosen by
``out`` so that every training stage goes through ``forward`` (DistributedDataParallel only
synchronises gradients of computations made through the wrapped module's forward)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def _stack(dims: Sequence[int], dropout: float, bias: bool) -> nn.Sequential:
    """Linear layers with ReLU (and dropout) between them; the last layer is linear."""
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1], bias=bias))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class AutoEncoder(nn.Module):
    """An MLP encoder ``in_dim -> hidden... -> latent`` and a mirrored decoder."""

    def __init__(self, in_dim: int, hidden: Sequence[int], latent: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        hidden = list(hidden)
        self.encoder = _stack([in_dim, *hidden, latent], dropout, bias)
        self.decoder = _stack([latent, *hidden[::-1], in_dim], 0.0, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the reconstruction of ``x``."""
        return self.decoder(self.encoder(x))


class DeepClusterNet(nn.Module):
    """An autoencoder plus ``k`` cluster centres in its code space (DEC, Xie et al. 2016).

    ``forward(x, out)``: "recon" the reconstruction (pre-training), "q" the Student-t soft
    assignment to the centres (DEC stage), "code" the latent code, and by default "result":
    the soft assignment followed by 2-D map coordinates (a PCA of the codes, fitted after
    training and kept in buffers)."""

    def __init__(self, in_dim: int, hidden: Sequence[int], latent: int, k: int = 0, dropout: float = 0.0,
                 alpha: float = 1.0):
        super().__init__()
        self.ae = AutoEncoder(in_dim, hidden, latent, dropout)
        self.k = k
        self.alpha = alpha
        self.centroids = nn.Parameter(torch.zeros(k, latent)) if k else None
        self.register_buffer("proj_mean", torch.zeros(latent))
        self.register_buffer("proj_axes", torch.zeros(2, latent))

    def soft_assign(self, z: torch.Tensor) -> torch.Tensor:
        """q_ij = (1 + |z_i - mu_j|^2 / alpha)^(-(alpha+1)/2), normalised over j."""
        d2 = torch.cdist(z, self.centroids).pow(2)
        q = (1.0 + d2 / self.alpha).pow(-(self.alpha + 1.0) / 2.0)
        return q / q.sum(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor, out: str = "result") -> torch.Tensor:
        if out == "recon":
            return self.ae(x)
        z = self.ae.encoder(x)
        if out == "code":
            return z
        q = self.soft_assign(z)
        if out == "q":
            return q
        xy = (z - self.proj_mean) @ self.proj_axes.T
        return torch.cat([q, xy], dim=1)


class AnomalyNet(nn.Module):
    """A denoising autoencoder, or Deep SVDD (Ruff et al. 2018), as an anomaly scorer.

    Autoencoder score: the reconstruction error plus the Mahalanobis distance of the code from
    the training codes, each divided by its median over training rows. The second term matters:
    rows that are extreme along the data's main directions (e.g. every size feature large) are
    reconstructed well, since they lie on the learned manifold, yet are far out in code space.
    Deep SVDD score: the squared distance of the code to a fixed centre; its network has no bias
    terms, as in the paper, so that it cannot map every input onto the centre.

    ``forward(x, out)``: "recon" the reconstruction (training), "dist" the squared distance to
    the centre (SVDD training), "code" the code, and by default "result": the score followed by
    one contribution per input feature: how much the score drops when that feature is set to its
    training mean (0 after scaling), computed only for rows whose score passes the threshold
    buffer (the rows that get flagged); 0 elsewhere."""

    def __init__(self, in_dim: int, hidden: Sequence[int], latent: int, method: str = "autoencoder",
                 dropout: float = 0.0):
        super().__init__()
        self.method = method
        self.ae = AutoEncoder(in_dim, hidden, latent, dropout, bias=(method != "deep_svdd"))
        self.register_buffer("center", torch.zeros(latent))
        self.register_buffer("code_precision", torch.eye(latent))
        self.register_buffer("recon_scale", torch.tensor(1.0))
        self.register_buffer("code_scale", torch.tensor(1.0))
        self.register_buffer("threshold", torch.tensor(float("inf")))

    def distance(self, x: torch.Tensor) -> torch.Tensor:
        """Squared distance of each row's code to the centre (Mahalanobis for the autoencoder)."""
        d = self.ae.encoder(x) - self.center
        if self.method == "deep_svdd":
            return d.pow(2).sum(dim=1)
        return ((d @ self.code_precision) * d).sum(dim=1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """The anomaly score of each row (higher = more anomalous)."""
        if self.method == "deep_svdd":
            return self.distance(x)
        z = self.ae.encoder(x)
        recon = (x - self.ae.decoder(z)).pow(2).mean(dim=1)
        d = z - self.center
        code = ((d @ self.code_precision) * d).sum(dim=1)
        return recon / self.recon_scale + code / self.code_scale

    def forward(self, x: torch.Tensor, out: str = "result") -> torch.Tensor:
        if out == "recon":
            return self.ae(x)
        if out == "dist":
            return self.distance(x)
        if out == "code":
            return self.ae.encoder(x)
        score = self.score(x)
        contrib = torch.zeros_like(x)
        rows = torch.nonzero(score > self.threshold).flatten()
        if len(rows):
            n, d = len(rows), x.shape[1]
            # every flagged row d times, each copy with one feature set to 0 (its training mean)
            occluded = x[rows].unsqueeze(1).repeat(1, d, 1)
            occluded[:, torch.arange(d), torch.arange(d)] = 0.0
            s = self.score(occluded.reshape(-1, d)).reshape(n, d)
            contrib[rows] = (score[rows].unsqueeze(1) - s).clamp(min=0.0)
        return torch.cat([score.unsqueeze(1), contrib], dim=1)
