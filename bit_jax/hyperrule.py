"""BiT-HyperRule: the fine-tuning recipe that picks hyper-parameters from the data.

Reproduces google-research/big_transfer `bit_hyperrule.py` exactly:

* resolution: images smaller than 96x96 in area are resized to 160 and cropped to
 128; larger ones are resized to 512 and cropped to 480 (the paper says 448/384,
 available as ``rule="paper"``).
* schedule: fine-tuning length and decay points depend only on the number of
 training examples (<20k, <500k, otherwise).
* learning rate: linear warm-up from 0, then /10 at each decay boundary, with the
 official strict test ``boundary < step`` (the lr at step == boundary is still the
 undecayed one; it drops from boundary + 1 on).
* MixUp alpha 0.1 from 20k examples on, none below.
* learning rate 0.003 at any batch size: all three official implementations use
 it unscaled (their README suggests 0.001 at batch 128). The paper's batch is 512;
 `linearly_scaled_lr` is there for configs that ask for scaling (the upstream
 recipe scales 0.03 x batch / 256), never applied by default.

SGD momentum 0.9 and no weight decay are the defaults in `bit_jax/defaults.py`.

Everything here is a pure function of its arguments except `image_size`, which may
read TFDS metadata.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Sequence

import numpy as np

from bit_jax import dataset_names

BASE_LEARNING_RATE = 0.003

# Below this many training examples a dataset is "small", below the next "medium".
SMALL_DATASET_LIMIT = 20_000
MEDIUM_DATASET_LIMIT = 500_000

# Images with area strictly below SMALL_IMAGE_AREA count as small (official rule).
SMALL_IMAGE_AREA = 96 * 96

# (resize, crop) per rule: small images are the same in both, large ones differ
# because the released code uses 512/480 while the paper text says 448/384.
_RESOLUTIONS = {
  'official': {'small': (160, 128), 'large': (512, 480)},
  'paper': {'small': (160, 128), 'large': (448, 384)},
}

# The official `known_dataset_sizes` table, used when TFDS metadata cannot say
# (variable-size datasets report (None, None, 3)).
KNOWN_IMAGE_SIZES = {
  'cifar10': (32, 32),
  'cifar100': (32, 32),
  'oxford_iiit_pet': (224, 224),
  'oxford_flowers102': (224, 224),
  'imagenet2012': (224, 224),
}


def resolution(image_hw: Sequence[int], rule: str = 'official') -> tuple[int, int]:
  """Returns ``(resize, crop)`` for images of original size ``image_hw = (h, w)``."""
  if rule not in _RESOLUTIONS:
    raise ValueError(f'Unknown resolution rule {rule!r}; expected one of {sorted(_RESOLUTIONS)}.')
  height, width = image_hw
  size_class = 'small' if height * width < SMALL_IMAGE_AREA else 'large'
  return _RESOLUTIONS[rule][size_class]


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Step counts of one fine-tuning run.

  The learning rate rises linearly over ``warmup_steps``, is divided by 10 after
  each of ``decay_boundaries`` and training stops at ``total_steps``.
  """

  warmup_steps: int
  decay_boundaries: tuple[int, ...]
  total_steps: int

  def __post_init__(self):
    # Tuples keep the dataclass hashable and immutable even if a list was given.
    object.__setattr__(self, 'decay_boundaries', tuple(self.decay_boundaries))
    steps = (self.warmup_steps, *self.decay_boundaries, self.total_steps)
    if self.total_steps <= 0 or list(steps) != sorted(steps) or self.warmup_steps < 0:
      raise ValueError(
        'Expected 0 <= warmup_steps <= decay_boundaries (ascending) <= '
        f'total_steps with total_steps > 0; got warmup_steps='
        f'{self.warmup_steps}, decay_boundaries={self.decay_boundaries}, '
        f'total_steps={self.total_steps}. Fix the schedule override.'
      )


def schedule(num_examples: int) -> Schedule:
  """The official schedule for a training set of ``num_examples`` examples."""
  if num_examples < SMALL_DATASET_LIMIT:
    return Schedule(100, (200, 300, 400), 500)
  if num_examples < MEDIUM_DATASET_LIMIT:
    return Schedule(500, (3000, 6000, 9000), 10_000)
  return Schedule(500, (6000, 12_000, 18_000), 20_000)


def regime(num_examples: int) -> str:
  """Which schedule the rule picks for `num_examples`, and why, e.g. '5,085 examples < 20k:
  500 steps (warmup 100, /10 after 200, 300, 400), no MixUp'."""
  if num_examples < SMALL_DATASET_LIMIT:
    why = f'{num_examples:,} examples < {SMALL_DATASET_LIMIT // 1000}k'
  elif num_examples < MEDIUM_DATASET_LIMIT:
    why = f'{num_examples:,} examples in [{SMALL_DATASET_LIMIT // 1000}k, {MEDIUM_DATASET_LIMIT // 1000}k)'
  else:
    why = f'{num_examples:,} examples >= {MEDIUM_DATASET_LIMIT // 1000}k'
  rule, alpha = schedule(num_examples), mixup_alpha(num_examples)
  decays = ', '.join(f'{b:,}' for b in rule.decay_boundaries)
  mixup = f'MixUp alpha {alpha:g}' if alpha else 'no MixUp'
  return (
    f'{why}: {rule.total_steps:,} steps (warmup {rule.warmup_steps:,}, /10 after {decays}), {mixup}'
  )


def resolution_regime(image_hw: Sequence[int], rule: str = 'official') -> str:
  """'8x8 images (area < 96x96): 160->128' and the like."""
  height, width = image_hw
  resize, crop = resolution(image_hw, rule)
  relation = '<' if height * width < SMALL_IMAGE_AREA else '>='
  return f'{height}x{width} images (area {relation} 96x96): {resize}->{crop}'


def mixup_alpha(num_examples: int) -> float:
  """MixUp Beta(alpha, alpha) parameter: none for small datasets, 0.1 otherwise."""
  return 0.0 if num_examples < SMALL_DATASET_LIMIT else 0.1


def linearly_scaled_lr(batch_size: int, base_lr: float, base_batch: int) -> float:
  """The linear scaling rule, for configs that ask for it: ``base_lr`` at ``base_batch``."""
  if batch_size <= 0 or base_batch <= 0:
    raise ValueError(
      f'Expected positive batch sizes; got batch_size={batch_size}, base_batch={base_batch}.'
    )
  return base_lr * batch_size / base_batch


def _resolve_schedule(num_examples: int | None, override: Schedule | None) -> Schedule:
  if override is not None:
    return override
  if num_examples is None:
    raise ValueError(
      'Expected num_examples (to derive the official schedule) or an explicit '
      'schedule=Schedule(...); got neither.'
    )
  return schedule(num_examples)


def learning_rate(
  step: int,
  num_examples: int | None,
  base_lr: float = BASE_LEARNING_RATE,
  *,
  schedule: Schedule | None = None,
) -> float:
  """The official BiT-HyperRule learning rate at ``step``.

  Where the official code returns None (``step >= total_steps``, training is
  over) this returns 0.0, so it can be used as an optax schedule; stop the loop
  with ``Schedule.total_steps``. ``schedule`` overrides the one derived from
  ``num_examples``.
  """
  plan = _resolve_schedule(num_examples, schedule)
  if step < plan.warmup_steps:
    return base_lr * step / plan.warmup_steps
  if step >= plan.total_steps:
    return 0.0
  # Repeated division (not base_lr * 0.1**n) mirrors the official float arithmetic.
  lr = base_lr
  for boundary in plan.decay_boundaries:
    if boundary < step:
      lr /= 10
  return lr


def image_size(dataset_name: str, data_dir: str | None = None) -> tuple[int, int] | None:
  """``(height, width)`` of a dataset's images, or None when it cannot be known.

  Tries TFDS metadata first (fixed-size datasets declare their shape), then the
  official table for variable-size datasets. None means "read it from the data",
  e.g. with `image_size_from_examples`; it is not an error.
  """
  from_metadata = _image_size_from_tfds_metadata(dataset_name, data_dir)
  if from_metadata is not None:
    return from_metadata
  # "imagenet2012:5.1.0" and "imagenet2012_subset/1pct" share the base name's images.
  base = dataset_names.base_name(dataset_name)
  return KNOWN_IMAGE_SIZES.get(dataset_name, KNOWN_IMAGE_SIZES.get(base))


def _image_size_from_tfds_metadata(
  dataset_name: str, data_dir: str | None
) -> tuple[int, int] | None:
  try:
    import tensorflow_datasets as tfds

    shape = tfds.builder(dataset_name, data_dir=data_dir).info.features['image'].shape
  # Metadata is only a hint: an unregistered name, a missing TFDS install, no
  # "image" feature or unreadable files all mean "ask the table or the data".
  except Exception:  # noqa: BLE001
    return None
  height, width = shape[0], shape[1]
  if isinstance(height, int) and isinstance(width, int):
    return (height, width)
  return None


def image_size_from_examples(
  images: Iterable[np.ndarray], max_examples: int | None = 1_000
) -> tuple[int, int]:
  """Median ``(height, width)`` over the first ``max_examples`` images.

  Each image is an array shaped ``[H, W]`` or ``[H, W, C]``. The median keeps a
  few odd-sized images from moving the result; ``max_examples`` keeps a huge
  dataset from being read in full (None reads all).
  """
  sample = itertools.islice(images, max_examples)
  sizes = np.array([np.shape(image)[:2] for image in sample])
  if sizes.size == 0:
    raise ValueError(
      'Expected at least one image to measure; got an empty iterable. '
      'Check the split name and that the dataset is prepared.'
    )
  height, width = np.median(sizes, axis=0)
  return (int(round(height)), int(round(width)))
