"""Official BiT checkpoints <-> Flax parameters.

The official `.npz` files name arrays like `resnet/block1/unit01/a/group_norm/gamma`. Our Flax
tree names them `block1/unit01/gn1/scale`. One table of regex rules translates between the two;
timm `resnetv2_*_bit` state_dicts are first rewritten into the official layout, so every
format goes through the same checked loader.

    model, params = load_pretrained('BiT-M-R50x1', num_classes=10)
    logits = model.apply({'params': params}, images)   # NHWC in [-1, 1]
"""

import os
import pickle
import re
import zipfile
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from bit_jax import models

# (flax path, official npz key) rules; the first rule whose flax pattern matches wins.
_UNIT = r'block(\d)/unit(\d\d)'
_RULES = [
    (r'root_block/kernel', r'resnet/root_block/standardized_conv2d/kernel'),
    (_UNIT + r'/conv_proj/kernel', r'resnet/block\1/unit\2/a/proj/standardized_conv2d/kernel'),
    (_UNIT + r'/conv1/kernel', r'resnet/block\1/unit\2/a/standardized_conv2d/kernel'),
    (_UNIT + r'/conv2/kernel', r'resnet/block\1/unit\2/b/standardized_conv2d/kernel'),
    (_UNIT + r'/conv3/kernel', r'resnet/block\1/unit\2/c/standardized_conv2d/kernel'),
    (_UNIT + r'/gn1/scale', r'resnet/block\1/unit\2/a/group_norm/gamma'),
    (_UNIT + r'/gn1/bias', r'resnet/block\1/unit\2/a/group_norm/beta'),
    (_UNIT + r'/gn2/scale', r'resnet/block\1/unit\2/b/group_norm/gamma'),
    (_UNIT + r'/gn2/bias', r'resnet/block\1/unit\2/b/group_norm/beta'),
    (_UNIT + r'/gn3/scale', r'resnet/block\1/unit\2/c/group_norm/gamma'),
    (_UNIT + r'/gn3/bias', r'resnet/block\1/unit\2/c/group_norm/beta'),
    (r'pre_head_norm/scale', r'resnet/group_norm/gamma'),
    (r'pre_head_norm/bias', r'resnet/group_norm/beta'),
    (r'head/kernel', r'resnet/head/conv2d/kernel'),
    (r'head/bias', r'resnet/head/conv2d/bias'),
]
HEAD_KERNEL = 'resnet/head/conv2d/kernel'
HEAD_BIAS = 'resnet/head/conv2d/bias'


class CheckpointMismatchError(ValueError):
  """A checkpoint does not fit the model; the message lists every offending name."""


def npz_key(flax_path: str) -> str:
  """'block1/unit01/gn1/scale' -> 'resnet/block1/unit01/a/group_norm/gamma'."""
  for pattern, template in _RULES:
    if re.fullmatch(pattern, flax_path):
      return re.sub(pattern, template, flax_path)
  raise KeyError(f'No official checkpoint name for parameter {flax_path!r}.')


def normalize_keys(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Accept the `standardized_conv2d_N` spelling some official files use."""
  normalized = {}
  for key, value in arrays.items():
    canonical = re.sub(r'standardized_conv2d_\d+', 'standardized_conv2d', key)
    if canonical in normalized:
      raise CheckpointMismatchError(f'Checkpoint has two arrays for {canonical!r} '
                                    f'(one of them spelled {key!r}).')
    normalized[canonical] = np.asarray(value)
  return normalized


def read_npz(path) -> dict[str, np.ndarray]:
  with np.load(path, allow_pickle=False) as f:
    return normalize_keys({k: f[k] for k in f.files})


FORMATS = ('npz', 'pth', 'orbax')


def detect_format(path, forced: Optional[str] = None) -> str:
  """`forced` if given, else from the name: .npz, .pth/.pt, anything else an orbax directory."""
  suffix = Path(path).suffix.lower()
  return forced or {'.npz': 'npz', '.pth': 'pth', '.pt': 'pth'}.get(suffix, 'orbax')


def _unreadable(path, fmt, error, expected):
  return ValueError(f'Cannot read {path} as {fmt} ({type(error).__name__}: {error}). Expected '
                    f'{expected}; if the file is in another format, say which (--from in tools/convert_checkpoint.py).')


def require_torch():
  try:
    import torch
  except ImportError as e:
    raise ImportError('.pth checkpoints need torch: pip install torch==2.13.0') from e
  return torch


def _read(path, fmt: str) -> dict[str, np.ndarray]:
  if fmt == 'npz':
    try:
      return read_npz(path)
    except CheckpointMismatchError:
      raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
      raise _unreadable(path, fmt, e, 'arrays saved with np.savez (no pickled objects)') from e
  if fmt == 'pth':
    try:
      state = require_torch().load(path, map_location='cpu', weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
      raise _unreadable(path, fmt, e, 'a state_dict saved with torch.save') from e
    if isinstance(state, Mapping) and isinstance(state.get('state_dict'), Mapping):
      state = state['state_dict']                  # timm training checkpoints nest it here
    if not isinstance(state, Mapping):
      raise CheckpointMismatchError(f'holds a {type(state).__name__}, not a state_dict.')
    return timm_to_npz(state)
  import orbax.checkpoint as ocp
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      tree = checkpointer.restore(os.path.abspath(path))
  except (OSError, ValueError) as e:
    raise _unreadable(path, fmt, e, 'a directory written by orbax StandardCheckpointer') from e
  try:   # the stored 'bit_architecture' is for loaders; the params themselves tell it too
    return params_to_npz(tree['params'])
  except (KeyError, TypeError) as e:
    raise CheckpointMismatchError(
        f'not an orbax tree {{"params": BiT ResNet-V2 params}} ({type(e).__name__}: {e}).') from e


def read_any(path, fmt: Optional[str] = None) -> dict[str, np.ndarray]:
  """Official-layout arrays of a BiT checkpoint in any of the three formats."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} does not exist.')
  try:
    arrays = _read(path, detect_format(path, fmt))
    architecture_of(arrays)                        # a BiT ResNet-V2 at all?
  except CheckpointMismatchError as e:
    raise CheckpointMismatchError(f'{path}: {e}') from e
  return arrays


def _to_flax_layout(key: str, value: np.ndarray, target_shape) -> np.ndarray:
  """The official head is a 1x1 conv (1,1,C,K); ours is Dense (C,K). Some files store GN
  parameters as (1,1,1,C). Reshape only when nothing but unit dimensions differ."""
  if value.shape != tuple(target_shape) and value.size == np.prod(target_shape):
    squeezed = tuple(d for d in value.shape if d != 1)
    if squeezed == tuple(d for d in target_shape if d != 1):
      return value.reshape(target_shape)
  return value


def architecture_of(arrays: Mapping[str, np.ndarray]) -> dict:
  """Depth, width and head size of an official-layout checkpoint, read from its arrays."""
  units = [len({m.group(1) for k in arrays
                if (m := re.match(rf'resnet/block{b}/unit(\d+)/', k))}) for b in range(1, 5)]
  depths = {v: k for k, v in models.DEPTHS.items()}
  root = arrays.get('resnet/root_block/standardized_conv2d/kernel')
  if root is None or 0 in units:
    raise CheckpointMismatchError(
        f'Not an official BiT ResNet-V2 checkpoint: units per block {units}, root kernel '
        f'{"missing" if root is None else "present"}.')
  head = arrays.get(HEAD_KERNEL)
  width = root.shape[-1] / 64
  return dict(depth=depths.get(tuple(units), 0),
              units=None if tuple(units) in depths else tuple(units),
              width=int(width) if width.is_integer() else width,
              num_classes=None if head is None else head.shape[-1])


def npz_to_params(arrays: Mapping[str, np.ndarray], model: models.ResNetV2,
                  image_size: int = 64) -> dict:
  """Official-layout arrays -> Flax params for `model`.

  Head policy: the checkpoint's head is kept when its class count equals `model.num_classes`;
  otherwise the model gets a fresh zero head of its own size (and `num_classes=None` drops
  it). Anything else that does not fit raises `CheckpointMismatchError` listing every missing,
  unexpected and mis-shaped name with both shapes.
  """
  arrays = normalize_keys(arrays)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, image_size, image_size, 3)))['params']
  wanted = {'/'.join(p): s.shape for p, s in traverse_util.flatten_dict(shapes).items()}
  head_fits = (HEAD_KERNEL in arrays and model.num_classes is not None
               and arrays[HEAD_KERNEL].shape[-1] == model.num_classes)

  flat, missing, misshaped = {}, [], []
  for path, shape in wanted.items():
    key = npz_key(path)
    if path.startswith('head/') and not head_fits:
      flat[path] = np.zeros(shape, np.float32)       # fresh zero head, as BiT fine-tuning does
      continue
    if key not in arrays:
      missing.append(f'  {key} (for {path}, shape {tuple(shape)})')
      continue
    value = _to_flax_layout(key, arrays[key], shape)
    if value.shape != tuple(shape):
      misshaped.append(f'  {key}: checkpoint {arrays[key].shape}, model {tuple(shape)}')
      continue
    flat[path] = value.astype(np.float32)
  used = {npz_key(p) for p in wanted} | {HEAD_KERNEL, HEAD_BIAS}
  unexpected = [f'  {k} {arrays[k].shape}' for k in sorted(set(arrays) - used)]
  if missing or unexpected or misshaped:
    parts = [f'{title} ({len(names)}):\n' + '\n'.join(names) for title, names in
             (('missing', missing), ('unexpected', unexpected), ('mis-shaped', misshaped))
             if names]
    raise CheckpointMismatchError(
        f'Checkpoint does not fit ResNetV2(units={tuple(model.stage_units)}, '
        f'width={model.width}, num_classes={model.num_classes}).\n' + '\n'.join(parts) +
        '\nPick the model that matches the file (see bit_jax.pretrained.architecture_of).')
  return traverse_util.unflatten_dict({tuple(p.split('/')): v for p, v in flat.items()})


def params_to_npz(params) -> dict[str, np.ndarray]:
  """Flax params -> official-layout arrays (the exact inverse of `npz_to_params`)."""
  arrays = {}
  for path, value in traverse_util.flatten_dict(params, sep='/').items():
    value = np.asarray(value)
    if path == 'head/kernel':
      value = value.reshape(1, 1, *value.shape)
    arrays[npz_key(path)] = value
  return arrays


def save_npz(path, params) -> None:
  np.savez(path, **params_to_npz(params))


# timm `resnetv2_*_bit` names <-> official names. Convolutions are OIHW in torch, HWIO here.
_TIMM_TOP = {
    'stem.conv.weight': 'resnet/root_block/standardized_conv2d/kernel',
    'norm.weight': 'resnet/group_norm/gamma',
    'norm.bias': 'resnet/group_norm/beta',
    'head.fc.weight': HEAD_KERNEL,
    'head.fc.bias': HEAD_BIAS,
}
_TIMM_UNIT = {   # inside stages.<i>.blocks.<j>  <->  resnet/block<i+1>/unit<j+1>
    'downsample.conv.weight': 'a/proj/standardized_conv2d/kernel',
    'conv1.weight': 'a/standardized_conv2d/kernel',
    'conv2.weight': 'b/standardized_conv2d/kernel',
    'conv3.weight': 'c/standardized_conv2d/kernel',
    'norm1.weight': 'a/group_norm/gamma', 'norm1.bias': 'a/group_norm/beta',
    'norm2.weight': 'b/group_norm/gamma', 'norm2.bias': 'b/group_norm/beta',
    'norm3.weight': 'c/group_norm/gamma', 'norm3.bias': 'c/group_norm/beta',
}


def _rename(name, top, unit, unit_pattern, unit_format):
  if name in top:
    return top[name]
  m = re.fullmatch(unit_pattern, name)
  if m and m.group(3) in unit:
    return unit_format(int(m.group(1)), int(m.group(2)), unit[m.group(3)])
  raise CheckpointMismatchError(f'Unexpected parameter {name!r}: not part of a BiT ResNet-V2.')


def timm_to_npz(state_dict: Mapping[str, object]) -> dict[str, np.ndarray]:
  """A timm `resnetv2_*_bit` state_dict (torch tensors or arrays) -> official-layout arrays."""
  arrays = {}
  for name, tensor in state_dict.items():
    value = np.asarray(tensor.detach().cpu().numpy() if hasattr(tensor, 'detach') else tensor)
    key = _rename(name, _TIMM_TOP, _TIMM_UNIT, r'stages\.(\d+)\.blocks\.(\d+)\.(.+)',
                  lambda i, j, rest: f'resnet/block{i + 1}/unit{j + 1:02d}/{rest}')
    arrays[key] = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value    # OIHW -> HWIO
  return arrays


def npz_to_timm(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Official-layout arrays -> a timm state_dict's names and OIHW layout (numpy values)."""
  top = {v: k for k, v in _TIMM_TOP.items()}
  unit = {v: k for k, v in _TIMM_UNIT.items()}
  out = {}
  for key, value in normalize_keys(arrays).items():
    name = _rename(key, top, unit, r'resnet/block(\d)/unit(\d+)/(.+)',
                   lambda i, j, rest: f'stages.{i - 1}.blocks.{j - 1}.{rest}')
    out[name] = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value      # HWIO -> OIHW
  return out


def cache_dir() -> Path:
  return Path(os.environ.get('BIT_JAX_CACHE', Path.home() / '.cache' / 'bit_jax'))


def download(name: str, directory: Optional[Path] = None) -> Path:
  """Path of a published checkpoint, downloaded into the cache on first use."""
  if name not in models.KNOWN_MODELS:
    raise ValueError(f'Unknown BiT model {name!r}; published ones are: '
                     f'{", ".join(sorted(models.KNOWN_MODELS))}.')
  spec = models.KNOWN_MODELS[name]
  target = Path(directory or cache_dir()) / spec['filename']
  if target.exists():
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  print(f'Downloading {spec["url"]} -> {target}', flush=True)
  with tempfile.NamedTemporaryFile(dir=target.parent, suffix='.part', delete=False) as tmp:
    try:
      with urllib.request.urlopen(spec['url'], timeout=60) as response:
        shutil.copyfileobj(response, tmp, length=1 << 20)
    except (urllib.error.URLError, OSError) as e:
      os.unlink(tmp.name)
      raise RuntimeError(
          f'Could not download {name} from {spec["url"]} ({e}). Without network access, fetch '
          f'the file elsewhere and either pass its path to load_pretrained or put it at '
          f'{target} (or set BIT_JAX_CACHE to the folder holding it).') from e
  os.replace(tmp.name, target)                       # never leave a half-written checkpoint
  return target


def load_pretrained(name_or_path, num_classes=None, dtype=jnp.float32,
                    cache: Optional[Path] = None):
  """`(model, params)` from an official `.npz` path or a published BiT name.

  Args:
    name_or_path: a local checkpoint — official `.npz`, timm `.pth` state_dict or an orbax
      directory written by tools/convert_checkpoint.py — or a name from
      `bit_jax.models.KNOWN_MODELS` (downloaded to the cache dir on first use).
    num_classes: size of the head. Left out or None: the checkpoint's own head is kept (a
      checkpoint without a head gives features). An int: the checkpoint's head when it has
      this many classes, else a fresh zero-initialised head (BiT fine-tuning). Pass 0 for a
      features-only model (pre-logits).
    dtype: activation dtype (parameters stay float32).
  """
  path = Path(name_or_path)
  if not path.exists():
    if str(name_or_path) not in models.KNOWN_MODELS:
      raise FileNotFoundError(
          f'{name_or_path!r} is neither a file nor a published BiT model '
          f'({", ".join(sorted(models.KNOWN_MODELS))}).')
    path = download(str(name_or_path), cache)
  arrays = read_any(path)
  arch = architecture_of(arrays)
  if num_classes is None:
    num_classes = arch['num_classes']
  model = models.ResNetV2(depth=arch['depth'], width=arch['width'], units=arch['units'],
                          num_classes=num_classes or None, dtype=dtype)
  return model, npz_to_params(arrays, model)
