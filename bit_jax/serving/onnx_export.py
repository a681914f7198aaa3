"""A trained model as ONNX, with the SavedModel's serving contract.

    python -m bit_jax.export --model=/tmp/run --format=onnx --out=/tmp/run/model.onnx

    session = onnxruntime.InferenceSession('/tmp/run/model.onnx')
    logits, probabilities = session.run(None, {'images': uint8_images})

Input `images`: uint8 [batch, height, width, 3], any batch and size. Inside the graph: bilinear
resize to the crop the model was trained at (half-pixel centres, no antialiasing: what
`tf.image.resize` does in our evaluation), values to [-1, 1], the network. Outputs `logits`
and `probabilities`, float32 [batch, classes]. The class names are in the model's metadata
(`class_names`, a JSON list: `session.get_modelmeta().custom_metadata_map`). Nothing of the
SavedModel's contract is left out (a batch of 0 gives empty outputs).

Which converter, and why this one: the graph is written here, from the weights, with
`onnx.helper` (the `onnx` package alone), in opset 17. The alternatives did not serve:
jax2onnx (0.17) requires orbax-checkpoint < 0.11.37 while this project pins 0.12.8; tf2onnx
cannot read our jax2tf SavedModel, whose body is one `XlaCallModule` op; torch.onnx would
export timm's copy of the network rather than ours and needs torch to export. A BiT ResNet-V2
needs few ONNX ops: Conv (Weight Standardization folded into the stored kernels, computed in
float64), GroupNorm as InstanceNormalization over [batch, groups, C/groups, H, W] plus the per-channel
affine, Relu, Pad + MaxPool (the root's zero padding), Add, ReduceMean, MatMul. The oracle is
bit_jax's own logits (tests/test_export.py, under onnxruntime).
"""

import json

import numpy as np
from etils import epath

from bit_jax import models
from bit_jax.models import ops, pretrained
from bit_jax.runtime import files
from bit_jax.runtime.errors import ConfigError

OPSET = 17
LARGEST_PROTO = 2**31 - 2**26  # protobuf's 2 GiB, less room for the graph itself
CONTRACT = 'images uint8 [batch, height, width, 3] resized to {crop} px inside'


def _onnx():
  try:
    import onnx
  except ImportError:
    raise ConfigError('--format=onnx needs the onnx package: pip install -e ".[onnx]"') from None
  return onnx


class _Graph:
  """Nodes and initializers in the making; each helper returns its output's name."""

  def __init__(self, onnx, arrays):
    self.onnx, self.helper, self.arrays = onnx, onnx.helper, arrays
    self.nodes, self.initializers, self._count = [], [], 0

  def name(self, prefix: str) -> str:
    self._count += 1
    return f'{prefix}_{self._count}'

  def const(self, value, prefix='const') -> str:
    name = self.name(prefix)
    self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(value), name))
    return name

  def op(self, op_type, *inputs, **attributes) -> str:
    out = self.name(op_type.lower())
    self.nodes.append(self.helper.make_node(op_type, list(inputs), [out], **attributes))
    return out

  def slice(self, x, start: int, end: int) -> str:
    return self.op(
      'Slice', x, self.const(np.array([start], np.int64)), self.const(np.array([end], np.int64))
    )

  def conv(self, x, key, stride=1, pad=0) -> str:
    kernel = np.asarray(self.arrays[key], np.float64)  # HWIO
    matrix = kernel.reshape(-1, kernel.shape[-1])
    centered = matrix - matrix.mean(axis=0)
    standardized = centered / np.sqrt(np.mean(centered**2, axis=0) + ops.WS_EPS)
    weight = standardized.reshape(kernel.shape).transpose(3, 2, 0, 1).astype(np.float32)  # OIHW
    return self.op(
      'Conv',
      x,
      self.const(weight, 'kernel'),
      strides=[stride, stride],
      pads=[pad] * 4,
      kernel_shape=list(weight.shape[2:]),
    )

  def group_norm_relu(self, x, prefix) -> str:
    """GroupNorm (32 groups, eps 1e-5) as InstanceNormalization of [N, G, C/G, H, W],
    then the per-channel affine and ReLU."""
    scale = np.asarray(self.arrays[f'{prefix}/gamma'], np.float32).reshape(-1, 1, 1)
    bias = np.asarray(self.arrays[f'{prefix}/beta'], np.float32).reshape(-1, 1, 1)
    groups, shape = ops.GN_GROUPS, self.op('Shape', x)
    # [N, G, C/G, H, W], spelled without -1, which a batch of 0 cannot resolve
    grouped_shape = self.op(
      'Concat',
      self.slice(shape, 0, 1),
      self.const(np.array([groups, scale.size // groups], np.int64)),
      self.slice(shape, 2, 4),
      axis=0,
    )
    grouped = self.op('Reshape', x, grouped_shape)
    normed = self.op(
      'InstanceNormalization',
      grouped,
      self.const(np.ones(groups, np.float32)),
      self.const(np.zeros(groups, np.float32)),
      epsilon=ops.GN_EPS,
    )
    back = self.op('Reshape', normed, shape)
    return self.op(
      'Relu', self.op('Add', self.op('Mul', back, self.const(scale)), self.const(bias))
    )


def _preprocess(g: _Graph, crop: int) -> str:
  """uint8 NHWC of any size -> float32 NCHW [batch, 3, crop, crop] in [-1, 1]."""
  x = g.op('Transpose', g.op('Cast', 'images', to=g.onnx.TensorProto.FLOAT), perm=[0, 3, 1, 2])
  batch_channels = g.slice(g.op('Shape', x), 0, 2)
  sizes = g.op('Concat', batch_channels, g.const(np.array([crop, crop], np.int64)), axis=0)
  resized = g.op(
    'Resize', x, '', '', sizes, mode='linear', coordinate_transformation_mode='half_pixel'
  )
  scaled = g.op('Div', resized, g.const(np.array(127.5, np.float32)))
  return g.op('Sub', scaled, g.const(np.array(1.0, np.float32)))


def _unit(g: _Graph, x, prefix: str, stride: int, project: bool) -> str:
  preact = g.group_norm_relu(x, f'{prefix}/a/group_norm')
  shortcut = g.conv(preact, f'{prefix}/a/proj/standardized_conv2d/kernel', stride) if project else x
  y = g.conv(preact, f'{prefix}/a/standardized_conv2d/kernel')
  y = g.group_norm_relu(y, f'{prefix}/b/group_norm')
  y = g.conv(y, f'{prefix}/b/standardized_conv2d/kernel', stride, pad=1)
  y = g.group_norm_relu(y, f'{prefix}/c/group_norm')
  y = g.conv(y, f'{prefix}/c/standardized_conv2d/kernel')
  return g.op('Add', y, shortcut)


def _network(g: _Graph, x: str, architecture: models.Architecture) -> str:
  """The BiT ResNet-V2 of models.py, in NCHW: logits [batch, classes]."""
  x = g.conv(x, pretrained.ROOT_KERNEL, stride=2, pad=3)
  x = g.op('Pad', x, g.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)), mode='constant')
  x = g.op('MaxPool', x, kernel_shape=[3, 3], strides=[2, 2])
  for block, (units, stride) in enumerate(zip(architecture.units, models.STAGE_STRIDES), 1):
    for unit in range(1, units + 1):
      x = _unit(g, x, f'resnet/block{block}/unit{unit:02d}', stride if unit == 1 else 1, unit == 1)
  x = g.group_norm_relu(x, 'resnet/group_norm')
  features = g.op('ReduceMean', x, axes=[2, 3], keepdims=0)
  kernel = np.asarray(g.arrays[pretrained.HEAD_KERNEL], np.float32)
  weights = g.op('MatMul', features, g.const(kernel.reshape(kernel.shape[-2:]), 'head'))
  return g.op('Add', weights, g.const(np.asarray(g.arrays[pretrained.HEAD_BIAS], np.float32)))


def build(arrays, crop: int, class_names=()):
  """The ONNX ModelProto of official-layout `arrays` (with a head)."""
  onnx = _onnx()
  helper = onnx.helper
  arrays = pretrained.normalize_keys(arrays)
  architecture, num_classes = pretrained.architecture_of(arrays)
  if num_classes is None:
    raise ConfigError('The model has no classification head to export.')
  g = _Graph(onnx, arrays)
  logits = _network(g, _preprocess(g, crop), architecture)
  g.nodes.append(helper.make_node('Identity', [logits], ['logits']))
  g.nodes.append(helper.make_node('Softmax', [logits], ['probabilities'], axis=1))
  images = helper.make_tensor_value_info(
    'images', onnx.TensorProto.UINT8, ['batch', 'height', 'width', 3]
  )
  outputs = [
    helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ['batch', num_classes])
    for name in ('logits', 'probabilities')
  ]
  graph = helper.make_graph(g.nodes, 'bit_resnet_v2', [images], outputs, g.initializers)
  model = helper.make_model(
    graph, opset_imports=[helper.make_opsetid('', OPSET)], producer_name='bit_jax'
  )
  meta = {'class_names': json.dumps(list(class_names)), 'crop': str(crop)}
  meta['architecture'] = architecture.name
  helper.set_model_props(model, meta)
  return model


def export(params, crop: int, out, class_names=()) -> epath.Path:
  """Write the ONNX model of Flax `params` to `out` and check it. A protobuf holds at most
  2 GiB, so the weights of larger models (R152x4: 3.7 GB) go to `<out>.data` beside it, as
  ONNX's external data, which needs a local `out`."""
  onnx = _onnx()
  model = build(pretrained.params_to_npz(params), crop, class_names)
  out = epath.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  if model.ByteSize() < LARGEST_PROTO:
    onnx.checker.check_model(model)
    files.write_atomic(out, model.SerializeToString())
    return out
  if not files.is_local(out):
    raise ConfigError(f'{out}: a model over 2 GiB is written with external data to a local path.')
  onnx.save_model(model, str(out), save_as_external_data=True, location=f'{out.name}.data')
  onnx.checker.check_model(str(out))
  return out
