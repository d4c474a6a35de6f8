"""Knowledge distillation: cosine feature losses, expert (ILIAC) and FusionDistill objectives."""

from fdjax.distill.losses import cosine_distance
from fdjax.distill.objectives import apply_experts, expert_loss, fusiondistill_loss

__all__ = ["apply_experts", "cosine_distance", "expert_loss", "fusiondistill_loss"]
