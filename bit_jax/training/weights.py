"""The weights a phase starts from: random, a checkpoint, or the previous phase's, with the
one head rule the plan resolved (`head`: 'reset' gives a fresh zero head, 'keep' keeps it),
and the parameters `reinit` selects drawn afresh by the scratch initialiser."""

import functools

import jax
import jax.numpy as jnp
from flax import traverse_util

from bit_jax import models
from bit_jax.models import pretrained
from bit_jax.recipe import optim
from bit_jax.recipe.plan import Phase
from bit_jax.runtime.errors import ConfigError


def _zero_head(model) -> dict:
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), models.param_shapes(model)['head'])


# One jitted init per (model, crop) in a process: a sweep's scratch runs and a phase's `reinit`
# reuse its trace instead of tracing the model's init again (a second or more each).
@functools.partial(jax.jit, static_argnames=('model', 'crop'))
def _scratch_init(model, key, crop: int) -> dict:
  return model.init(key, jnp.zeros((1, crop, crop, 3)))['params']


def scratch_params(model, seed: int, crop: int) -> dict:
  """The scratch initialiser: what `init='scratch'` trains from with this `seed`."""
  return _scratch_init(model, jax.random.PRNGKey(seed), crop)


def reinitialised(params: dict, fresh: dict, regex: str) -> dict:
  """`params` with every leaf whose path `regex` matches taken from `fresh` instead."""
  mask = traverse_util.flatten_dict(optim.frozen_mask(params, regex, field='reinit'))
  flat, new = traverse_util.flatten_dict(params), traverse_util.flatten_dict(fresh)
  return traverse_util.unflatten_dict({p: new[p] if mask[p] else v for p, v in flat.items()})


def initial_params(phase: Phase, previous_params: dict | None) -> dict:
  """Parameters (on the host or default device) for the start of `phase`."""
  s = phase.settings
  params = _loaded_params(phase, previous_params)
  if s.reinit:
    params = reinitialised(params, scratch_params(phase.model(), s.seed, s.crop), s.reinit)
  return params


def _loaded_params(phase: Phase, previous_params: dict | None) -> dict:
  s = phase.settings
  model = phase.model()
  if s.init == 'scratch':
    return scratch_params(model, s.seed, s.crop)
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
