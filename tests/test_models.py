"""ResNet-V2 architecture checks. Oracles: timm's parameter counts, numpy hand computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bit_jax import models
from bit_jax.models import ops

# Parameters without head, from timm 1.0.31 `resnetv2_<d>x<w>_bit` built on the meta device
# (num_classes=0). R50x1 is the published 23.50 M.
TIMM_HEADLESS_PARAMS = {
  'R50x1': 23_500_352,
  'R50x3': 211_174_080,
  'R101x1': 42_492_480,
  'R101x3': 381_789_888,
  'R152x2': 232_238_208,
  'R152x4': 928_340_224,
}


def count(model, size=32):
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))
  return sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(shapes))


@pytest.mark.parametrize('name', sorted(models.KNOWN_MODELS))
def test_parameter_count_of_every_registered_model(name):
  spec = models.KNOWN_MODELS[name]
  arch = name.removeprefix('BiT-S-').removeprefix('BiT-M-').removesuffix('-ILSVRC2012')
  features = 2048 * spec['width']
  expected = TIMM_HEADLESS_PARAMS[arch] + features * spec['num_classes'] + spec['num_classes']
  assert count(models.create_model(name, num_classes=spec['num_classes'])) == expected
  assert spec['url'] == f'https://storage.googleapis.com/bit_models/{name}.npz'


def hand_count(units, width):
  """Weights of a pre-activation bottleneck ResNet, counted layer by layer."""
  root = 64 * width
  total, c_in = 7 * 7 * 3 * root, root
  for stage, n in enumerate(units):
    mid = root * 2**stage
    for u in range(n):
      total += 2 * c_in + c_in * mid + 2 * mid + 9 * mid * mid + 2 * mid + mid * 4 * mid
      if u == 0:
        total += c_in * 4 * mid
      c_in = 4 * mid
  return total + 2 * c_in


@pytest.mark.parametrize('depth,width', [(26, 2), (200, 1), (50, 4)])
def test_parameter_count_matches_hand_count(depth, width):
  model = models.ResNetV2(depth=depth, width=width, num_classes=None)
  assert count(model) == hand_count(models.DEPTHS[depth], width)


def test_weight_standardization_matches_numpy():
  kernel = np.random.default_rng(0).normal(2.0, 3.0, (3, 3, 8, 4)).astype(np.float32)
  mean = kernel.mean(axis=(0, 1, 2))
  std = np.sqrt(((kernel - mean) ** 2).mean(axis=(0, 1, 2)) + 1e-10)
  np.testing.assert_allclose(ops.standardize_weight(kernel), (kernel - mean) / std, atol=1e-5)


def test_group_norm_matches_numpy_two_pass():
  rng = np.random.default_rng(0)
  x = rng.normal(5.0, 2.0, (2, 4, 4, 64)).astype(np.float32)  # large mean: one-pass would drift
  scale, bias = rng.normal(size=64).astype(np.float32), rng.normal(size=64).astype(np.float32)
  g = x.reshape(2, 4, 4, 32, 2)
  mean = g.mean(axis=(1, 2, 4), keepdims=True)
  var = ((g - mean) ** 2).mean(axis=(1, 2, 4), keepdims=True)
  expected = ((g - mean) / np.sqrt(var + 1e-5)).reshape(x.shape) * scale + bias
  np.testing.assert_allclose(ops.group_norm(x, scale, bias), expected, atol=1e-5)


def test_root_max_pool_pads_with_zeros_not_minus_infinity():
  model = models.ResNetV2(units=(1, 1, 1, 1), width=0.5, num_classes=None)
  x = jax.random.uniform(jax.random.PRNGKey(1), (1, 32, 32, 3), minval=-1, maxval=1)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), x)['params']
  _, out = jax.jit(model.apply, static_argnames='return_intermediates')(
    {'params': params}, x, return_intermediates=True
  )
  conv = jax.jit(models.StdConv(32, 7, 2, pad=3).apply)({'params': params['root_block']}, x)

  def reference_pool(pad_value):
    padded = np.pad(np.asarray(conv), ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=pad_value)
    return np.stack(
      [
        np.stack(
          [padded[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].max(axis=(1, 2)) for j in range(8)], 1
        )
        for i in range(8)
      ],
      1,
    )

  zero_padded, inf_padded = reference_pool(0.0), reference_pool(-np.inf)
  assert not np.allclose(zero_padded, inf_padded)  # the case distinguishes the two paddings
  np.testing.assert_allclose(out['stem'], zero_padded, atol=1e-6)


def test_intermediates_and_features():
  model = models.create_model('R26x1', num_classes=7)
  x = jnp.zeros((2, 64, 64, 3))
  params = jax.jit(model.init)(jax.random.PRNGKey(0), x)['params']
  logits, out = jax.jit(model.apply, static_argnames='return_intermediates')(
    {'params': params}, x, return_intermediates=True
  )
  assert {k: v.shape for k, v in out.items()} == {
    'stem': (2, 16, 16, 64),
    'stage1': (2, 16, 16, 256),
    'stage2': (2, 8, 8, 512),
    'stage3': (2, 4, 4, 1024),
    'stage4': (2, 2, 2, 2048),
    'pre_logits': (2, 2048),
    'logits': (2, 7),
  }
  np.testing.assert_array_equal(logits, 0.0)  # zero-initialised head
  features = models.create_model('R26x1', num_classes=None)
  assert jax.eval_shape(
    features.apply, {'params': {k: v for k, v in params.items() if k != 'head'}}, x
  ).shape == (2, 2048)


def test_bfloat16_compute_keeps_float32_params_and_close_logits():
  x = jax.random.uniform(jax.random.PRNGKey(1), (2, 32, 32, 3), minval=-1, maxval=1)
  f32 = models.ResNetV2(units=(1, 1, 1, 1), width=0.5, num_classes=None)
  bf16 = f32.clone(dtype=jnp.bfloat16)
  params = jax.jit(f32.init)(jax.random.PRNGKey(0), x)['params']
  assert all(
    p.dtype == jnp.float32
    for p in jax.tree_util.tree_leaves(jax.eval_shape(bf16.init, jax.random.PRNGKey(0), x))
  )
  a, b = jax.jit(f32.apply)({'params': params}, x), jax.jit(bf16.apply)({'params': params}, x)
  assert float(jnp.max(jnp.abs(a - b))) < 0.1 * float(jnp.max(jnp.abs(a)))


def test_unknown_architecture_says_what_is_valid():
  with pytest.raises(ValueError, match='R50x1'):
    models.create_model('R34x1')
