"""The model: BiT's ResNet-V2 (resnet_v2.py) and its array math (ops.py), the checkpoint
formats it loads (official .npz, timm, the Hugging Face hub: pretrained.py, hub.py), their
download, and its "first n layers" (layers.py).

`bit_jax.models` is the public model API (`bit_jax.models.KNOWN_MODELS`, `create_model`, ...):
the names below are resnet_v2.py's, imported here so that it stays one import."""

from bit_jax.models.resnet_v2 import (
  DEPTHS,
  KNOWN_MODELS,
  PUBLISHED_ARCHITECTURES,
  STAGE_STRIDES,
  Architecture,
  ResNetV2,
  StdConv,
  create_model,
  param_shapes,
)

__all__ = [
  'DEPTHS',
  'KNOWN_MODELS',
  'PUBLISHED_ARCHITECTURES',
  'STAGE_STRIDES',
  'Architecture',
  'ResNetV2',
  'StdConv',
  'create_model',
  'param_shapes',
]
