"""Write the timm logit-parity fixture: tests/data/golden_bit_small.npz.

The fixture is a small BiT ResNet-V2 (one unit per stage, width 0.5, 10 classes) in the official
`.npz` layout, with random non-trivial values (non-zero-mean kernels so Weight Standardization
matters, GroupNorm scales/biases away from 1/0, a non-zero head), a fixed NHWC input in [-1, 1],
and the logits and pre-logits timm computes for it. Key names are spelled out here by hand from
the official layout, and timm reads them with its own loader, so the oracle shares no code with
bit_jax's converter.

    python tools/make_golden.py            # needs: pip install -e ".[torch]"
"""

import argparse
import functools
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from timm_oracle import import_timm  # noqa: E402  (tools/, beside this file)

UNITS = (1, 1, 1, 1)
ROOT = 32  # width 0.5: 64 * 0.5
NUM_CLASSES = 10
IMAGE_SIZE = 64


def official_arrays(rng: np.random.Generator) -> dict[str, np.ndarray]:
  def kernel(*shape):
    return (rng.normal(size=shape) + rng.normal(size=shape[-1])).astype(np.float32)

  def norm(prefix, c):
    return {
      f'{prefix}/gamma': rng.uniform(0.5, 1.5, c).astype(np.float32),
      f'{prefix}/beta': rng.normal(0, 0.3, c).astype(np.float32),
    }

  arrays = {'resnet/root_block/standardized_conv2d/kernel': kernel(7, 7, 3, ROOT)}
  in_c = ROOT
  for b, units in enumerate(UNITS, start=1):
    mid = ROOT * 2 ** (b - 1)
    for u in range(1, units + 1):
      p = f'resnet/block{b}/unit{u:02d}'
      arrays.update(norm(f'{p}/a/group_norm', in_c))
      arrays[f'{p}/a/standardized_conv2d/kernel'] = kernel(1, 1, in_c, mid)
      arrays.update(norm(f'{p}/b/group_norm', mid))
      arrays[f'{p}/b/standardized_conv2d/kernel'] = kernel(3, 3, mid, mid)
      arrays.update(norm(f'{p}/c/group_norm', mid))
      arrays[f'{p}/c/standardized_conv2d/kernel'] = kernel(1, 1, mid, 4 * mid)
      if u == 1:
        arrays[f'{p}/a/proj/standardized_conv2d/kernel'] = kernel(1, 1, in_c, 4 * mid)
      in_c = 4 * mid
  arrays.update(norm('resnet/group_norm', in_c))
  arrays['resnet/head/conv2d/kernel'] = rng.normal(0, 0.1, (1, 1, in_c, NUM_CLASSES)).astype(
    np.float32
  )
  arrays['resnet/head/conv2d/bias'] = rng.normal(0, 0.1, NUM_CLASSES).astype(np.float32)
  return arrays


def timm_outputs(npz_path, images_nhwc):
  timm = import_timm()
  import torch
  from timm.layers import StdConv2d
  from timm.models import resnetv2

  model = resnetv2.ResNetV2(
    layers=list(UNITS),
    channels=tuple(4 * ROOT * 2**i for i in range(4)),
    num_classes=NUM_CLASSES,
    stem_chs=ROOT,
    stem_type='fixed',
    conv_layer=functools.partial(StdConv2d, eps=1e-8),
  ).eval()
  resnetv2._load_weights(model, str(npz_path))
  del timm
  with torch.no_grad():
    x = torch.from_numpy(images_nhwc.transpose(0, 3, 1, 2).copy())
    features = model.forward_features(x)
    return (
      model.forward_head(features).numpy(),
      model.forward_head(features, pre_logits=True).numpy(),
    )


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument(
    '--out',
    default=pathlib.Path(__file__).resolve().parents[1] / 'tests' / 'data' / 'golden_bit_small.npz',
    type=pathlib.Path,
  )
  parser.add_argument('--seed', default=0, type=int)
  args = parser.parse_args()
  rng = np.random.default_rng(args.seed)
  arrays = official_arrays(rng)
  images = rng.uniform(-1, 1, (3, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
  args.out.parent.mkdir(parents=True, exist_ok=True)
  checkpoint = args.out.with_name('bit_small_official.npz')
  np.savez(checkpoint, **arrays)
  logits, pre_logits = timm_outputs(checkpoint, images)
  np.savez(args.out, images=images, logits=logits, pre_logits=pre_logits)
  print(
    f'wrote {checkpoint} ({sum(a.size for a in arrays.values())} parameters) and {args.out}; '
    f'logits range [{logits.min():.3f}, {logits.max():.3f}]'
  )


if __name__ == '__main__':
  main()
