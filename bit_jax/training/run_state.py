"""What a run is made of on disk and in memory between steps.

* `RunState`: where the run stands (phase, step, examples seen, finished phases' results,
  the plateau rule's state). It is what a checkpoint records beside the arrays, as JSON; with
  the input pipeline's `start_step` and rngs derived from steps, it makes resume exact.
* `Workdir`: the names of everything a run writes.
* the train state: the pytree the jitted step updates, `{'params', 'opt_state', 'step'}`.
"""

import dataclasses

import jax
import jax.numpy as jnp
from etils import epath

from bit_jax import models


@dataclasses.dataclass(frozen=True)
class RunState:
  phase: int = 0  # index of the phase in progress
  phase_step: int = 0  # its steps done
  phase_done: bool = False  # its final evaluation is in `results`
  global_step: int = 0
  examples_seen: int = 0
  elapsed_s: float = 0.0  # training wall time before this process started
  results: tuple = ()  # one dict per finished phase
  plateau: dict | None = None  # `plateau.Plateau` of the phase in progress
  # The plan's records (phases.json) the run is trained with: the checkpoint carries them, so
  # the resume check does not depend on a file beside it.
  plan: tuple = ()

  def to_json(self) -> dict:
    return {**dataclasses.asdict(self), 'results': list(self.results), 'plan': list(self.plan)}

  @classmethod
  def from_json(cls, record: dict) -> 'RunState':
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(
      **{k: tuple(v) if k in ('results', 'plan') else v for k, v in record.items() if k in fields}
    )


@dataclasses.dataclass(frozen=True)
class Workdir:
  """Every file of a run, under one directory (local or any filesystem epath reaches)."""

  root: epath.Path

  def __init__(self, root):
    object.__setattr__(self, 'root', epath.Path(root))

  metrics = property(lambda self: self.root / 'metrics.jsonl')
  tensorboard = property(lambda self: self.root / 'tensorboard')
  plan = property(lambda self: self.root / 'phases.json')  # every resolved value
  checkpoints = property(lambda self: self.root / 'checkpoints')
  results = property(lambda self: self.root / 'results.json')
  final = property(lambda self: self.root / 'final.npz')  # official layout + class names
  lock = property(lambda self: self.root / '.lock')
  plan_changes = property(lambda self: self.root / 'plan_changes.json')  # accepted on resume

  def phase_weights(self, phase_name: str) -> epath.Path:
    """A phase's final weights, like final.npz (which is the last phase's)."""
    return self.root / f'{phase_name}.npz'

  def train_ids(self, phase_name: str) -> epath.Path:
    return self.root / f'{phase_name}_train_ids.json'


def new_train_state(params, optimizer) -> dict:
  return {'params': params, 'opt_state': optimizer.init(params), 'step': jnp.zeros((), jnp.int32)}


def train_state_shapes(model, optimizer) -> dict:
  """The train state's shapes and dtypes, without computing anything (for restoring)."""
  return jax.eval_shape(lambda p: new_train_state(p, optimizer), models.param_shapes(model))
