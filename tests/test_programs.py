"""Runs in one process share their jitted programs when what the programs close over is equal
(bit_jax/training/programs.py): the second traces nothing and trains bit for bit the same."""

import numpy as np
import pytest
from test_train import tiny_config

from bit_jax.models import pretrained
from bit_jax.training import programs, run, steps

CACHED = (programs.optimizer, programs.train_step, programs.eval_step, programs.train_state_builder)


@pytest.fixture
def empty_caches():
  """Programs built here trace nothing of other tests', and leave nothing traced with the
  counting stand-in behind."""
  for cached in CACHED:
    cached.cache_clear()
  yield
  for cached in CACHED:
    cached.cache_clear()


def test_a_second_equal_run_traces_nothing_and_trains_the_same(tmp_path, monkeypatch, empty_caches):
  traces = []

  def counting_mixup(*args):
    traces.append(1)  # runs only while jax traces a train step
    return original(*args)

  original = steps.mixup
  monkeypatch.setattr(steps, 'mixup', counting_mixup)
  config = dict(total_steps=2, eval_every=0, checkpoint_every=0, log_every=1)
  first = run.run(tiny_config(**config), tmp_path / 'first')
  assert len(traces) == 1
  again = run.run(tiny_config(**config), tmp_path / 'again')
  assert len(traces) == 1, 'an equal run traced its train step again'
  assert first['final'] == again['final']
  a, b = (pretrained.read_npz(tmp_path / name / 'final.npz') for name in ('first', 'again'))
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
