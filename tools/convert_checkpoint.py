"""Convert BiT ResNet-V2 checkpoints: official `.npz`, timm `.pth`/`.safetensors`, orbax dirs.

Every conversion goes through the official layout (`dict[str, np.ndarray]`, the source of
truth), so npz -> pth -> npz and npz -> orbax -> npz give back the very same arrays.

    python tools/convert_checkpoint.py BiT-M-R50x1.npz bit_m_r50x1.pth     # for timm
    python tools/convert_checkpoint.py model.safetensors BiT-M-R50x1.npz   # from the HF hub
    python tools/convert_checkpoint.py BiT-M-R50x1.npz ckpt/bit_m_r50x1    # orbax directory
    python tools/convert_checkpoint.py weights.bin out.npz --from pth --overwrite

An orbax directory holds `{'params': flax_params}` (ready for `model.apply`) and the
architecture as JSON custom metadata: `StandardCheckpointer().metadata(d).custom_metadata`.
"""

import argparse
import os
import pathlib
import sys
from collections.abc import Mapping

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from bit_jax import models  # noqa: E402
from bit_jax.models import pretrained  # noqa: E402

FORMATS = pretrained.FORMATS


def architecture(arrays: Mapping[str, np.ndarray]) -> dict:
  """`pretrained.architecture_of` in JSON types, as stored in orbax metadata."""
  arch, num_classes = pretrained.architecture_of(arrays)
  return dict(name=arch.name, units=list(arch.units), width=arch.width, num_classes=num_classes)


def write_any(
  arrays: Mapping[str, np.ndarray], path, fmt: str | None = None, overwrite: bool = False
) -> dict:
  """Write official-layout arrays as `fmt`; returns their architecture."""
  fmt = pretrained.detect_format(path, fmt)
  if os.path.lexists(path) and not overwrite:
    raise FileExistsError(f'{path} already exists; pass --overwrite to replace it.')
  arch = architecture(arrays)
  # Building the Flax params is the full check (every name and shape, all listed when anything
  # does not fit), so no format gets a file that no model accepts.
  model = models.Architecture(arch['units'], arch['width']).model(arch['num_classes'])
  params = pretrained.npz_to_params(arrays, model, keep_head=True)
  if fmt == 'orbax':
    import orbax.checkpoint as ocp

    if (
      os.path.isdir(path)
      and os.listdir(path)
      and not os.path.exists(os.path.join(path, '_CHECKPOINT_METADATA'))
    ):  # force=True would delete it
      raise FileExistsError(
        f'{path} is a non-empty directory but not an orbax checkpoint; '
        f'refusing to replace it even with --overwrite. Pick a new path.'
      )
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(
        os.path.abspath(path),
        {'params': params},
        force=overwrite,
        custom_metadata={'bit_architecture': arch},
      )
      checkpointer.wait_until_finished()
    return arch
  torch = pretrained.require_torch() if fmt == 'pth' else None
  partial = f'{path}.part'  # DST only ever appears complete
  with open(partial, 'wb') as f:  # a file object: np.savez adds no suffix
    if fmt == 'npz':
      np.savez(f, **arrays)
    elif fmt == 'safetensors':  # contiguous: safetensors writes strided arrays scrambled
      from safetensors.numpy import save

      f.write(save({k: np.ascontiguousarray(v) for k, v in pretrained.npz_to_timm(arrays).items()}))
    else:
      torch.save(
        {
          k: torch.from_numpy(np.ascontiguousarray(v))
          for k, v in pretrained.npz_to_timm(arrays).items()
        },
        f,
      )
  os.replace(partial, path)
  return arch


def describe(arch: dict) -> str:
  return f'ResNet-V2 {arch["name"]}, ' + (
    f'{arch["num_classes"]} classes' if arch['num_classes'] else 'no head'
  )


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('src', help='.npz, .pth/.pt, .safetensors or an orbax directory')
  parser.add_argument('dst', help='same choices; the format follows the suffix')
  parser.add_argument('--from', dest='src_format', choices=FORMATS, help='force SRC format')
  parser.add_argument('--to', dest='dst_format', choices=FORMATS, help='force DST format')
  parser.add_argument('--overwrite', action='store_true', help='replace an existing DST')
  args = parser.parse_args(argv)
  src_format = pretrained.detect_format(args.src, args.src_format)
  dst_format = pretrained.detect_format(args.dst, args.dst_format)
  if os.path.lexists(args.dst) and not args.overwrite:  # before the slow read
    parser.error(f'{args.dst} already exists; pass --overwrite to replace it.')
  try:
    arrays = pretrained.read_any(args.src, src_format)
    arch = write_any(arrays, args.dst, dst_format, overwrite=args.overwrite)
  except (OSError, ValueError, ImportError) as e:
    print(f'convert_checkpoint: error: {e}', file=sys.stderr)
    return 1
  print(
    f'{args.src} ({src_format}) -> {args.dst} ({dst_format}): {len(arrays)} arrays, '
    f'{sum(v.size for v in arrays.values()):,} parameters, {describe(arch)}'
  )
  return 0


if __name__ == '__main__':
  sys.exit(main())
