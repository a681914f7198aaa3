"""Hand-written gradients in ops.py. Oracle: `jax.vjp` of the plain formulas they replace."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bit_jax import ops


def plain_group_norm(x, scale, bias, groups=32):
  """GroupNorm as the textbook formula, for autodiff to differentiate op by op."""
  n, h, w, c = x.shape
  grouped = x.astype(jnp.float32).reshape(n, h * w, groups, c // groups)
  mean = jnp.mean(grouped, axis=(1, 3), keepdims=True)
  var = jnp.mean(jnp.square(grouped - mean), axis=(1, 3), keepdims=True)
  out = (grouped - mean) * jax.lax.rsqrt(var + 1e-5)
  out = out * scale.reshape(1, 1, groups, c // groups) + bias.reshape(1, 1, groups, c // groups)
  return out.reshape(n, h, w, c).astype(x.dtype)


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
@pytest.mark.parametrize('shape,loc', [((2, 8, 8, 64), 0.0), ((2, 8, 8, 64), 100.0),
                                       ((3, 4, 5, 96), 5.0), ((1, 2, 2, 32), 0.0)])
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
  assert relative_error(grads[0], expected[0]) < 1e-2          # one bf16 rounding of dx
  assert relative_error(grads[1], expected[1]) < 1e-5          # float32 parameter gradients
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
  plain = lambda x, k: jnp.einsum('nhwc,cd->nhwd', x, k)
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
    window = x[n, 2 * a:2 * a + 3, 2 * b:2 * b + 3, c]
    i, j = np.unravel_index(np.argmax(window), (3, 3))      # argmax: the first maximum
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
  plain = lambda x: nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')
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
  np.testing.assert_allclose(np.asarray(expected_vjp(cotangent)[0], np.float32), oracle,
                             **tolerance)
