"""Big Transfer (BiT) ResNet-V2 in JAX/Flax.

model, params = bit_jax.load_pretrained('BiT-M-R50x1', num_classes=10)
logits = model.apply({'params': params}, images)        # NHWC in [-1, 1]
"""

import importlib
from types import MappingProxyType

# Imported on first use, so that `python -m bit_jax.train` handles a SIGTERM or Ctrl-C that
# arrives while JAX is still being imported (seconds) instead of dying silently.
_EXPORTS = MappingProxyType(
  {
    'KNOWN_MODELS': 'models',
    'ResNetV2': 'models',
    'create_model': 'models',
    'CheckpointMismatchError': 'models.pretrained',
    'load_pretrained': 'models.pretrained',
  }
)
__all__ = tuple(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(f'bit_jax.{_EXPORTS[name]}'), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
