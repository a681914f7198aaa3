"""BiT-HyperRule: the fine-tuning recipe that picks hyper-parameters from the data, and
every phase's learning rate at every step.

Reproduces google-research/big_transfer `bit_hyperrule.py` exactly:

* resolution: images smaller than 96x96 in area are resized to 160 and cropped to
 128; larger ones are resized to 512 and cropped to 480 (the paper says 448/384; we follow
 the code, as the released checkpoints were fine-tuned with it).
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

SGD momentum 0.9 and no weight decay are the defaults (bit_jax/recipe/settings.py).

A phase's schedule: `fill` derives every field a phase leaves unset from its number of
examples (the HyperRule's length, or its shape scaled to a length the config fixes, in steps
or epochs), and `learning_rate` is the lr of a resolved phase at step t, for each
`lr_schedule`:

* 'hyperrule': linear warmup, then /10 after each of `decay_steps` (the official strictness),
  0 from `total_steps` on;
* 'constant': linear warmup, then flat;
* 'plateau': linear warmup, then flat times the plateau's scale (bit_jax/recipe/plateau.py);
* 'step': linear warmup, then times `decay_factor` (γ) at each of `decay_steps`, and on after
  `total_steps` (a plain step decay, e.g. every 10 epochs with `decay_epochs`; unlike
  'hyperrule' it never drops to 0).

The host computes the rate of every step as a Python float (see optim.py for why).
Everything here is a pure function of its arguments except `image_size`, which may
read TFDS metadata.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterable, Sequence

import numpy as np

from bit_jax.data import dataset_names
from bit_jax.recipe.settings import PhaseSettings

# Below this many training examples a dataset is "small", below the next "medium".
SMALL_DATASET_LIMIT = 20_000
MEDIUM_DATASET_LIMIT = 500_000

# Images with area strictly below SMALL_IMAGE_AREA count as small (official rule).
SMALL_IMAGE_AREA = 96 * 96

# (resize, crop) of small and large images: the released code's (the paper says 448/384).
RESOLUTIONS = {'small': (160, 128), 'large': (512, 480)}

# The official `known_dataset_sizes` table, used when TFDS metadata cannot say
# (variable-size datasets report (None, None, 3)).
KNOWN_IMAGE_SIZES = {
  'cifar10': (32, 32),
  'cifar100': (32, 32),
  'oxford_iiit_pet': (224, 224),
  'oxford_flowers102': (224, 224),
  'imagenet2012': (224, 224),
}


def resolution(image_hw: Sequence[int]) -> tuple[int, int]:
  """Returns ``(resize, crop)`` for images of original size ``image_hw = (h, w)``."""
  height, width = image_hw
  return RESOLUTIONS['small' if height * width < SMALL_IMAGE_AREA else 'large']


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

  def learning_rate(self, step: int, base_lr: float) -> float:
    """The official BiT-HyperRule learning rate at ``step``. Where the official code returns
    None (``step >= total_steps``, training is over) this returns 0.0."""
    if step < self.warmup_steps:
      return base_lr * step / self.warmup_steps
    if step >= self.total_steps:
      return 0.0
    return _divided_after(base_lr, self.decay_boundaries, step)

  def scaled(self, total_steps: int) -> tuple[int, tuple[int, ...]]:
    """(warmup, decay boundaries) of the same shape over `total_steps` (scaled, rounded)."""
    scale = total_steps / self.total_steps
    return round(self.warmup_steps * scale), tuple(round(b * scale) for b in self.decay_boundaries)


def _divided_after(base_lr: float, boundaries: Sequence[int], step: int) -> float:
  # Repeated division (not base_lr * 0.1**n) mirrors the official float arithmetic, with its
  # strict `boundary < step`.
  lr = base_lr
  for boundary in boundaries:
    if boundary < step:
      lr /= 10
  return lr


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


def resolution_regime(image_hw: Sequence[int]) -> str:
  """'8x8 images (area < 96x96): 160->128' and the like."""
  height, width = image_hw
  resize, crop = resolution(image_hw)
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


# --- a phase's schedule ------------------------------------------------------------------


def fill(
  s: PhaseSettings, *, num_examples: int, image_hw: tuple[int, int] | None, num_classes: int
) -> PhaseSettings:
  """`s` with every field it leaves unset derived for its `num_examples` training examples:
  the lr (`base_lr`, scaled only if asked), the length (the rule's, or `epochs`), warmup and
  decays (in epochs if given so, else the rule's scaled to the length), MixUp, resolution."""
  rule = schedule(num_examples)
  steps_per_epoch = num_examples / s.batch_size
  total = s.total_steps
  if total is None:
    total = math.ceil(s.epochs * steps_per_epoch) if s.epochs else rule.total_steps
  scaled_warmup, scaled_decays = rule.scaled(total)
  in_steps = lambda epochs: round(epochs * steps_per_epoch)
  warmup, decays = s.warmup_steps, s.decay_steps
  if warmup is None:
    warmup = in_steps(s.warmup_epochs) if s.warmup_epochs is not None else scaled_warmup
  if decays is None:
    decays = tuple(map(in_steps, s.decay_epochs)) if s.decay_epochs is not None else scaled_decays
  if (s.resize is None or s.crop is None) and image_hw is None:
    raise ValueError(f'Phase {s.name}: set resize and crop, or give the image size.')
  resize, crop = resolution(image_hw) if image_hw is not None else (s.resize, s.crop)
  lr = s.base_lr
  if s.lr_scaling == 'linear':
    lr = linearly_scaled_lr(s.batch_size, s.base_lr, s.base_batch)
  return dataclasses.replace(
    s,
    num_classes=num_classes if s.num_classes is None else s.num_classes,
    lr=lr if s.lr is None else s.lr,
    total_steps=total,
    warmup_steps=warmup,
    decay_steps=tuple(decays),
    mixup_alpha=mixup_alpha(num_examples) if s.mixup_alpha is None else s.mixup_alpha,
    resize=resize if s.resize is None else s.resize,
    crop=crop if s.crop is None else s.crop,
    num_examples=num_examples,
  )


def learning_rate(s: PhaseSettings, step: int, plateau_scale: float = 1.0) -> float:
  """The learning rate of a resolved phase at its own step `step` (see the module docstring);
  `plateau_scale`: the plateau rule's factor so far ('plateau' only)."""
  if step < s.warmup_steps:
    return s.lr * step / s.warmup_steps
  if s.lr_schedule == 'hyperrule':  # the plan checked that the steps make a `Schedule`
    return 0.0 if step >= s.total_steps else _divided_after(s.lr, s.decay_steps, step)
  if s.lr_schedule == 'step':
    return s.lr * s.decay_factor ** sum(step >= b for b in s.decay_steps)
  return s.lr * (plateau_scale if s.lr_schedule == 'plateau' else 1.0)


def describe(phase: PhaseSettings) -> str:
  """The whole schedule of a resolved phase in words: warmup, decays, total."""
  warmup = f'warmup {phase.warmup_steps} steps from 0' if phase.warmup_steps else 'no warmup'
  after = ', '.join(map(str, phase.decay_steps))
  if phase.lr_schedule == 'hyperrule':
    rest = f'/10 after steps {after}' if after else 'no decay'
  elif phase.lr_schedule == 'step':
    rest = f'x{phase.decay_factor:g} from steps {after}' if after else 'no decay'
  elif phase.lr_schedule == 'plateau':
    rest = (
      f'then x{phase.plateau_factor:g} after {phase.plateau_patience} evaluations without a '
      f'better {phase.monitor}'
    )
  else:
    rest = 'then constant'
  return (
    f'lr {phase.lr:.4g} ({phase.lr_schedule}): {warmup}, {rest}; {phase.total_steps} steps '
    f'of {phase.batch_size} in all'
  )


def note(phase: PhaseSettings, image_hw: tuple[int, int] | None = None) -> str:
  """Which HyperRule regime the phase's data put it in, and where the config overrode it."""
  n = phase.num_examples
  rule = schedule(n)
  notes = [regime(n)]
  scaled = rule.scaled(phase.total_steps)
  if phase.total_steps != rule.total_steps:
    notes.append(f'total_steps {phase.total_steps} from the config')
  given = (phase.warmup_steps, tuple(phase.decay_steps))
  if given == scaled and phase.total_steps != rule.total_steps:
    notes.append(f'warmup and decays scaled by {phase.total_steps}/{rule.total_steps}')
  elif given != scaled:
    notes.append('warmup/decay steps from the config')
  if phase.mixup_alpha != mixup_alpha(n):
    notes.append(f'MixUp {phase.mixup_alpha:g} from the config')
  if image_hw is not None:
    derived = resolution(image_hw)
    where = (
      ''
      if derived == (phase.resize, phase.crop)
      else f'; here {phase.resize}->{phase.crop} from the config'
    )
    notes.append(resolution_regime(image_hw) + where)
  return 'HyperRule: ' + '; '.join(notes)
