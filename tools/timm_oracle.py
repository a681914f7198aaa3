"""Import timm, our independent oracle for BiT logits (optional: `pip install -e .[torch]`).

After README's install (torch and torchvision both from PyTorch's CPU index) `import timm` just
works. Where torchvision does not match the torch build (PyPI's torchvision beside a CPU torch
from elsewhere, as on our CI machine), torchvision cannot load its C++ ops, and timm imports
torchvision, which registers fake kernels for `torchvision::nms`/`qnms` and fails unless their
schemas exist. Defining the two schemas first lets timm import; nothing here calls them.
"""

import importlib
import importlib.util
import pathlib

_schemas = None  # keep the Library object alive: dropping it unregisters the schemas


def import_timm():
  """`timm`, or ImportError with the install command when torch/timm are not installed."""
  global _schemas
  try:
    import torch
  except ImportError as e:
    raise ImportError(
      'timm parity needs torch and timm: pip install torch==2.13.0 torchvision==0.28.0 '
      '--index-url https://download.pytorch.org/whl/cpu && pip install -e ".[torch]"'
    ) from e
  if _schemas is None and not _torchvision_ops_load():
    _schemas = torch.library.Library('torchvision', 'DEF')
    for op in ('nms', 'qnms'):
      _schemas.define(f'{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
  return importlib.import_module('timm')


def _torchvision_ops_load() -> bool:
  """Whether torchvision's C++ ops load with this torch (then timm needs no help; defining
  the schemas would clash with torchvision's own). Loads the library as torchvision does,
  without importing torchvision (whose import is what fails)."""
  import torch

  spec = importlib.util.find_spec('torchvision')
  if spec is None or spec.origin is None:
    return False
  for library in pathlib.Path(spec.origin).parent.glob('_C*'):
    try:
      torch.ops.load_library(str(library))
      return True
    except (OSError, RuntimeError):
      return False
  return False
