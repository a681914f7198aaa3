"""Reduce-on-plateau and early stopping, from one monitored metric (`monitor`).

The lr of a phase with lr_schedule='plateau' is its `lr` times `Plateau.scale` (see
`hyperrule.learning_rate`); early stopping (`early_stopping_patience`) works with any schedule.
"""

import dataclasses
import math


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
