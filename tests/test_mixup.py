"""MixUp with the reversed batch, as in official BiT.

Oracle: a hand computation in numpy. For one-hot labels, the mixed label of
example i puts λ on its own class and 1 - λ on the class of example B-1-i, so λ
can be read back from the labels and the mixed images recomputed as
λ x + (1 - λ) x[::-1] independently of the code under test.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bit_jax.training.mixup import mixup

BATCH, CLASSES = 6, 4
CLASS_OF_EXAMPLE = np.array([0, 1, 2, 3, 0, 2])  # reversed partners differ in class


def _batch(dtype=jnp.float32):
  images = jax.random.normal(jax.random.key(0), (BATCH, 5, 5, 3)).astype(dtype)
  labels = jax.nn.one_hot(CLASS_OF_EXAMPLE, CLASSES)
  return images, labels


def _lambda_from_labels(mixed_labels):
  # λ is the weight left on each example's own class.
  return np.asarray(mixed_labels)[np.arange(BATCH), CLASS_OF_EXAMPLE]


def _hand_mix(images, lam):
  x = np.asarray(images, dtype=np.float64)
  lam = np.asarray(lam, dtype=np.float64).reshape(-1, 1, 1, 1)
  return lam * x + (1 - lam) * x[::-1]


def test_alpha_zero_is_identity():
  images, labels = _batch()
  mixed_images, mixed_labels = mixup(jax.random.key(1), images, labels, 0.0)
  assert mixed_images is images and mixed_labels is labels


def test_batch_mixup_matches_hand_computation():
  images, labels = _batch()
  mixed_images, mixed_labels = mixup(jax.random.key(1), images, labels, 0.2)
  lam = _lambda_from_labels(mixed_labels)
  assert np.allclose(lam, lam[0]), 'one λ for the whole batch'
  assert 0.0 < lam[0] < 1.0
  np.testing.assert_allclose(np.sum(mixed_labels, axis=1), 1.0, rtol=1e-6)
  # The partner class gets exactly 1 - λ.
  partner = np.asarray(mixed_labels)[np.arange(BATCH), CLASS_OF_EXAMPLE[::-1]]
  np.testing.assert_allclose(partner, 1.0 - lam, rtol=1e-6)
  np.testing.assert_allclose(mixed_images, _hand_mix(images, lam), rtol=1e-5, atol=1e-6)


def test_per_example_draws_one_lambda_per_row():
  images, labels = _batch()
  mixed_images, mixed_labels = mixup(jax.random.key(2), images, labels, 1.0, per_example=True)
  lam = _lambda_from_labels(mixed_labels)
  assert len(np.unique(np.round(lam, 6))) == BATCH
  np.testing.assert_allclose(np.sum(mixed_labels, axis=1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(mixed_images, _hand_mix(images, lam), rtol=1e-5, atol=1e-6)


def test_same_rng_same_result_other_rng_different():
  images, labels = _batch()
  first = mixup(jax.random.key(3), images, labels, 0.4)[1]
  again = mixup(jax.random.key(3), images, labels, 0.4)[1]
  other = mixup(jax.random.key(4), images, labels, 0.4)[1]
  np.testing.assert_array_equal(first, again)
  assert not np.allclose(first, other)


def test_works_under_jit_and_keeps_bfloat16():
  images, labels = _batch(jnp.bfloat16)
  mix = jax.jit(mixup, static_argnames=('alpha', 'per_example'))
  mixed_images, mixed_labels = mix(jax.random.key(5), images, labels, alpha=0.3)
  assert mixed_images.dtype == jnp.bfloat16
  assert mixed_labels.dtype == jnp.float32
  lam = _lambda_from_labels(mixed_labels)
  np.testing.assert_allclose(
    np.asarray(mixed_images, dtype=np.float64), _hand_mix(images, lam), rtol=2e-2, atol=2e-2
  )


def test_raw_uint32_key_is_accepted():
  images, labels = _batch()
  _, mixed_labels = mixup(jax.random.PRNGKey(0), images, labels, 0.2)
  np.testing.assert_allclose(np.sum(mixed_labels, axis=1), 1.0, rtol=1e-6)


def test_invalid_inputs_are_rejected():
  images, labels = _batch()
  with pytest.raises(ValueError, match='alpha >= 0'):
    mixup(jax.random.key(0), images, labels, -0.1)
  with pytest.raises(TypeError, match='Python number'):
    mixup(jax.random.key(0), images, labels, jnp.float32(0.1))
  with pytest.raises(TypeError, match='floating-point images'):
    mixup(jax.random.key(0), images.astype(jnp.uint8), labels, 0.1)
  with pytest.raises(ValueError, match='same batch size'):
    mixup(jax.random.key(0), images, labels[:3], 0.1)
