"""The weights a phase starts from: random, a checkpoint, or the previous phase's, with the
one head rule the plan resolved (`head`: 'reset' gives a fresh zero head, 'keep' keeps it)."""

import jax
import jax.numpy as jnp

from bit_jax import models, pretrained
from bit_jax.errors import ConfigError
from bit_jax.plan import Phase


def _zero_head(model) -> dict:
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), models.param_shapes(model)['head'])


def initial_params(phase: Phase, previous_params: dict | None) -> dict:
  """Parameters (on the host or default device) for the start of `phase`."""
  s = phase.settings
  model = phase.model()
  if s.init == 'scratch':
    return jax.jit(model.init)(jax.random.PRNGKey(s.seed), jnp.zeros((1, s.crop, s.crop, 3)))[
      'params'
    ]
  if s.init == 'previous':
    params = dict(previous_params)
    if s.head == 'reset':
      params['head'] = _zero_head(model)
    return params
  try:
    _, params = pretrained.load_pretrained(
      s.init, num_classes=s.num_classes, keep_head=s.head == 'keep'
    )
  except (FileNotFoundError, ValueError, RuntimeError) as e:
    raise ConfigError(f'Phase {s.name}: cannot load init={s.init!r}: {e}') from None
  return params
