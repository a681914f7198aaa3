"""MixUp on device, as BiT applies it during fine-tuning.

Official BiT draws one λ ~ Beta(α, α) per batch and mixes every example with the
batch reversed: ``x' = λ x + (1 - λ) x[::-1]``, and the same for the labels. Pairing
with the reversed batch (instead of a random permutation) is free on device and
fine because the input pipeline already shuffles. With an odd batch size the
middle example is paired with itself and stays unchanged.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp


def mixup(
  rng: jax.Array,
  images: jax.Array,
  labels: jax.Array,
  alpha: float,
  per_example: bool = False,
) -> tuple[jax.Array, jax.Array]:
  """Mixes ``images`` [B, ...] and one-/multi-hot float ``labels`` [B, K].

  ``alpha`` is static config (a Python number): 0 returns the inputs unchanged
  without drawing anything. ``per_example=True`` draws one λ per example instead
  of one per batch. Images and labels keep their dtypes (e.g. bfloat16).
  """
  if not isinstance(alpha, numbers.Real):
    raise TypeError(
      'Expected alpha as a Python number (static config, decided outside '
      f'jit); got {type(alpha).__name__}. Pass the float from the config.'
    )
  if alpha < 0:
    raise ValueError(f'Expected alpha >= 0 for Beta(alpha, alpha); got {alpha}.')
  if alpha == 0:
    return images, labels
  for name, array in (('images', images), ('labels', labels)):
    if not jnp.issubdtype(array.dtype, jnp.floating):
      raise TypeError(
        f'Expected floating-point {name} (mixing integers would truncate); '
        f'got {array.dtype}. Normalise or one-hot them before mixup.'
      )
  if images.shape[0] != labels.shape[0]:
    raise ValueError(
      f'Expected images and labels with the same batch size; got '
      f'{images.shape[0]} and {labels.shape[0]}.'
    )

  batch_size = images.shape[0]
  lam = jax.random.beta(rng, alpha, alpha, shape=(batch_size,) if per_example else ())
  return _mix_with_reversed(images, lam), _mix_with_reversed(labels, lam)


def _mix_with_reversed(x: jax.Array, lam: jax.Array) -> jax.Array:
  # λ of shape [B] broadcasts over the example's other axes; a scalar just works.
  lam = lam.reshape(lam.shape + (1,) * (x.ndim - lam.ndim)) if lam.ndim else lam
  # Mix in (at least) float32 so bf16 inputs are rounded once, at the end.
  wide = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  return (lam * wide + (1.0 - lam) * wide[::-1]).astype(x.dtype)
