"""Feature-distillation losses shared by the expert stage (ILIAC) and FusionDistill."""

from __future__ import annotations

import jax.numpy as jnp


def cosine_distance(student_features, teacher_features, eps: float = 1e-8):
  """Mean over the batch of ``1 - cos(flatten(s_b), flatten(t_b))``.

  Args:
    student_features, teacher_features: float ``[B, ...]`` of equal shape; each
      example is flattened (the reference flattens the 64x8x8 stage-3 output).
    eps: as PyTorch's ``CosineSimilarity``: each norm is clamped below at ``eps``.
  Returns:
    float32 scalar in [0, 2].
  """
  if student_features.shape != teacher_features.shape:
    raise ValueError(f"feature shapes differ: student {student_features.shape} vs "
                     f"teacher {teacher_features.shape}")
  s = student_features.reshape(student_features.shape[0], -1).astype(jnp.float32)
  t = teacher_features.reshape(teacher_features.shape[0], -1).astype(jnp.float32)
  # max(|x|, eps) as sqrt(max(|x|^2, eps^2)): the same value, and a finite gradient at an
  # all-zero row (the norm's own is 0/0 there, a NaN that would reach shared parameters)
  s_norm = jnp.sqrt(jnp.maximum(jnp.sum(s * s, axis=-1), eps * eps))
  t_norm = jnp.sqrt(jnp.maximum(jnp.sum(t * t, axis=-1), eps * eps))
  cosine = jnp.sum(s * t, axis=-1) / (s_norm * t_norm)
  return jnp.mean(1.0 - cosine)
