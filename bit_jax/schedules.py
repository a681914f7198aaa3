"""Learning-rate schedules of a phase, and the reduce-on-plateau / early-stopping rule.

* 'hyperrule': linear warmup, then /10 after each of `decay_steps` (the official strictness,
  see `hyperrule.learning_rate`), 0 from `total_steps` on;
* 'constant': linear warmup, then flat;
* 'plateau': linear warmup, then flat times `Plateau.scale`, which drops by `plateau_factor`
  after `plateau_patience` evaluations without a better `monitor` (validation loss, lower
  is better, or validation top-1/top-5 accuracy, higher is better);
* 'step': linear warmup, then times `decay_factor` (γ) at each of `decay_steps`, and on
  after `total_steps` (a plain step decay, e.g. every 10 epochs with `decay_epochs`; unlike
  'hyperrule' it never drops to 0).

The host computes the rate of every step as a Python float (see optim.py for why).
"""

import dataclasses
import math

from bit_jax import hyperrule

SCHEDULES = ('hyperrule', 'constant', 'plateau', 'step')

# The metrics that may drive reduce-on-plateau and early stopping, and which way is better.
# Only the validation holdout's: choosing when to stop on the test set would report a number
# the test set has already selected.


def learning_rate(phase, step: int, plateau_scale: float = 1.0) -> float:
  """The learning rate of a resolved phase (its settings) at its own step `step`."""
  if phase.lr_schedule == 'hyperrule':
    schedule = hyperrule.Schedule(phase.warmup_steps, tuple(phase.decay_steps), phase.total_steps)
    return hyperrule.learning_rate(step, None, phase.lr, schedule=schedule)
  if step < phase.warmup_steps:
    return phase.lr * step / phase.warmup_steps
  if phase.lr_schedule == 'step':
    return phase.lr * phase.decay_factor ** sum(step >= b for b in phase.decay_steps)
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
  """Reduce-on-plateau and early stopping from one monitored metric; a JSON-able state.

  `mode` 'min': a lower value is better (a loss); 'max': a higher one (an accuracy). As
  Keras' ReduceLROnPlateau/EarlyStopping with min_delta=0 and no cooldown: only a strictly
  better value resets the counts; the lr is multiplied by `factor` every `patience`
  evaluations without one, and training stops after `stop_patience` of them."""

  patience: int
  factor: float
  stop_patience: int | None
  mode: str = 'min'
  best: float = math.inf  # the worst value of a 'min' metric; -inf for 'max' (post_init)
  since_best: int = 0
  since_reduce: int = 0
  scale: float = 1.0

  def __post_init__(self):
    if self.mode not in ('min', 'max'):
      raise ValueError(f"Expected mode 'min' or 'max'; got {self.mode!r}.")
    if self.mode == 'max' and self.best == math.inf:
      self.best = -math.inf

  def update(self, value: float) -> bool:
    """Record one evaluation; True when training should stop early."""
    if value < self.best if self.mode == 'min' else value > self.best:
      self.best, self.since_best, self.since_reduce = value, 0, 0
      return False
    self.since_best += 1
    self.since_reduce += 1
    if self.since_reduce >= self.patience:
      self.scale *= self.factor
      self.since_reduce = 0
    return self.stop_patience is not None and self.since_best >= self.stop_patience
