"""Learning-rate schedules of a phase, and the reduce-on-plateau / early-stopping rule.

* 'hyperrule': linear warmup, then /10 after each of `decay_steps` (the official strictness,
  see `hyperrule.learning_rate`), 0 from `total_steps` on;
* 'constant': linear warmup, then flat;
* 'plateau': linear warmup, then flat times `Plateau.scale`, which drops by `plateau_factor`
  after `plateau_patience` evaluations without a better validation loss.

The host computes the rate of every step as a Python float (see optim.py for why).
"""

import dataclasses
import math

from bit_jax import hyperrule

SCHEDULES = ('hyperrule', 'constant', 'plateau')


def learning_rate(phase, step: int, plateau_scale: float = 1.0) -> float:
  """The learning rate of a resolved phase (its settings) at its own step `step`."""
  if phase.lr_schedule == 'hyperrule':
    schedule = hyperrule.Schedule(phase.warmup_steps, tuple(phase.decay_steps), phase.total_steps)
    return hyperrule.learning_rate(step, None, phase.lr, schedule=schedule)
  if step < phase.warmup_steps:
    return phase.lr * step / phase.warmup_steps
  return phase.lr * plateau_scale


def describe(phase) -> str:
  """The whole schedule of a resolved phase in words: warmup, decays, total."""
  warmup = f'warmup {phase.warmup_steps} steps from 0' if phase.warmup_steps else 'no warmup'
  if phase.lr_schedule == 'hyperrule':
    after = ', '.join(map(str, phase.decay_steps))
    rest = f'/10 after steps {after}' if after else 'no decay'
  elif phase.lr_schedule == 'plateau':
    rest = (
      f'then x{phase.plateau_factor:g} after {phase.plateau_patience} evaluations without a '
      f'better val_loss'
    )
  else:
    rest = 'then constant'
  return (
    f'lr {phase.lr:.4g} ({phase.lr_schedule}): {warmup}, {rest}; {phase.total_steps} steps '
    f'of {phase.batch_size} in all'
  )


def hyperrule_note(phase, image_hw=None) -> str:
  """Which HyperRule regime the phase's data put it in, and where the config overrode it."""
  n = phase.num_examples
  rule = hyperrule.schedule(n)
  notes = [hyperrule.regime(n)]
  scale = phase.total_steps / rule.total_steps
  scaled = (
    round(rule.warmup_steps * scale),
    tuple(round(b * scale) for b in rule.decay_boundaries),
  )
  if phase.total_steps != rule.total_steps:
    notes.append(f'total_steps {phase.total_steps} from the config')
  if (phase.warmup_steps, tuple(phase.decay_steps)) == scaled and scale != 1:
    notes.append(f'warmup and decays scaled by {phase.total_steps}/{rule.total_steps}')
  elif (phase.warmup_steps, tuple(phase.decay_steps)) != scaled:
    notes.append('warmup/decay steps from the config')
  if phase.mixup_alpha != hyperrule.mixup_alpha(n):
    notes.append(f'MixUp {phase.mixup_alpha:g} from the config')
  if image_hw is not None:
    derived = hyperrule.resolution(image_hw)
    where = (
      ''
      if derived == (phase.resize, phase.crop)
      else f'; here {phase.resize}->{phase.crop} from the config'
    )
    notes.append(hyperrule.resolution_regime(image_hw) + where)
  return 'HyperRule: ' + '; '.join(notes)


@dataclasses.dataclass
class Plateau:
  """Reduce-on-plateau and early stopping from validation losses; a JSON-able state."""

  patience: int
  factor: float
  stop_patience: int | None
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
