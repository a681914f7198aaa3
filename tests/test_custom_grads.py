"""Hand-written gradients in ops.py. Oracle: `jax.vjp` of the plain formulas they replace."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bit_jax.models import ops

plain_group_norm = ops.plain_group_norm  # the textbook formula, checked against numpy below


def inputs(shape, dtype, loc):
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  c = shape[-1]
  x = (loc + 3.0 * jax.random.normal(keys[0], shape)).astype(dtype)
  scale = 1.0 + 0.5 * jax.random.normal(keys[1], (c,))
  bias = jax.random.normal(keys[2], (c,))
  cotangent = jax.random.normal(keys[3], shape).astype(dtype)
  return x, scale, bias, cotangent


def relative_error(actual, expected):
  actual, expected = (np.asarray(a, np.float64) for a in (actual, expected))
  return np.max(np.abs(actual - expected)) / np.max(np.abs(expected))


# A large mean (100 with std 3) is where a one-pass variance or a sloppy backward loses digits.
@pytest.mark.parametrize(
  'shape,loc',
  [((2, 8, 8, 64), 0.0), ((2, 8, 8, 64), 100.0), ((3, 4, 5, 96), 5.0), ((1, 2, 2, 32), 0.0)],
)
def test_group_norm_gradient_matches_autodiff_of_plain_formula_f32(shape, loc):
  x, scale, bias, cotangent = inputs(shape, jnp.float32, loc)
  out, vjp = jax.vjp(ops.group_norm, x, scale, bias)
  expected_out, expected_vjp = jax.vjp(plain_group_norm, x, scale, bias)
  assert relative_error(out, expected_out) < 1e-5
  for name, got, want in zip(('x', 'scale', 'bias'), vjp(cotangent), expected_vjp(cotangent)):
    assert got.dtype == want.dtype and got.shape == want.shape, name
    assert relative_error(got, want) < 1e-5, name


def test_group_norm_gradient_bfloat16_activations():
  x, scale, bias, cotangent = inputs((2, 8, 8, 64), jnp.bfloat16, 3.0)
  grads = jax.vjp(ops.group_norm, x, scale, bias)[1](cotangent)
  expected = jax.vjp(plain_group_norm, x, scale, bias)[1](cotangent)
  assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.float32, jnp.float32]
  assert relative_error(grads[0], expected[0]) < 1e-2  # one bf16 rounding of dx
  assert relative_error(grads[1], expected[1]) < 1e-5  # float32 parameter gradients
  assert relative_error(grads[2], expected[2]) < 1e-5


def test_group_norm_gradient_of_groups_argument_and_jit():
  x, scale, bias, cotangent = inputs((2, 4, 4, 64), jnp.float32, 1.0)
  loss = lambda fn: lambda *a: jnp.sum(jax.nn.relu(fn(*a, 8)) * cotangent)
  got = jax.jit(jax.grad(loss(ops.group_norm), argnums=(0, 1, 2)))(x, scale, bias)
  want = jax.grad(loss(plain_group_norm), argnums=(0, 1, 2))(x, scale, bias)
  for g, w in zip(got, want):
    assert relative_error(g, w) < 1e-5


@pytest.mark.parametrize('dtype,tolerance', [(jnp.float32, 1e-5), (jnp.bfloat16, 1e-2)])
@pytest.mark.parametrize('shape,features', [((2, 8, 8, 64), 256), ((3, 4, 4, 256), 64)])
def test_pointwise_conv_gradient_matches_autodiff_of_einsum(shape, features, dtype, tolerance):
  keys = jax.random.split(jax.random.PRNGKey(1), 3)
  x = jax.random.normal(keys[0], shape).astype(dtype)
  kernel = jax.random.normal(keys[1], (shape[-1], features)).astype(dtype)
  cotangent = jax.random.normal(keys[2], shape[:-1] + (features,)).astype(dtype)
  plain = ops.plain_pointwise_conv
  out, vjp = jax.vjp(ops.pointwise_conv, x, kernel)
  expected_out, expected_vjp = jax.vjp(plain, x, kernel)
  np.testing.assert_array_equal(out, expected_out)
  for name, got, want in zip(('x', 'kernel'), vjp(cotangent), expected_vjp(cotangent)):
    assert got.dtype == want.dtype == dtype and got.shape == want.shape, name
    assert relative_error(got, want) < tolerance, name


def numpy_max_pool_grad(x, cotangent):
  """Each output's cotangent goes to the first maximum of its 3x3/2 window (row-major)."""
  x, cotangent = np.asarray(x), np.asarray(cotangent)
  grad = np.zeros_like(x)
  for n, a, b, c in np.ndindex(cotangent.shape):
    window = x[n, 2 * a : 2 * a + 3, 2 * b : 2 * b + 3, c]
    i, j = np.unravel_index(np.argmax(window), (3, 3))  # argmax: the first maximum
    grad[n, 2 * a + i, 2 * b + j, c] += cotangent[n, a, b, c]
  return grad


# Odd and even sizes; rounded inputs make ties (as the root's zero padding can tie with zero
# activations). The oracle is a loop over windows; flax's autodiff (XLA's select-and-scatter)
# must agree with it too, so the two gradients are the same function.
@pytest.mark.parametrize('shape', [(2, 9, 7, 3), (1, 8, 10, 2), (2, 18, 18, 4)])
@pytest.mark.parametrize('ties', [False, True])
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_max_pool_matches_flax_and_routes_gradient_to_first_maximum(shape, ties, dtype):
  keys = jax.random.split(jax.random.PRNGKey(2), 2)
  x = jax.random.normal(keys[0], shape)
  if ties:
    x = jnp.round(x)
  x = x.astype(dtype)
  plain = ops.plain_max_pool_3x3_stride2
  out, vjp = jax.vjp(ops.max_pool_3x3_stride2, x)
  expected_out, expected_vjp = jax.vjp(plain, x)
  np.testing.assert_array_equal(out, expected_out)
  cotangent = jax.random.normal(keys[1], out.shape).astype(dtype)
  (grad,) = jax.jit(vjp)(cotangent)
  assert grad.dtype == dtype and grad.shape == x.shape
  oracle = numpy_max_pool_grad(x.astype(jnp.float32), cotangent.astype(jnp.float32))
  # Overlapping windows add up to four cotangents per input: only the summation order differs.
  tolerance = dict(rtol=1e-6, atol=1e-6) if dtype == jnp.float32 else dict(rtol=2e-2, atol=2e-2)
  np.testing.assert_allclose(np.asarray(grad, np.float32), oracle, **tolerance)
  np.testing.assert_allclose(
    np.asarray(expected_vjp(cotangent)[0], np.float32), oracle, **tolerance
  )


def test_plain_group_norm_matches_numpy_two_pass():
  rng = np.random.default_rng(0)
  x = rng.normal(5.0, 2.0, (2, 4, 4, 64)).astype(np.float32)
  scale, bias = rng.normal(size=64).astype(np.float32), rng.normal(size=64).astype(np.float32)
  g = x.reshape(2, 4, 4, 32, 2).astype(np.float64)
  mean = g.mean(axis=(1, 2, 4), keepdims=True)
  var = ((g - mean) ** 2).mean(axis=(1, 2, 4), keepdims=True)
  expected = ((g - mean) / np.sqrt(var + 1e-5)).reshape(x.shape) * scale + bias
  np.testing.assert_allclose(ops.plain_group_norm(x, scale, bias), expected, atol=1e-5)


def test_whole_model_gradients_are_the_same_with_both_implementations():
  """ops='custom' and ops='plain' are one function: in float64 their losses and parameter
  gradients agree to rounding (1e-12 relative, where a wrong formula differs at 1e-3)."""
  from bit_jax import models

  with jax.enable_x64(True):
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 16, 16, 3), jnp.float64, -1, 1)
    labels = jax.nn.one_hot(jnp.array([1, 3]), 5, dtype=jnp.float64)
    model = {
      choice: models.ResNetV2(
        units=(1, 1, 1, 1),
        width=0.5,
        num_classes=5,
        ops=choice,
        dtype=jnp.float64,
        param_dtype=jnp.float64,
      )
      for choice in ('custom', 'plain')
    }
    params = jax.jit(model['plain'].init)(jax.random.PRNGKey(1), x)['params']
    params['head']['kernel'] = 0.1 * jax.random.normal(
      jax.random.PRNGKey(2), params['head']['kernel'].shape, jnp.float64
    )
    grads = {}
    for choice in model:
      loss = lambda p: -jnp.sum(labels * jax.nn.log_softmax(model[choice].apply({'params': p}, x)))
      grads[choice] = jax.device_get(jax.jit(jax.grad(loss))(params))
  for got, want in zip(jax.tree.leaves(grads['custom']), jax.tree.leaves(grads['plain'])):
    assert got.dtype == np.float64
    assert relative_error(got, want) < 1e-12
