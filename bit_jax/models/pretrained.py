"""Official BiT checkpoints <-> Flax parameters.

The official `.npz` files name arrays like `resnet/block1/unit01/a/group_norm/gamma`. Our Flax
tree names them `block1/unit01/gn1/scale`. One table of regex rules translates between the two;
timm `resnetv2_*_bit` state_dicts (`.pth`, `.safetensors`, the Hugging Face hub) are first
rewritten into the official layout, so every format goes through the same checked loader.

    model, params = load_pretrained('BiT-M-R50x1', num_classes=10)
    model, params = load_pretrained('hf-hub:timm/resnetv2_50x1_bit.goog_in21k')
    logits = model.apply({'params': params}, images)   # NHWC in [-1, 1]
"""

import io
import json
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import traverse_util

from bit_jax import models
from bit_jax.models import hub
from bit_jax.models.download import fetch
from bit_jax.runtime import files

# (flax path, official npz key) rules; the first rule whose flax pattern matches wins.
_UNIT = r'block(\d)/unit(\d\d)'
_RULES = (
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
)
HEAD_KERNEL = 'resnet/head/conv2d/kernel'
HEAD_BIAS = 'resnet/head/conv2d/bias'
ROOT_KERNEL = 'resnet/root_block/standardized_conv2d/kernel'
# Arrays a run stores beside the weights in its final.npz (no official loader reads them).
METADATA = ('bit_jax/class_names', 'bit_jax/image_size')


class CheckpointMismatchError(ValueError):
  """A checkpoint does not fit the model; the message lists every offending name."""


def npz_key(flax_path: str) -> str:
  """'block1/unit01/gn1/scale' -> 'resnet/block1/unit01/a/group_norm/gamma'."""
  for pattern, template in _RULES:
    if re.fullmatch(pattern, flax_path):
      return re.sub(pattern, template, flax_path)
  raise KeyError(f'No official checkpoint name for parameter {flax_path!r}.')


def _canonical(mapping: Mapping[str, object]) -> dict[str, object]:
  """Accept the `standardized_conv2d_N` spelling some official files use."""
  canonical = {}
  for key, value in mapping.items():
    name = re.sub(r'standardized_conv2d_\d+', 'standardized_conv2d', key)
    if name in canonical:
      raise CheckpointMismatchError(
        f'Checkpoint has two arrays for {name!r} (one of them spelled {key!r}).'
      )
    canonical[name] = value
  return canonical


def normalize_keys(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  return {k: np.asarray(v) for k, v in _canonical(arrays).items()}


def read_npz(path) -> dict[str, np.ndarray]:
  """The weights of an .npz in the official layout (a run's metadata left out)."""
  with epath.Path(path).open('rb') as file, np.load(file, allow_pickle=False) as f:
    return normalize_keys({k: f[k] for k in f.files if k not in METADATA})


def read_metadata(path) -> dict:
  """What a run stored beside the weights of its final.npz, or what a timm config.json says
  (a timm folder's, or the one beside a hub download): {'class_names': [...], 'image_size':
  int}, either absent where not known."""
  fmt, path = detect_format(path), epath.Path(path)
  if fmt == 'npz':
    with path.open('rb') as file, np.load(file, allow_pickle=False) as f:
      return {k.removeprefix('bit_jax/'): f[k].tolist() for k in METADATA if k in f.files}
  config = {'timm': path / TIMM_FILES[1], 'safetensors': path.parent / TIMM_FILES[1]}.get(fmt)
  if config is None or not config.exists():
    return {}
  cfg = json.loads(config.read_text())
  size = cfg.get('pretrained_cfg', {}).get('input_size')
  found = {'class_names': cfg.get('label_names'), 'image_size': size[-1] if size else None}
  return {k: v for k, v in found.items() if v is not None}


def npz_shapes(path) -> dict[str, tuple[int, ...]]:
  """The shape of every array in an .npz, read from the headers alone (a 4 GB checkpoint is
  checked in milliseconds)."""
  shapes = {}
  try:
    with epath.Path(path).open('rb') as file, zipfile.ZipFile(file) as archive:
      for member in archive.namelist():
        with archive.open(member) as f:
          version = np.lib.format.read_magic(f)
          read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
          )
          shape, _, dtype = read_header(f)
          if dtype.hasobject:  # np.load refuses them (they are pickles)
            raise ValueError(f'{member} holds Python objects ({dtype}), not numbers')
          shapes[member.removesuffix('.npy')] = shape
  except (OSError, ValueError, zipfile.BadZipFile) as e:
    raise _unreadable(path, 'npz', e, 'arrays saved with np.savez') from e
  return _canonical(shapes)


FORMATS = ('npz', 'pth', 'safetensors', 'orbax', 'timm')
TIMM_FILES = ('model.safetensors', 'config.json')  # a timm / Hugging Face hub model folder


def detect_format(path, forced: str | None = None) -> str:
  """`forced` if given, else from the name: .npz, .pth/.pt, .safetensors, a folder holding
  model.safetensors and config.json (timm's, as `bit_jax.export --format=timm` writes it),
  anything else an orbax directory."""
  suffix = os.path.splitext(os.fspath(path))[1].lower()
  fmt = forced or {'.npz': 'npz', '.pth': 'pth', '.pt': 'pth', '.safetensors': 'safetensors'}.get(
    suffix, 'orbax'
  )
  if not forced and fmt == 'orbax' and all((epath.Path(path) / f).exists() for f in TIMM_FILES):
    return 'timm'
  return fmt


def _unreadable(path, fmt, error, expected):
  return ValueError(
    f'Cannot read {path} as {fmt} ({type(error).__name__}: {error}). Expected '
    f'{expected}; if the file is in another format, say which (--from in tools/convert_checkpoint.py).'
  )


def require_torch():
  try:
    import torch
  except ImportError as e:
    raise ImportError(
      '.pth checkpoints need torch, which is not installed: pip install torch==2.13.0 '
      '&& pip install -e ".[torch]" (the torch extra), or convert the file to .npz where '
      'torch is (tools/convert_checkpoint.py)'
    ) from e
  return torch


def _read(path, fmt: str) -> dict[str, np.ndarray]:
  if fmt == 'timm':
    return _read(epath.Path(path) / TIMM_FILES[0], 'safetensors')
  if fmt == 'npz':
    try:
      return read_npz(path)
    except CheckpointMismatchError:
      raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
      raise _unreadable(path, fmt, e, 'arrays saved with np.savez (no pickled objects)') from e
  if fmt == 'pth':
    try:
      state = require_torch().load(
        io.BytesIO(epath.Path(path).read_bytes()), map_location='cpu', weights_only=True
      )
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
      raise _unreadable(path, fmt, e, 'a state_dict saved with torch.save') from e
    if isinstance(state, Mapping) and isinstance(state.get('state_dict'), Mapping):
      state = state['state_dict']  # timm training checkpoints nest it here
    if not isinstance(state, Mapping):
      raise CheckpointMismatchError(f'holds a {type(state).__name__}, not a state_dict.')
    return timm_to_npz(state)
  if fmt == 'safetensors':
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
      return timm_to_npz(load(epath.Path(path).read_bytes()))
    except (OSError, SafetensorError) as e:
      raise _unreadable(path, fmt, e, 'a timm state_dict saved with safetensors') from e
  import orbax.checkpoint as ocp

  try:
    with ocp.StandardCheckpointer() as checkpointer:
      tree = checkpointer.restore(os.path.abspath(path) if files.is_local(path) else path)
  except (OSError, ValueError) as e:
    raise _unreadable(path, fmt, e, 'a directory written by orbax StandardCheckpointer') from e
  try:  # the stored 'bit_architecture' is for loaders; the params themselves tell it too
    return params_to_npz(tree['params'])
  except (KeyError, TypeError) as e:
    raise CheckpointMismatchError(
      f'not an orbax tree {{"params": BiT ResNet-V2 params}} ({type(e).__name__}: {e}).'
    ) from e


def read_any(path, fmt: str | None = None) -> dict[str, np.ndarray]:
  """Official-layout arrays of a BiT checkpoint in any of the `FORMATS`."""
  if not epath.Path(path).exists():
    raise FileNotFoundError(f'{path} does not exist.')
  try:
    arrays = _read(path, detect_format(path, fmt))
    architecture_of(arrays)  # a BiT ResNet-V2 at all?
  except CheckpointMismatchError as e:
    raise CheckpointMismatchError(f'{path}: {e}') from e
  return arrays


def architecture_of(shapes: Mapping[str, object]) -> tuple[models.Architecture, int | None]:
  """The architecture and head size (None: no head) of an official-layout checkpoint, from
  its arrays or their shapes."""
  shape = lambda key: tuple(getattr(shapes[key], 'shape', shapes[key]))
  units = [
    len({m.group(1) for k in shapes if (m := re.match(rf'resnet/block{b}/unit(\d+)/', k))})
    for b in range(1, 5)
  ]
  root = shape(ROOT_KERNEL) if ROOT_KERNEL in shapes else None
  if root is None or 0 in units:
    raise CheckpointMismatchError(
      f'Not an official BiT ResNet-V2 checkpoint: units per block {units}, root kernel '
      f'{"missing" if root is None else "present"}.'
    )
  if len(root) != 4 or root[:3] != (7, 7, 3):
    raise CheckpointMismatchError(
      f'{ROOT_KERNEL} has shape {root}; a BiT root convolution is (7, 7, 3, 64 * width).'
    )
  try:
    architecture = models.Architecture(units, root[-1] / 64)
  except ValueError as e:
    raise CheckpointMismatchError(f'{ROOT_KERNEL} has shape {root}: {e}') from None
  return architecture, shape(HEAD_KERNEL)[-1] if HEAD_KERNEL in shapes else None


def describe(name_or_path) -> tuple[models.Architecture, int | None]:
  """Architecture and head size of a published name or a checkpoint file, reading as little
  as possible (npz headers only), for checking a run before it starts."""
  if str(name_or_path) in models.KNOWN_MODELS:
    spec = models.KNOWN_MODELS[str(name_or_path)]
    return models.Architecture.from_name(str(name_or_path)), spec['num_classes']
  if hub.is_hub(name_or_path):
    return architecture_of(read_any(hub.download(name_or_path)))
  if not epath.Path(name_or_path).exists():
    raise FileNotFoundError(
      f'{name_or_path!r} is neither a file nor a published BiT model '
      f'({", ".join(sorted(models.KNOWN_MODELS))}).'
    )
  if detect_format(name_or_path) == 'npz':
    try:
      return architecture_of(npz_shapes(name_or_path))
    except CheckpointMismatchError as e:
      raise CheckpointMismatchError(f'{name_or_path}: {e}') from e
  return architecture_of(read_any(name_or_path))


def _param_shapes(model: models.ResNetV2) -> dict[str, tuple[int, ...]]:
  shapes = models.param_shapes(model)
  return {'/'.join(p): tuple(s.shape) for p, s in traverse_util.flatten_dict(shapes).items()}


def _fits(stored, target) -> bool:
  """Equal, or equal but for unit dimensions: the official head is a 1x1 conv (1,1,C,K) where
  ours is Dense (C,K), and some files store GN parameters as (1,1,1,C)."""
  squeeze = lambda shape: tuple(d for d in shape if d != 1)
  return tuple(stored) == tuple(target) or squeeze(stored) == squeeze(target)


def check_fit(
  shapes: Mapping[str, tuple[int, ...]], model: models.ResNetV2, keep_head: bool
) -> None:
  """Raise `CheckpointMismatchError` listing every missing, unexpected and mis-shaped array
  (both shapes) unless the official-layout `shapes` fit `model`; the head must fit only when
  it is kept."""
  missing, misshaped = [], []
  wanted = _param_shapes(model)
  for path, shape in wanted.items():
    key = npz_key(path)
    if path.startswith('head/') and not keep_head:
      continue
    if key not in shapes:
      missing.append(f'  {key} (for {path}, shape {shape})')
    elif not _fits(shapes[key], shape):
      misshaped.append(f'  {key}: checkpoint {tuple(shapes[key])}, model {shape}')
  used = {npz_key(p) for p in wanted} | {HEAD_KERNEL, HEAD_BIAS} | set(METADATA)
  unexpected = [f'  {k} {tuple(shapes[k])}' for k in sorted(set(shapes) - used)]
  if missing or unexpected or misshaped:
    parts = [
      f'{title} ({len(names)}):\n' + '\n'.join(names)
      for title, names in (
        ('missing', missing),
        ('unexpected', unexpected),
        ('mis-shaped', misshaped),
      )
      if names
    ]
    raise CheckpointMismatchError(
      f'Checkpoint does not fit ResNetV2(units={tuple(model.stage_units)}, '
      f'width={model.width}, num_classes={model.num_classes})'
      f'{", keeping its head" if keep_head else ""}.\n'
      + '\n'.join(parts)
      + '\nPick the model that matches the file (see bit_jax.models.pretrained.architecture_of).'
    )


def npz_to_params(
  arrays: Mapping[str, np.ndarray], model: models.ResNetV2, *, keep_head: bool
) -> dict:
  """Official-layout arrays -> Flax params for `model`.

  The head is the checkpoint's with `keep_head`, else a fresh zero head of the model's size
  (BiT fine-tuning re-initialises it for every new task, even at the same size). Anything
  that does not fit raises `CheckpointMismatchError` (see `check_fit`).
  """
  arrays = normalize_keys(arrays)
  check_fit({k: v.shape for k, v in arrays.items()}, model, keep_head)
  flat = {}
  for path, shape in _param_shapes(model).items():
    if path.startswith('head/') and not keep_head:
      flat[path] = np.zeros(shape, np.float32)
    else:
      flat[path] = arrays[npz_key(path)].reshape(shape).astype(np.float32)
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
  files.write_npz(path, params_to_npz(params))


# timm `resnetv2_*_bit` names <-> official names. Convolutions are OIHW in torch, HWIO here.
_TIMM_TOP = MappingProxyType(
  {
    'stem.conv.weight': 'resnet/root_block/standardized_conv2d/kernel',
    'norm.weight': 'resnet/group_norm/gamma',
    'norm.bias': 'resnet/group_norm/beta',
    'head.fc.weight': HEAD_KERNEL,
    'head.fc.bias': HEAD_BIAS,
  }
)
# Inside stages.<i>.blocks.<j>  <->  resnet/block<i+1>/unit<j+1>.
_TIMM_UNIT = MappingProxyType(
  {
    'downsample.conv.weight': 'a/proj/standardized_conv2d/kernel',
    'conv1.weight': 'a/standardized_conv2d/kernel',
    'conv2.weight': 'b/standardized_conv2d/kernel',
    'conv3.weight': 'c/standardized_conv2d/kernel',
    'norm1.weight': 'a/group_norm/gamma',
    'norm1.bias': 'a/group_norm/beta',
    'norm2.weight': 'b/group_norm/gamma',
    'norm2.bias': 'b/group_norm/beta',
    'norm3.weight': 'c/group_norm/gamma',
    'norm3.bias': 'c/group_norm/beta',
  }
)


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
    key = _rename(
      name,
      _TIMM_TOP,
      _TIMM_UNIT,
      r'stages\.(\d+)\.blocks\.(\d+)\.(.+)',
      lambda i, j, rest: f'resnet/block{i + 1}/unit{j + 1:02d}/{rest}',
    )
    arrays[key] = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value  # OIHW -> HWIO
  return arrays


def npz_to_timm(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Official-layout arrays -> a timm state_dict's names and OIHW layout (numpy values)."""
  top = {v: k for k, v in _TIMM_TOP.items()}
  unit = {v: k for k, v in _TIMM_UNIT.items()}
  out = {}
  for key, value in normalize_keys(arrays).items():
    name = _rename(
      key,
      top,
      unit,
      r'resnet/block(\d)/unit(\d+)/(.+)',
      lambda i, j, rest: f'stages.{i - 1}.blocks.{j - 1}.{rest}',
    )
    out[name] = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value  # HWIO -> OIHW
  return out


def cache_dir() -> Path:
  return Path(os.environ.get('BIT_JAX_CACHE', Path.home() / '.cache' / 'bit_jax'))


def download(name: str, directory: Path | None = None) -> Path:
  """Path of a published checkpoint, downloaded into the cache on first use."""
  if name not in models.KNOWN_MODELS:
    raise ValueError(
      f'Unknown BiT model {name!r}; published ones are: {", ".join(sorted(models.KNOWN_MODELS))}.'
    )
  spec = models.KNOWN_MODELS[name]
  target = Path(directory or cache_dir()) / spec['filename']
  if not target.exists():  # its errors say where to put a file fetched elsewhere
    fetch(spec['url'], target, verify=read_npz)
  return target


def locate(name_or_path, cache: Path | None = None) -> epath.Path:
  """The file of a checkpoint file, published name (downloaded into `cache` on first use)
  or hf-hub: name."""
  path = epath.Path(name_or_path)
  if hub.is_hub(name_or_path):
    return epath.Path(hub.download(name_or_path))
  if not path.exists():
    if str(name_or_path) not in models.KNOWN_MODELS:
      raise FileNotFoundError(
        f'{name_or_path!r} is neither a file nor a published BiT model '
        f'({", ".join(sorted(models.KNOWN_MODELS))}) nor {hub.PREFIX}<org>/<name>.'
      )
    return epath.Path(download(str(name_or_path), cache))
  return path


def read_located(name_or_path, cache: Path | None = None) -> tuple[epath.Path, dict]:
  """(the file, its official-layout arrays) of a checkpoint file or name (see `locate`). A
  cached download that cannot be read says how to fetch it again."""
  path = locate(name_or_path, cache)
  try:
    return path, read_any(path)
  except ValueError as e:
    if str(name_or_path) not in models.KNOWN_MODELS or epath.Path(name_or_path).exists():
      raise
    raise ValueError(
      f'{e} It is the cached download of {name_or_path}: delete {path} and rerun to '
      f'download it again.'
    ) from None


def load_pretrained(
  name_or_path,
  num_classes=None,
  dtype=jnp.float32,
  cache: Path | None = None,
  *,
  keep_head: bool = False,
  with_info: bool = False,
):
  """`(model, params)` from a checkpoint file or a published BiT name.

  Args:
    name_or_path: a checkpoint on any filesystem epath reaches (local, gs://) — official
      `.npz` (a run's final.npz too), timm `.pth` or `.safetensors` state_dict, a timm model
      folder (model.safetensors + config.json, `bit_jax.export --format=timm`), or an orbax
      directory written by tools/convert_checkpoint.py — a name from
      `bit_jax.models.KNOWN_MODELS` (downloaded to `cache` or the cache dir on first use), or
      a timm BiT on the Hugging Face hub, 'hf-hub:<org>/<name>' (downloaded to the Hugging
      Face cache).
    num_classes: None (the default) keeps the checkpoint's own head (a checkpoint without a
      head gives features). An int K gives a fresh zero-initialised K-class head, as BiT
      fine-tuning does for every new task, even when the checkpoint's head has K classes;
      `keep_head=True` keeps the checkpoint's head instead (it must have K classes). 0 gives
      a features-only model (pre-logits).
    dtype: activation dtype (parameters stay float32).
    with_info: also return a dict with what a run's final.npz stores beside the weights (or
      a timm folder's config.json says): 'class_names' (label i is class_names[i]) and
      'image_size' (the crop it was trained at), None where the checkpoint does not say.
  """
  path, arrays = read_located(name_or_path, cache)
  if with_info and hub.is_hub(name_or_path):
    hub.download_config(name_or_path)  # label names and input size, where the repo has them
  architecture, head_classes = architecture_of(arrays)
  if num_classes is None:
    num_classes, keep_head = head_classes, True
  model = architecture.model(num_classes or None, dtype)
  params = npz_to_params(arrays, model, keep_head=keep_head and bool(num_classes))
  if not with_info:
    return model, params
  info = read_metadata(path)
  names = info.get('class_names') if keep_head and num_classes else None
  return model, params, {'class_names': names, 'image_size': info.get('image_size')}
