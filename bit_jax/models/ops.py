"""The array math of the BiT model, in two implementations with the same values and gradients.

* 'custom': GroupNorm, the 1x1 convolution and the root max-pool with hand-written gradients.
  They exist because autodiff of the plain formulas made XLA's CPU backend copy layouts or run
  slow generic kernels (docs/benchmarks.md has the profiles).
* 'plain': the textbook formulas, differentiated by autodiff. On GPU/TPU XLA fuses these well,
  and the hand-written gradients were only ever measured on CPU, so 'auto' picks 'custom' on
  the CPU and 'plain' elsewhere (`tools/benchmark.py --ops` times both on any backend).

Weight standardisation is the same in both. tests/test_custom_grads.py checks every
hand-written gradient against `jax.vjp` of the plain formula (the max-pool's also against a
loop over its windows). Statistics are taken in at least float32: bfloat16 activations are
normalised in float32, float64 ones (exact-math tests) in float64.
"""

import dataclasses
import functools
from collections.abc import Callable
from types import MappingProxyType

import flax.linen as nn
import jax
import jax.numpy as jnp

GN_GROUPS = 32
GN_EPS = 1e-5
WS_EPS = 1e-10


def standardize_weight(kernel: jax.Array) -> jax.Array:
  """Weight Standardization of an HWIO kernel, per output channel over (H, W, I)."""
  # As an (H*W*I, O) matrix: XLA's CPU backend reduces a 2-D array over its rows quickly, but
  # the gradient of a reduction over (0, 1, 2) of a 1x1 kernel took ~40 ms per 1024x2048 kernel.
  matrix = kernel.reshape(-1, kernel.shape[-1])
  mean = jnp.mean(matrix, axis=0)
  centered = matrix - mean
  var = jnp.mean(jnp.square(centered), axis=0)
  return (centered * jax.lax.rsqrt(var + WS_EPS)).reshape(kernel.shape)


def _group_stats(x: jax.Array, groups: int) -> tuple[jax.Array, jax.Array]:
  """Per-(sample, group) mean and 1/sqrt(var + eps) of an (n, h*w, c) float array, each
  repeated over the group's channels: (n, 1, c). Two passes, as the official code."""
  n, _, c = x.shape
  count = x.shape[1] * (c // groups)

  def group_sums(channel_sums):  # (n, c) -> (n, 1, c): the sum over each channel's group
    sums = channel_sums.reshape(n, groups, 1, c // groups).sum(-1, keepdims=True)
    return jnp.broadcast_to(sums, (n, groups, 1, c // groups)).reshape(n, 1, c)

  # Summing each channel over (h, w) first reads x contiguously (NHWC); the group sums are tiny.
  mean = group_sums(jnp.sum(x, axis=1)) / count
  var = group_sums(jnp.sum(jnp.square(x - mean), axis=1)) / count
  return mean, jax.lax.rsqrt(var + GN_EPS)


def _group_norm_fwd(x, scale, bias, groups):
  n, h, w, c = x.shape
  flat = x.astype(jnp.promote_types(x.dtype, jnp.float32)).reshape(n, h * w, c)
  mean, inv = _group_stats(flat, groups)
  mul = inv * scale  # folded into one multiply-add per element
  out = flat * mul + (bias - mean * mul)
  return out.reshape(x.shape).astype(x.dtype), (x, scale, mean, inv)


def _group_norm_bwd(groups, saved, grad):
  # The textbook normalisation gradient, dx = inv * (g - mean(g) - xhat * mean(g * xhat)) with
  # g = grad * scale and means over the group: one reduction pass over (x, grad) and one
  # elementwise pass, where autodiff of the forward makes several passes and layout copies.
  x, scale, mean, inv = saved
  n, h, w, c = x.shape
  flat = x.astype(jnp.promote_types(x.dtype, jnp.float32)).reshape(n, h * w, c)
  grad = grad.astype(flat.dtype).reshape(n, h * w, c)
  normalized = (flat - mean) * inv
  sum_grad = jnp.sum(grad, axis=1)  # (n, c)
  sum_grad_normalized = jnp.sum(grad * normalized, axis=1)
  count = h * w * (c // groups)

  def group_means(channel_sums):
    sums = (channel_sums * scale).reshape(n, groups, 1, c // groups).sum(-1, keepdims=True)
    return jnp.broadcast_to(sums / count, (n, groups, 1, c // groups)).reshape(n, 1, c)

  dx = inv * (grad * scale - group_means(sum_grad) - normalized * group_means(sum_grad_normalized))
  return (
    dx.reshape(x.shape).astype(x.dtype),
    jnp.sum(sum_grad_normalized, axis=0),
    jnp.sum(sum_grad, axis=0),
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def group_norm(
  x: jax.Array, scale: jax.Array, bias: jax.Array, groups: int = GN_GROUPS
) -> jax.Array:
  """GroupNorm over (H, W, channels-in-group) with the two-pass biased variance.

  Statistics are taken in at least float32 whatever the activation dtype, and the normalisation is
  folded into one per-(sample, channel) multiply-add so XLA makes a single pass over `x`.
  The gradient is written by hand (`_group_norm_bwd`); tests/test_custom_grads.py checks it
  against autodiff of the plain formula.
  """
  return _group_norm_fwd(x, scale, bias, groups)[0]


group_norm.defvjp(_group_norm_fwd, _group_norm_bwd)


@jax.custom_vjp
def pointwise_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """A 1x1 convolution as a matmul over channels: (n, h, w, c) x (c, d) -> (n, h, w, d)."""
  return jnp.einsum('nhwc,cd->nhwd', x, kernel)


def _pointwise_conv_fwd(x, kernel):
  return pointwise_conv(x, kernel), (x, kernel)


def _pointwise_conv_bwd(saved, grad):
  # Autodiff contracts the kernel gradient over the leading (n, h, w) axes of both operands,
  # which XLA's CPU backend ran as a slow Eigen contraction behind layout copies; transposing
  # explicitly makes it a plain matmul for XLA's fast (YNNPACK) kernels: ~15% of a train step.
  x, kernel = saved
  rows = x.reshape(-1, x.shape[-1])
  grad_kernel = jnp.dot(rows.T, grad.reshape(-1, grad.shape[-1]))
  return jnp.einsum('nhwd,cd->nhwc', grad, kernel), grad_kernel.astype(kernel.dtype)


pointwise_conv.defvjp(_pointwise_conv_fwd, _pointwise_conv_bwd)


def _pool_windows(x: jax.Array) -> list[jax.Array]:
  """The nine strided views of a 3x3/2 VALID max-pool, in row-major window order."""
  rows, cols = (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1
  return [
    x[:, i : i + 2 * rows - 1 : 2, j : j + 2 * cols - 1 : 2] for i in range(3) for j in range(3)
  ]


@jax.custom_vjp
def max_pool_3x3_stride2(x: jax.Array) -> jax.Array:
  """3x3 max-pool with stride 2 and no padding (VALID) over the H, W axes of NHWC `x`.

  The same values as `flax.linen.max_pool(x, (3, 3), (2, 2), 'VALID')`. Autodiff of that lowers
  to XLA's select-and-scatter, which its CPU backend runs as a slow variadic window reduction
  over index arrays (~3% of an R50 train step); here the gradient of each output goes to the first
  maximum of its window in row-major order, as select-and-scatter does.
  """
  return functools.reduce(jnp.maximum, _pool_windows(x))


def _max_pool_fwd(x):
  pooled = max_pool_3x3_stride2(x)
  return pooled, (x, pooled)


def _max_pool_bwd(saved, grad):
  x, pooled = saved
  _, height, width, _ = x.shape
  rows, cols = pooled.shape[1:3]
  zero = jnp.zeros((), x.dtype)
  taken = jnp.zeros(pooled.shape, bool)
  grad_x = jnp.zeros_like(x)
  for k, window in enumerate(_pool_windows(x)):
    i, j = divmod(k, 3)
    first_max = (window == pooled) & ~taken
    taken = taken | first_max
    # Scatter back to rows i, i + 2, ... and columns j, j + 2, ...: a pad with interior zeros.
    grad_x = grad_x + jax.lax.pad(
      jnp.where(first_max, grad, zero),
      zero,
      [
        (0, 0, 0),
        (i, height - i - (2 * rows - 1), 1),
        (j, width - j - (2 * cols - 1), 1),
        (0, 0, 0),
      ],
    )
  return (grad_x,)


max_pool_3x3_stride2.defvjp(_max_pool_fwd, _max_pool_bwd)


def plain_group_norm(
  x: jax.Array, scale: jax.Array, bias: jax.Array, groups: int = GN_GROUPS
) -> jax.Array:
  """GroupNorm as the textbook formula (two-pass biased variance), for autodiff."""
  n, h, w, c = x.shape
  grouped = x.astype(jnp.promote_types(x.dtype, jnp.float32)).reshape(n, h * w, groups, c // groups)
  mean = jnp.mean(grouped, axis=(1, 3), keepdims=True)
  var = jnp.mean(jnp.square(grouped - mean), axis=(1, 3), keepdims=True)
  out = (grouped - mean) * jax.lax.rsqrt(var + GN_EPS)
  out = out * scale.reshape(1, 1, groups, c // groups) + bias.reshape(1, 1, groups, c // groups)
  return out.reshape(n, h, w, c).astype(x.dtype)


def plain_pointwise_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return jnp.einsum('nhwc,cd->nhwd', x, kernel)


def plain_max_pool_3x3_stride2(x: jax.Array) -> jax.Array:
  return nn.max_pool(x, (3, 3), (2, 2), 'VALID')


@dataclasses.dataclass(frozen=True)
class Ops:
  group_norm: Callable
  pointwise_conv: Callable
  max_pool_3x3_stride2: Callable


IMPLEMENTATIONS = MappingProxyType(
  {
    'custom': Ops(group_norm, pointwise_conv, max_pool_3x3_stride2),
    'plain': Ops(plain_group_norm, plain_pointwise_conv, plain_max_pool_3x3_stride2),
  }
)
CHOICES = ('auto', *IMPLEMENTATIONS)


def implementation(choice: str = 'auto') -> Ops:
  """'custom', 'plain', or 'auto': hand-written gradients on the CPU, autodiff elsewhere."""
  if choice == 'auto':
    choice = 'custom' if jax.default_backend() == 'cpu' else 'plain'
  if choice not in IMPLEMENTATIONS:
    raise ValueError(f'Expected ops in {CHOICES}; got {choice!r}.')
  return IMPLEMENTATIONS[choice]
