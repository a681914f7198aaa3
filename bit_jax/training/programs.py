"""The jitted programs a phase trains with, built once per process for each set of inputs.

jax caches a traced, lowered and compiled program on the function object it was given. A phase
that made its own closures (`steps.make_train_step(model, optimizer, ...)`) would trace, lower
and compile its train step, its evaluation and its state builder again, even when an earlier
run in the same process had the same ones: a sweep's runs usually differ only in their data
(sizes, seeds, subsets), and for a small model those seconds are most of a run. So each program
here is keyed on exactly what it closes over (hashable values: the flax model, the optimizer's
settings, the loss, the device mesh), and equal keys share one jitted function and its compilations.
The caches are bounded: a process that trains many different models keeps the latest few.
"""

import functools

import jax

from bit_jax import models
from bit_jax.recipe import optim
from bit_jax.runtime.parallel import DataParallel
from bit_jax.training import steps
from bit_jax.training.run_state import new_train_state

_KEPT = 8  # programs of each kind kept per process


@functools.lru_cache(maxsize=_KEPT)
def optimizer(model, *, momentum: float, weight_decay: float, freeze: str):
  """`optim.make_optimizer` for `model`'s parameters: the same object for the same settings,
  so the programs that close over it are shared too."""
  return optim.make_optimizer(
    models.param_shapes(model), momentum=momentum, weight_decay=weight_decay, freeze=freeze
  )


@functools.lru_cache(maxsize=_KEPT)
def train_step(
  model, tx, parallel: DataParallel, *, loss: str, mixup_alpha: float, batch_split: int
):
  """`train_step(state, batch, lr, rng)` jitted over `parallel`'s mesh, the state donated."""
  return parallel.jit_train_step(
    steps.make_train_step(model, tx, loss=loss, mixup_alpha=mixup_alpha, batch_split=batch_split)
  )


@functools.lru_cache(maxsize=_KEPT)
def eval_step(model, parallel: DataParallel, *, loss: str):
  """`eval_step(params, batch)` jitted over `parallel`'s mesh: sums over the batch."""
  return parallel.jit_eval_step(steps.make_eval_step(model, loss=loss))


@functools.lru_cache(maxsize=_KEPT)
def train_state_builder(tx, parallel: DataParallel):
  """params -> the train state replicated over `parallel`'s mesh, in one program (eagerly,
  each leaf's zeros of the optimizer state would compile on its own)."""
  return jax.jit(lambda params: new_train_state(params, tx), out_shardings=parallel.replicated)
