"""BiT ResNet-V2: pre-activation bottlenecks with GroupNorm and Weight Standardization.

The arithmetic follows the official BiT code (google-research/big_transfer), so the official
`.npz` checkpoints give the same logits as the reference implementations:

* every convolution is weight-standardised per output channel over (H, W, in) with the biased
  variance and 1e-10 inside the square root; convolutions have no bias;
* GroupNorm uses 32 groups, the two-pass biased variance and eps 1e-5;
* the root pads 3 pixels of zeros, convolves 7x7/2 VALID, pads 1 pixel of zeros (not -inf: the
  official code pads with zeros before the max-pool, and the zeros win against negative
  activations) and max-pools 3x3/2 VALID;
* a unit is GN->ReLU, then (projection of the *pre-activated* input when shape or stride
  changes) 1x1 -> GN/ReLU -> 3x3 with the stride -> GN/ReLU -> 1x1 (4x), added to the shortcut
  with no activation after the add.

Inputs are NHWC float images in [-1, 1]. `model.apply(variables, x)` returns logits (or the
pre-logit features when `num_classes` is None); `return_intermediates=True` returns
`(logits, out)` with the stem, stage1-4 and pre_logits features, as big_vision does.
"""

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bit_jax.models import ops as ops_lib
from bit_jax.models.ops import GN_GROUPS, standardize_weight

Dtype = Any

# Units per stage for each depth (the torchvision/official ResNet layouts).
DEPTHS: Mapping[int, tuple[int, int, int, int]] = MappingProxyType(
  {
    14: (1, 1, 1, 1),  # not published: small enough for tests and the CPU demo
    26: (2, 2, 2, 2),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
  }
)
STAGE_STRIDES = (1, 2, 2, 2)


class GroupNorm(nn.Module):
  """GroupNorm with per-channel `scale` and `bias` (see `ops.group_norm`)."""

  groups: int = GN_GROUPS
  param_dtype: Dtype = jnp.float32
  ops: str = 'auto'

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    if c % self.groups:
      raise ValueError(f'GroupNorm needs channels divisible by {self.groups}, got {c}.')
    scale = self.param('scale', nn.initializers.ones, (c,), self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (c,), self.param_dtype)
    return ops_lib.implementation(self.ops).group_norm(x, scale, bias, self.groups)


class StdConv(nn.Module):
  """Weight-standardised convolution, no bias. The stored `kernel` is the raw HWIO variable.

  Padding is explicit (`pad` pixels of zeros on every side, then VALID), as the official code
  does; `SAME` would pad stride-2 convolutions asymmetrically and break checkpoint parity.
  1x1 convolutions are computed as matmuls (after subsampling for stride), which is exact and
  faster on CPU.
  """

  features: int
  kernel_size: int
  stride: int = 1
  pad: int = 0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  ops: str = 'auto'

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param(
      'kernel', nn.initializers.he_normal(), (k, k, x.shape[-1], self.features), self.param_dtype
    )
    kernel = standardize_weight(kernel).astype(self.dtype)
    x = x.astype(self.dtype)
    if k == 1 and self.pad == 0:
      if self.stride > 1:
        x = x[:, :: self.stride, :: self.stride, :]
      return ops_lib.implementation(self.ops).pointwise_conv(x, kernel[0, 0])
    return jax.lax.conv_general_dilated(
      x,
      kernel,
      window_strides=(self.stride, self.stride),
      padding=[(self.pad, self.pad)] * 2,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    )


class BottleneckUnit(nn.Module):
  """Pre-activation bottleneck: GN/ReLU -> 1x1 -> GN/ReLU -> 3x3(stride) -> GN/ReLU -> 1x1."""

  mid_features: int
  stride: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  ops: str = 'auto'

  @nn.compact
  def __call__(self, x):
    out_features = 4 * self.mid_features
    conv = lambda *args, **kw: StdConv(
      *args, dtype=self.dtype, param_dtype=self.param_dtype, ops=self.ops, **kw
    )
    norm = lambda name: GroupNorm(param_dtype=self.param_dtype, ops=self.ops, name=name)
    preact = nn.relu(norm('gn1')(x))
    shortcut = x
    if x.shape[-1] != out_features or self.stride != 1:
      shortcut = conv(out_features, 1, self.stride, name='conv_proj')(preact)
    y = conv(self.mid_features, 1, name='conv1')(preact)
    y = nn.relu(norm('gn2')(y))
    y = conv(self.mid_features, 3, self.stride, pad=1, name='conv2')(y)
    y = nn.relu(norm('gn3')(y))
    y = conv(out_features, 1, name='conv3')(y)
    return y + shortcut


class ResNetStage(nn.Module):
  """`units` bottlenecks; the first carries the stride (and the projection)."""

  units: int
  mid_features: int
  stride: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  ops: str = 'auto'

  @nn.compact
  def __call__(self, x):
    for unit in range(1, self.units + 1):
      x = BottleneckUnit(
        self.mid_features,
        self.stride if unit == 1 else 1,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        ops=self.ops,
        name=f'unit{unit:02d}',
      )(x)
    return x


class ResNetV2(nn.Module):
  """BiT ResNet-V2.

  Attributes:
    depth: 26, 50, 101, 152 or 200.
    width: width factor (1-4 for the published models; 0.5 makes small test/demo models).
    units: units per stage, overriding `depth` (small test/demo models, e.g. (1, 1, 1, 1)).
    num_classes: size of the zero-initialised linear head; None returns pre-logit features.
    dtype: compute dtype of activations (e.g. jnp.bfloat16).
    param_dtype: dtype of the parameters: float32, or float64 where a test needs exact math
      (normalisation statistics are taken in at least float32, otherwise in the input dtype).
    ops: 'custom' (hand-written gradients, fast on CPU), 'plain' (autodiff) or 'auto' (custom
      on the CPU, plain on GPU/TPU); the values and gradients are the same (see ops.py).
    dropout: rate of dropout on the pre-logits, before the head (Ahmad & Shin: 0.5). It acts
      only in `__call__(..., train=True)` with a 'dropout' rng; otherwise the model is
      deterministic, as at evaluation. BiT has none (0).
  """

  depth: int = 50
  width: float = 1
  num_classes: int | None = 1000
  dtype: Dtype = jnp.float32
  units: Sequence[int] | None = None
  param_dtype: Dtype = jnp.float32
  ops: str = 'auto'
  dropout: float = 0.0

  @property
  def stage_units(self) -> Sequence[int]:
    if self.units is not None:
      return tuple(self.units)
    if self.depth not in DEPTHS:
      raise ValueError(f'Unknown ResNet-V2 depth {self.depth}; expected one of {sorted(DEPTHS)}.')
    return DEPTHS[self.depth]

  @nn.compact
  def __call__(self, x, *, return_intermediates: bool = False, train: bool = False):
    out = {}
    root_features = int(64 * self.width)
    x = StdConv(
      root_features,
      7,
      2,
      pad=3,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      ops=self.ops,
      name='root_block',
    )(x)
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # zeros, as the official code
    x = ops_lib.implementation(self.ops).max_pool_3x3_stride2(x)
    out['stem'] = x

    for stage, (units, stride) in enumerate(zip(self.stage_units, STAGE_STRIDES), start=1):
      x = ResNetStage(
        units,
        root_features * 2 ** (stage - 1),
        stride,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        ops=self.ops,
        name=f'block{stage}',
      )(x)
      out[f'stage{stage}'] = x

    x = nn.relu(GroupNorm(param_dtype=self.param_dtype, ops=self.ops, name='pre_head_norm')(x))
    x = jnp.mean(x.astype(jnp.promote_types(x.dtype, jnp.float32)), axis=(1, 2))
    out['pre_logits'] = x
    if self.num_classes is not None:
      if self.dropout:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
      x = nn.Dense(
        self.num_classes,
        kernel_init=nn.initializers.zeros,
        param_dtype=self.param_dtype,
        name='head',
      )(x)
      out['logits'] = x
    return (x, out) if return_intermediates else x


# The published BiT models: upstream BiT-S (ImageNet-1k) and BiT-M (ImageNet-21k), and the
# BiT-M models fine-tuned on ILSVRC-2012.
BIT_URL = 'https://storage.googleapis.com/bit_models/{name}.npz'
PUBLISHED_ARCHITECTURES = ('R50x1', 'R50x3', 'R101x1', 'R101x3', 'R152x2', 'R152x4')
UPSTREAM_CLASSES = MappingProxyType({'BiT-S': 1000, 'BiT-M': 21843})


def _published_models() -> dict[str, dict]:
  models = {}
  for arch in PUBLISHED_ARCHITECTURES:
    depth, width = (int(v) for v in arch[1:].split('x'))
    for upstream, classes in UPSTREAM_CLASSES.items():
      models[f'{upstream}-{arch}'] = dict(depth=depth, width=width, num_classes=classes)
    models[f'BiT-M-{arch}-ILSVRC2012'] = dict(depth=depth, width=width, num_classes=1000)
  for name, spec in models.items():
    spec.update(url=BIT_URL.format(name=name), filename=f'{name}.npz')
  return models


KNOWN_MODELS: dict[str, dict] = _published_models()


@dataclasses.dataclass(frozen=True)
class Architecture:
  """Which ResNet-V2: units per stage and width. The one place a model is built from."""

  units: tuple[int, int, int, int]
  width: float

  def __post_init__(self):
    object.__setattr__(self, 'units', tuple(int(u) for u in self.units))
    width = float(self.width)
    object.__setattr__(self, 'width', int(width) if width.is_integer() else width)
    if len(self.units) != 4 or min(self.units) < 1 or self.width <= 0 or (64 * self.width) % 32:
      raise ValueError(
        f'Expected 4 stages of >= 1 unit and 64 * width a multiple of 32 '
        f'(GroupNorm has 32 groups); got units {self.units}, width {self.width}.'
      )

  @classmethod
  def from_name(cls, name: str) -> 'Architecture':
    """'R50x1', 'R14x0.5', 'BiT-M-R152x4' or 'BiT-M-R50x1-ILSVRC2012'."""
    arch = name.removeprefix('BiT-S-').removeprefix('BiT-M-').split('-')[0]
    try:
      depth, width = arch.removeprefix('R').split('x')
      return cls(DEPTHS[int(depth)], float(width))
    except (KeyError, ValueError):
      raise ValueError(
        f'Unknown model {name!r}. Use a published name ({", ".join(sorted(KNOWN_MODELS))}) '
        f'or an architecture R<depth>x<width> with depth in {sorted(DEPTHS)} and 64 * width '
        f'a multiple of 32, e.g. R50x1 or R14x0.5.'
      ) from None

  @property
  def name(self) -> str:
    depth = {units: depth for depth, units in DEPTHS.items()}.get(self.units)
    return f'R{depth}x{self.width}' if depth else f'R{list(self.units)}x{self.width}'

  def model(
    self,
    num_classes: int | None,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    ops: str = 'auto',
    dropout: float = 0.0,
  ) -> ResNetV2:
    return ResNetV2(
      units=self.units,
      width=self.width,
      num_classes=num_classes,
      dtype=dtype,
      param_dtype=param_dtype,
      ops=ops,
      dropout=dropout,
    )


@functools.lru_cache(maxsize=32)
def _traced_param_shapes(model: ResNetV2) -> dict:
  return jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))['params']


def param_shapes(model: ResNetV2) -> dict:
  """The model's parameter tree as `jax.ShapeDtypeStruct`s (the input size does not change
  them), a fresh tree for each caller. Tracing a model's init takes about a second; a run asks
  for it from several places, so the trace is cached per model."""
  return jax.tree.map(lambda s: s, _traced_param_shapes(model))


def create_model(name: str, num_classes: int | None = None, dtype: Dtype = jnp.float32):
  """A `ResNetV2` for a published name or an 'R<depth>x<width>' architecture."""
  return Architecture.from_name(name).model(num_classes, dtype)
