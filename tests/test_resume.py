"""What a resume may change, and what a rerun leaves alone. Oracles: the bytes and times of
every file in the workdir, and the step a stopped run had reached."""

import numpy as np
import pytest
from test_robustness import StopAfter
from test_train import tiny_config

from bit_jax.models import pretrained
from bit_jax.runtime import files
from bit_jax.runtime.errors import ConfigError, Stopped
from bit_jax.training import run


def everything(workdir) -> dict:
  """Every file under `workdir` (the lock aside): its bytes and modification time."""
  return {
    str(p.relative_to(workdir)): (p.read_bytes(), p.stat().st_mtime_ns)
    for p in sorted(workdir.rglob('*'))
    if p.is_file() and p.name != '.lock'
  }


def stopped_at_step_6(workdir):
  config = tiny_config(eval_every=0, checkpoint_every=4)
  with pytest.raises(Stopped):
    run.run(config, workdir, stop=StopAfter(6))
  return config


def test_the_plan_travels_with_the_checkpoint(tmp_path):
  stopped_at_step_6(tmp_path)
  (tmp_path / 'phases.json').unlink()
  with pytest.raises(ConfigError, match='batch_size: 16 -> 32'):
    run.run(tiny_config(eval_every=0, checkpoint_every=4, batch_size=32), tmp_path)
  # An accepted total below the step reached is refused before anything is written.
  kept = everything(tmp_path)
  with pytest.raises(ConfigError, match='reached step 6; total_steps=4 would end it before'):
    run.run(
      tiny_config(eval_every=0, checkpoint_every=4, total_steps=4),
      tmp_path,
      accept_changes=('total_steps',),
    )
  assert everything(tmp_path) == kept
  results = run.run(tiny_config(eval_every=0, checkpoint_every=4), tmp_path)
  assert results['examples_seen'] == 12 * 16  # every step at the batch it was planned with


def test_a_finished_run_is_left_alone_and_its_phases_cannot_be_removed(tmp_path):
  two = ({'name': 'a'}, {'name': 'b', 'lr': 0.01})
  config = tiny_config(eval_every=0, checkpoint_every=4, total_steps=4, phases=two)
  results = run.run(config, tmp_path)
  final = pretrained.read_npz(tmp_path / 'final.npz')
  kept = everything(tmp_path)
  assert run.run(config, tmp_path) == results
  assert everything(tmp_path) == kept
  with pytest.raises(ConfigError, match='Phase b of .* has trained; it cannot be removed'):
    run.run(tiny_config(total_steps=4, phases=two[:1]), tmp_path, accept_changes=('phases',))
  assert everything(tmp_path) == kept
  # Killed while writing final.npz: the rerun writes it, and removes the killed write's litter.
  (tmp_path / 'final.npz').unlink()
  (tmp_path / 'results.json').unlink()
  litter = tmp_path / '.final.npz.0badc0de.tmp'
  litter.write_bytes(b'half a zip')
  again = run.run(config, tmp_path)
  assert again['final'] == results['final'] and not litter.exists()
  rewritten = pretrained.read_npz(tmp_path / 'final.npz')
  assert (
    all(np.array_equal(final[k], rewritten[k]) for k in final) and final.keys() == rewritten.keys()
  )


def test_a_rewrite_removes_the_leftovers_of_its_own_file_only(tmp_path):
  mine = [tmp_path / '.results.json.deadbeef.tmp', tmp_path / '.results.json.12345678.tmp']
  other = tmp_path / '.final.npz.deadbeef.tmp'
  for path in (*mine, other):
    path.write_text('torn')
  files.write_json(tmp_path / 'results.json', {'ok': 1})
  assert files.read_json(tmp_path / 'results.json') == {'ok': 1}
  assert not any(p.exists() for p in mine) and other.exists()
