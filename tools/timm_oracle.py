"""Import timm, our independent oracle for BiT logits (optional: `pip install -e .[torch]`).

The CPU build of torchvision that matches torch 2.13 cannot load its C++ ops, and timm imports
torchvision, which registers fake kernels for `torchvision::nms`/`qnms` and fails unless their
schemas exist. Defining the two schemas first lets timm import; nothing here calls them.
"""

import importlib

_schemas = None  # keep the Library object alive: dropping it unregisters the schemas


def import_timm():
  """`timm`, or ImportError with the install command when torch/timm are not installed."""
  global _schemas
  try:
    import torch
  except ImportError as e:
    raise ImportError(
      'timm parity needs torch and timm: pip install torch==2.13.0 && pip install -e ".[torch]"'
    ) from e
  if _schemas is None:
    _schemas = torch.library.Library('torchvision', 'DEF')
    for op in ('nms', 'qnms'):
      _schemas.define(f'{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
  return importlib.import_module('timm')
