"""A run is a list of phases; this file turns a config into them (pure functions).

The top-level config holds the defaults; `config.phases` is a sequence of dicts, each
overriding some fields for one phase (data subset, batch size, learning rate, steps, frozen
parameters, init). A plain HyperRule run has no `phases` and is one phase. Fields left unset
(None) are filled from the BiT-HyperRule for the phase's own data:

* `lr`: `base_lr * batch_size / base_batch` (512 for the HyperRule);
* `total_steps`, `warmup_steps`, `decay_steps`: the HyperRule schedule of the phase's number
  of training examples; when `epochs` or `total_steps` fixes another length, the HyperRule's
  boundaries are scaled to it (same shape, other length); `warmup_epochs`/`decay_epochs`
  give them in epochs instead (upstream pre-training);
* `mixup_alpha`; `resize`/`crop` from the image size.

Learning-rate schedules: 'hyperrule' (warmup then /10 at each boundary, official strictness),
'constant' (warmup then flat) and 'plateau' (warmup, then divided by `plateau_factor` after
`plateau_patience` evaluations without a better validation loss; `early_stopping_patience`
evaluations without one end the phase).
"""

import dataclasses
import math
from typing import Optional

import ml_collections

from bit_jax import hyperrule

SCHEDULES = ('hyperrule', 'constant', 'plateau')
PHASE_ONLY_FIELDS = ('name',)


def phase_configs(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
  """One unlocked ConfigDict per phase: the top level updated with the phase's overrides."""
  base = config.to_dict()
  overrides = base.pop('phases', None) or [{}]
  phases = []
  for index, override in enumerate(overrides):
    override = dict(override)
    unknown = sorted(set(override) - set(base) - set(PHASE_ONLY_FIELDS))
    if unknown:
      raise ValueError(f'Phase {index} sets unknown fields {unknown}; phases may override '
                       f'any top-level field: {", ".join(sorted(base))}.')
    phase = ml_collections.ConfigDict({**base, 'name': f'phase{index}', 'index': index,
                                       'init': base['init'] if index == 0 else 'previous'})
    phase.update(override)
    if phase.lr_schedule not in SCHEDULES:
      raise ValueError(f'Phase {phase.name}: lr_schedule={phase.lr_schedule!r}, expected one '
                       f'of {SCHEDULES}.')
    phases.append(phase)
  return phases


def fill_from_hyperrule(phase: ml_collections.ConfigDict, *, num_examples: int,
                        image_hw: Optional[tuple[int, int]],
                        num_classes: int) -> ml_collections.ConfigDict:
  """Fill every unset HyperRule-derived field of `phase` for its `num_examples` examples."""
  phase = ml_collections.ConfigDict(phase.to_dict())
  rule = hyperrule.schedule(num_examples)
  if phase.num_classes is None:
    phase.num_classes = num_classes
  if phase.lr is None:
    phase.lr = hyperrule.base_learning_rate(phase.batch_size, phase.base_lr, phase.base_batch)
  steps_per_epoch = num_examples / phase.batch_size
  if phase.total_steps is None:
    phase.total_steps = (math.ceil(phase.epochs * steps_per_epoch)
                         if phase.epochs else rule.total_steps)
  scale = phase.total_steps / rule.total_steps
  if phase.warmup_steps is None:
    phase.warmup_steps = (round(phase.warmup_epochs * steps_per_epoch)
                          if phase.warmup_epochs is not None else
                          round(rule.warmup_steps * scale))
  if phase.decay_steps is None:
    phase.decay_steps = (tuple(round(e * steps_per_epoch) for e in phase.decay_epochs)
                         if phase.decay_epochs is not None else
                         tuple(round(b * scale) for b in rule.decay_boundaries))
  if phase.mixup_alpha is None:
    phase.mixup_alpha = hyperrule.mixup_alpha(num_examples)
  if phase.resize is None or phase.crop is None:
    if image_hw is None:
      raise ValueError(f'Phase {phase.name}: set resize and crop, or give the image size.')
    resize, crop = hyperrule.resolution(image_hw)
    phase.resize = resize if phase.resize is None else phase.resize
    phase.crop = crop if phase.crop is None else phase.crop
  phase.num_examples = num_examples
  return phase


def learning_rate(phase: ml_collections.ConfigDict, step: int, plateau_scale: float = 1.0):
  """The learning rate of `phase` at its own step `step` (host side, a Python float)."""
  if phase.lr_schedule == 'hyperrule':
    schedule = hyperrule.Schedule(phase.warmup_steps, tuple(phase.decay_steps),
                                  phase.total_steps)
    return hyperrule.learning_rate(step, None, phase.lr, schedule=schedule)
  if step < phase.warmup_steps:
    return phase.lr * step / phase.warmup_steps
  return phase.lr * plateau_scale


@dataclasses.dataclass
class Plateau:
  """Reduce-on-plateau and early stopping from validation losses; a JSON-able state."""
  patience: int
  factor: float
  stop_patience: Optional[int]
  best: float = math.inf
  since_best: int = 0
  since_reduce: int = 0
  scale: float = 1.0

  def update(self, val_loss: float) -> bool:
    """Record one evaluation; True when training should stop early."""
    if val_loss < self.best:
      self.best, self.since_best, self.since_reduce = val_loss, 0, 0
      return False
    self.since_best += 1
    self.since_reduce += 1
    if self.since_reduce >= self.patience:
      self.scale *= self.factor
      self.since_reduce = 0
    return self.stop_patience is not None and self.since_best >= self.stop_patience
