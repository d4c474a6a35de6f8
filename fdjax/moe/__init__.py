"""Mixture-of-experts students: MEASNet prompt router, (noisy) top-K gating with a balance loss,
dense/sparse dispatch, MUIRF channel sharing, init from FusionDistill's models,
expert-parallel shardings, inference cost, and MUIRF gradient homogenization."""

from fdjax.moe.cost import (active_param_count, expert_param_count, images_per_second,
                            inference_flops, model_cost, param_count, relative_cost)
from fdjax.moe.gating import (balance_loss, cv_squared, dispatch_tensors, expert_capacity,
                              importance_and_load, noisy_logits, noisy_top_k_load, pool_gates,
                              top_k_gates)
from fdjax.moe.homogenize import homogenize, per_task_value_and_grad
from fdjax.moe.init import (EXPERT_AXIS, expert_mesh, expert_sharding, is_expert_leaf,
                            moe_variables)
from fdjax.moe.model import MoEResNet, MoEStage, ResidualStage, moe_resnet
from fdjax.moe.router import PromptRouter

__all__ = [
    "EXPERT_AXIS", "MoEResNet", "MoEStage", "PromptRouter", "ResidualStage",
    "active_param_count", "balance_loss", "cv_squared", "dispatch_tensors", "expert_capacity",
    "expert_mesh", "expert_param_count", "expert_sharding", "homogenize", "images_per_second",
    "importance_and_load", "inference_flops", "is_expert_leaf", "model_cost", "moe_resnet",
    "moe_variables", "noisy_logits", "noisy_top_k_load", "param_count", "per_task_value_and_grad", "pool_gates", "relative_cost",
    "top_k_gates",
]
