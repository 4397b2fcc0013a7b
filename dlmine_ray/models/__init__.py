"""Plain torch modules; nothing here imports Ray."""

from dlmine_ray.models.mlp import MLP, ResMLP, build_backbone

__all__ = ["MLP", "ResMLP", "build_backbone"]
