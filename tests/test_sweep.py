"""Sweeps and the study configs.

Oracles: the weights of runs that stop at known points (a run's final.npz equals another's when
the phases in between freeze everything they could change), `model.init` (frozen parameters
never move), the subset ids each phase wrote, hand-computed learning rates of Prasad et al.'s
rule, and counting calls to `run.run`.
"""

import importlib.util
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bit_jax import models, pretrained, report, run, sweep
from conftest import REPO
from test_train import tiny_config

STUDIES = sorted((REPO / 'configs' / 'sweeps').glob('*.py'))


def load_study(path):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


HEAD_ONLY = dict(name='head', fraction=0.5, batch_size=16, lr=0.05, freeze='^(?!head/)',
                 total_steps=4)
BODY = dict(name='body', fraction=1.0, batch_size=32, lr=0.02, freeze='head/', total_steps=2)


def tiny_sweep():
  base = tiny_config(eval_every=0, checkpoint_every=0, keep_checkpoints=1)
  runs = (dict(name='head_only', tags={'kind': 'one phase'}, phases=(HEAD_ONLY,)),
          dict(name='grow', tags={'kind': 'two phases'}, phases=(HEAD_ONLY, BODY)),
          dict(name='again', init='{workdir}/head_only/final.npz', head='keep', freeze='.',
               total_steps=1))
  return ml_collections.ConfigDict(dict(
      base=base, runs=runs, report=dict(x='examples_seen', series='name', points='evals')))


def final_params(directory):
  return pretrained.read_npz(directory / 'final.npz')


def test_sweep_runs_phases_then_skips_finished_runs(tmp_path, monkeypatch):
  rows = sweep.run_sweep(tiny_sweep(), tmp_path, 'tiny')
  assert [r['name'] for r in rows] == ['head_only', 'grow', 'again']

  # Each phase got its own batch, lr, mask and a nested subset.
  head, body = json.loads((tmp_path / 'grow' / 'phases.json').read_text())
  assert (head['batch_size'], head['lr'], head['freeze']) == (16, 0.05, '^(?!head/)')
  assert (body['batch_size'], body['lr'], body['freeze']) == (32, 0.02, 'head/')
  ids = {p: set(json.loads((tmp_path / 'grow' / f'{p}_train_ids.json').read_text())['ids'])
         for p in ('head', 'body')}
  assert ids['head'] < ids['body'] and len(ids['body']) == body['num_examples']
  assert len(ids['head']) == head['num_examples'] == pytest.approx(len(ids['body']) / 2, abs=2)
  results = json.loads((tmp_path / 'grow' / 'results.json').read_text())
  assert [p['examples_seen'] for p in results['phases']] == [4 * 16, 4 * 16 + 2 * 32]

  # Phase 1 trained the head only; phase 2 started from its weights and trained all but the
  # head; init='{workdir}/...' loaded a checkpoint with its head (head='keep'), and
  # freeze='.' kept it bit for bit.
  one, two, again = (final_params(tmp_path / n) for n in ('head_only', 'grow', 'again'))
  model = models.ResNetV2(depth=14, width=0.5, num_classes=3)
  init = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))['params']
  init = pretrained.params_to_npz(jax.device_get(init))
  for key in one:
    is_head = key.startswith(pretrained.HEAD_KERNEL[:-len('kernel')])
    np.testing.assert_array_equal(again[key], one[key])
    assert np.array_equal(one[key], init[key]) != is_head, key
    assert np.array_equal(two[key], one[key]) == is_head, key
  assert not np.array_equal(one[pretrained.HEAD_KERNEL], 0)

  # The tables: one row per run, the swept fields and the measured columns.
  table = report.read_csv(tmp_path / 'results.csv')
  assert [r['name'] for r in table] == ['head_only', 'grow', 'again']
  assert list(table[0]) == ['name', 'kind', 'init', 'head', 'freeze', 'total_steps',
                            *report.MEASURED]
  grow = table[1]
  assert (grow['kind'], grow['steps'], grow['examples_seen']) == ('two phases', '6', '128')
  assert float(grow['compute_epochs']) == pytest.approx(128 / body['num_examples'], rel=1e-3)
  assert table[2]['init'] == '{workdir}/head_only/final.npz'
  assert len(report.read_csv(tmp_path / 'phases.csv')) == 4
  evals = [(r['phase'], r['step'], r['examples_seen'])      # eval_every=0: at phase ends
           for r in report.read_csv(tmp_path / 'evals.csv') if r['name'] == 'grow']
  assert evals == [('head', '4', '64'), ('body', '6', '128')]
  assert (tmp_path / 'tiny.png').stat().st_size > 0 and 'grow' in (
      tmp_path / 'results.md').read_text()

  # A second invocation trains nothing; a run without results.json is (re)started.
  calls = []
  monkeypatch.setattr(run, 'run',
                      lambda config, workdir, **_: calls.append((config, workdir)))
  assert sweep.run_sweep(tiny_sweep(), tmp_path, 'tiny') == rows and calls == []
  (tmp_path / 'again' / 'results.json').unlink()
  sweep.run_sweep(tiny_sweep(), tmp_path, 'tiny')
  [(config, workdir)] = calls
  assert workdir == tmp_path / 'again'
  assert config.init == str(tmp_path.resolve() / 'head_only' / 'final.npz')


def test_workdir_placeholder_is_filled_in_base_runs_and_phases(tmp_path):
  config = ml_collections.ConfigDict(dict(
      base=tiny_config(init='{workdir}/up/final.npz'), report={},
      runs=(dict(name='up', init='scratch'),
            dict(name='down', phases=({'name': 'a'}, {'name': 'b', 'init': '{workdir}/up/x'})))))
  up, down = (sweep.run_config(config, run, tmp_path) for run in sweep.check_runs(config))
  assert up.init == 'scratch'
  assert down.init == str(tmp_path.resolve() / 'up' / 'final.npz')
  assert down.phases[1]['init'] == str(tmp_path.resolve() / 'up' / 'x')


@pytest.mark.parametrize('runs,message', [
    ([dict(name='a'), dict(name='a')], 'unique name'),
    ([dict(name='a', init='{workdir}/b/final.npz'), dict(name='b')], 'not listed before'),
    ([dict(name='a', batchsize=3)], "unknown fields \\['batchsize'\\]"),
    ([dict(name='a', tags={'shots': 1})], "tags \\['shots'\\] named like config fields"),
])
def test_bad_sweep_configs_are_refused(runs, message):
  config = ml_collections.ConfigDict(dict(base=tiny_config(), runs=runs, report={}))
  with pytest.raises(sweep.SweepConfigError, match=message):
    sweep.check_runs(config)


def test_prasad_learning_rate_rule():
  growth = load_study(REPO / 'configs' / 'sweeps' / 'stepwise_growth.py')
  # λ = 0.32, b = 32: λ/b = 0.01 outside; (λ/10)/(n·b) = 0.001/n between.
  assert growth.prasad_learning_rate(0.32, 32, 1, outer=True) == pytest.approx(0.01)
  assert growth.prasad_learning_rate(0.32, 32, 2, outer=False) == pytest.approx(0.0005)
  assert growth.prasad_learning_rate(0.32, 32, 4, outer=False) == pytest.approx(0.00025)
  stepwise = {r['name']: r for r in growth.get_config('mini').runs}['stepwise']
  phases = stepwise['phases']
  assert [p['batch_size'] for p in phases] == [32, 64, 96, 128, 32]
  assert [p['fraction'] for p in phases] == [0.2, 0.4, 0.6, 0.8, 1.0]
  assert [p['lr'] for p in phases] == pytest.approx([0.01, 0.0005, 0.001 / 3, 0.00025, 0.01])


@pytest.mark.parametrize('path', STUDIES, ids=lambda p: p.stem)
def test_full_scale_study_is_the_miniature_with_other_sizes(path):
  """The same runs (fields, tags, phases) at both scales, apart from the miniature's upstream
  runs and the fields of its `target` (classes 5-9, shortened schedules)."""
  study = load_study(path)

  def structure(scale):
    config = study.get_config(scale)
    sweep.check_runs(config)
    scale_only = set(study.SCALES[scale]['target']) | {'name'}
    return config, sorted({json.dumps([sorted(set(r) - scale_only), sorted(r.get('tags', {})),
                                       [sorted(p) for p in r.get('phases', ())]])
                           for r in config.runs if not r['name'].startswith('upstream')})
  mini, mini_runs = structure('mini')
  full, full_runs = structure('full')
  assert mini_runs == full_runs
  sized = ('title', 'runs')     # the title names the scale; `runs` lists the sized runs
  assert ({k: v for k, v in mini.report.items() if k not in sized} ==
          {k: v for k, v in full.report.items() if k not in sized})
  assert full.base.model == 'R50x1' and mini.base.model == 'R14x0.5'
