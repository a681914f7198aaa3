"""Sweeps and the study configs.

Oracles: the weights of runs that stop at known points (a run's final.npz equals another's when
the phases in between freeze everything they could change), `model.init` (frozen parameters
never move), the subset ids each phase wrote, hand-computed learning rates of Prasad et al.'s
rule, and counting calls to `run.run`.
"""

import importlib.util
import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import REPO
from test_train import tiny_config

from bit_jax import models, report, sweep
from bit_jax.models import pretrained
from bit_jax.training import run

STUDIES = sorted((REPO / 'configs' / 'sweeps').glob('*.py'))


def load_study(path):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


HEAD_ONLY = dict(
  name='head', fraction=0.5, batch_size=16, lr=0.05, freeze='^(?!head/)', total_steps=4
)
BODY = dict(name='body', fraction=1.0, batch_size=32, lr=0.02, freeze='head/', total_steps=2)


def tiny_sweep():
  base = tiny_config(eval_every=0, checkpoint_every=0, keep_checkpoints=1)
  runs = (
    dict(name='head_only', tags={'kind': 'one phase'}, phases=(HEAD_ONLY,)),
    dict(name='grow', tags={'kind': 'two phases'}, phases=(HEAD_ONLY, BODY)),
    dict(
      name='again', init='{workdir}/head_only/final.npz', head='keep', freeze='.', total_steps=1
    ),
  )
  return ml_collections.ConfigDict(
    dict(base=base, runs=runs, report=dict(x='examples_seen', series='name', points='evals'))
  )


def final_params(directory):
  return pretrained.read_npz(directory / 'final.npz')


def test_sweep_runs_phases_then_skips_finished_runs(tmp_path, monkeypatch):
  rows = sweep.run_sweep(tiny_sweep(), tmp_path, 'tiny')
  assert [r['name'] for r in rows] == ['head_only', 'grow', 'again']

  # Each phase got its own batch, lr, mask and a nested subset.
  head, body = json.loads((tmp_path / 'grow' / 'phases.json').read_text())
  assert (head['batch_size'], head['lr'], head['freeze']) == (16, 0.05, '^(?!head/)')
  assert (body['batch_size'], body['lr'], body['freeze']) == (32, 0.02, 'head/')
  ids = {
    p: set(json.loads((tmp_path / 'grow' / f'{p}_train_ids.json').read_text())['ids'])
    for p in ('head', 'body')
  }
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
    is_head = key.startswith(pretrained.HEAD_KERNEL[: -len('kernel')])
    np.testing.assert_array_equal(again[key], one[key])
    assert np.array_equal(one[key], init[key]) != is_head, key
    assert np.array_equal(two[key], one[key]) == is_head, key
  assert not np.array_equal(one[pretrained.HEAD_KERNEL], 0)

  # The tables: one row per run, the swept fields and the measured columns.
  table = report.read_csv(tmp_path / 'results.csv')
  assert [r['name'] for r in table] == ['head_only', 'grow', 'again']
  assert list(table[0]) == [
    'name',
    'seed_index',
    'kind',
    'init',
    'head',
    'freeze',
    'total_steps',
    *report.MEASURED,
  ]
  grow = table[1]
  assert (grow['kind'], grow['steps'], grow['examples_seen']) == ('two phases', '6', '128')
  assert float(grow['compute_epochs']) == pytest.approx(128 / body['num_examples'], rel=1e-3)
  assert table[2]['init'] == '{workdir}/head_only/final.npz'
  assert len(report.read_csv(tmp_path / 'phases.csv')) == 4
  evals = [
    (r['phase'], r['step'], r['examples_seen'])  # eval_every=0: at phase ends
    for r in report.read_csv(tmp_path / 'evals.csv')
    if r['name'] == 'grow'
  ]
  assert evals == [('head', '4', '64'), ('body', '6', '128')]
  assert (tmp_path / 'tiny.png').stat().st_size > 0 and 'grow' in (
    tmp_path / 'results.md'
  ).read_text()

  # A second invocation trains nothing; a run without results.json is (re)started.
  calls = []
  monkeypatch.setattr(run, 'run', lambda config, workdir, **_: calls.append((config, workdir)))
  assert sweep.run_sweep(tiny_sweep(), tmp_path, 'tiny') == rows and calls == []
  (tmp_path / 'again' / 'results.json').unlink()
  sweep.run_sweep(tiny_sweep(), tmp_path, 'tiny')
  [(config, workdir)] = calls
  assert workdir == tmp_path / 'again'
  assert config.init == str(tmp_path.resolve() / 'head_only' / 'final.npz')


def test_workdir_placeholder_is_filled_in_base_runs_and_phases(tmp_path):
  config = ml_collections.ConfigDict(
    dict(
      base=tiny_config(init='{workdir}/up/final.npz'),
      report={},
      runs=(
        dict(name='up', init='scratch'),
        dict(name='down', phases=({'name': 'a'}, {'name': 'b', 'init': '{workdir}/up/x'})),
      ),
    )
  )
  first = {r.name: r.config for r in reversed(sweep.repeats(config, tmp_path))}  # seed 0
  up, down = first['up'], first['down']
  assert up.init == 'scratch'
  assert down.init == str(tmp_path.resolve() / 'up' / 'final.npz')
  assert down.phases[1]['init'] == str(tmp_path.resolve() / 'up' / 'x')


@pytest.mark.parametrize(
  'runs,message',
  [
    ([dict(name='a'), dict(name='a')], 'unique name'),
    ([dict(name='a', init='{workdir}/b/final.npz'), dict(name='b')], 'not listed before'),
    ([dict(name='a', batchsize=3)], "unknown fields \\['batchsize'\\]"),
    ([dict(name='a', tags={'shots': 1})], "tags \\['shots'\\] named like config fields"),
  ],
)
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
    return config, sorted(
      {
        json.dumps(
          [
            sorted(set(r) - scale_only),
            sorted(r.get('tags', {})),
            [sorted(p) for p in r.get('phases', ())],
          ]
        )
        for r in config.runs
        if not r['name'].startswith('upstream')
      }
    )

  mini, mini_runs = structure('mini')
  full, full_runs = structure('full')
  assert mini_runs == full_runs
  sized = ('title', 'runs', 'compare')  # the title names the scale; the others name runs
  assert {k: v for k, v in mini.report.items() if k not in sized} == {
    k: v for k, v in full.report.items() if k not in sized
  }
  shape = lambda config: [(c['column'], c.get('by'), c.get('y')) for c in config.report.compare]
  assert shape(mini) == shape(full) and mini.seeds == full.seeds == 5
  assert full.base.model == 'R50x1' and mini.base.model == 'R14x0.5'


# --- repeats, statistics and shards ---------------------------------------------------------


def test_summary_interval_is_students_t():
  from scipy import stats as scipy_stats

  from bit_jax.studies import stats

  values = [0.52, 0.55, 0.49, 0.58, 0.51]
  got = stats.summary(values)
  low, high = scipy_stats.t.interval(0.95, 4, loc=np.mean(values), scale=scipy_stats.sem(values))
  assert got['n'] == 5 and got['mean'] == pytest.approx(np.mean(values))
  assert got['std'] == pytest.approx(np.std(values, ddof=1))
  assert (got['ci_low'], got['ci_high']) == pytest.approx((low, high))
  assert stats.summary([0.5])['ci_low'] is None


def test_paired_differences_from_a_results_csv_match_a_hand_computation(tmp_path):
  # Two series at two sizes, three seeds; at size 1 the differences are 2, 3 and 2.5 points.
  rows = [
    dict(name=f'{series}_{size}', seed_index=k, upstream=series, per_class=size, top1=v)
    for series, size, values in [
      ('big', 1, (0.52, 0.63, 0.725)),
      ('small', 1, (0.5, 0.6, 0.7)),
      ('big', 5, (0.8, 0.7, 0.9)),
      ('small', 5, (0.8, 0.7, 0.9)),
    ]
    for k, v in enumerate(values)
  ]
  report.write_csv(tmp_path / 'results.csv', rows, list(rows[0]))
  read = report.read_csv(tmp_path / 'results.csv')  # as strings, as a user's file
  at_1, at_5 = report.compare(read, dict(column='upstream', a='big', b='small', by='per_class'))
  # By hand: differences 0.02, 0.03, 0.025 -> mean 0.025, sd 0.005, n 3; t(0.975, 2) =
  # 4.302653 from the table; half-width 4.302653 * 0.005 / sqrt(3) = 0.0124207.
  assert (at_1['at'], at_1['n']) == ('1', 3)
  assert at_1['mean'] == pytest.approx(0.025) and at_1['std'] == pytest.approx(0.005)
  assert at_1['ci_low'] == pytest.approx(0.025 - 0.0124207, abs=1e-6)
  assert at_1['ci_high'] == pytest.approx(0.025 + 0.0124207, abs=1e-6)
  assert at_1['significant'] and at_1['p_value'] < 0.05  # the interval excludes 0
  assert at_5['mean'] == 0 and not at_5['significant']  # identical: no difference


def test_an_evaluation_curve_plot_draws_every_seed_in_its_series_colour(tmp_path, monkeypatch):
  figures = []
  monkeypatch.setattr(report.plt, 'close', figures.append)
  rows = [
    dict(name=name, seed_index=k, examples_seen=e * (k + 1), top1=0.5 + 0.01 * e)
    for name in ('stepwise', 'baseline')
    for k in range(3)
    for e in range(1, 4)
  ]
  report.plot(rows, tmp_path / 'curves.png', x='examples_seen', series='name', repeats='seed_index')
  assert (tmp_path / 'curves.png').stat().st_size > 0
  [axes] = figures[0].axes
  lines = axes.get_lines()
  assert len(lines) == 6 and all(len(line.get_xdata()) == 3 for line in lines)
  assert len({line.get_color() for line in lines}) == 2  # one colour per series
  assert [t.get_text() for t in axes.get_legend().get_texts()] == ['stepwise', 'baseline']


def test_a_comparison_that_matches_two_runs_on_one_side_is_refused():
  # The upstream run has a batch size too: pairing 'batch_size 64' with it would be wrong.
  rows = [
    dict(name='upstream', seed_index=0, batch_size=64, top1=0.5),
    dict(name='batch16', seed_index=0, batch_size=16, top1=0.6),
    dict(name='batch64', seed_index=0, batch_size=64, top1=0.61),
  ]
  with pytest.raises(ValueError, match="'upstream', 'batch64'"):
    report.compare(rows, dict(column='batch_size', a=64, b=16))


def test_a_sweep_with_seeds_repeats_every_run_and_reports_intervals(tmp_path):
  import tiny_sweep
  from scipy import stats as scipy_stats

  config = tiny_sweep.get_config()
  rows = sweep.run_sweep(config, tmp_path, 'tiny')
  assert sorted((r['name'], r['seed_index']) for r in rows) == [
    (n, k) for n in ('first', 'second') for k in range(3)
  ]
  # Repeat k: seed + k and subset_seed + k, so the 20-shot subsets differ between repeats.
  ids = [
    json.loads((tmp_path / 'first' / f'seed{k}' / 'phase0_train_ids.json').read_text())
    for k in range(3)
  ]
  assert [i['metadata']['seed'] for i in ids] == [0, 1, 2]
  assert len({tuple(i['ids']) for i in ids}) == 3
  # Each transfer repeat started from the same repeat of the upstream run.
  plans = [
    json.loads((tmp_path / 'second' / f'seed{k}' / 'phases.json').read_text())[0] for k in range(3)
  ]
  assert [p['init'] for p in plans] == [
    str(tmp_path.resolve() / 'first' / f'seed{k}' / 'final.npz') for k in range(3)
  ]
  summary = {r['name']: r for r in report.read_csv(tmp_path / 'summary.csv')}
  for name in ('first', 'second'):
    values = [r['top1'] for r in rows if r['name'] == name]
    low, high = (
      scipy_stats.t.interval(0.95, 2, loc=np.mean(values), scale=scipy_stats.sem(values))
      if np.std(values)
      else (np.mean(values),) * 2
    )
    assert summary[name]['n'] == '3'
    assert float(summary[name]['top1_ci_low']) == pytest.approx(low, abs=1e-4)
    assert float(summary[name]['top1_ci_high']) == pytest.approx(high, abs=1e-4)
  [comparison] = report.read_csv(tmp_path / 'comparisons.csv')
  assert (comparison['a'], comparison['b'], comparison['n']) == ('transfer', 'scratch', '3')
  text = (tmp_path / 'results.md').read_text()
  assert 'Paired differences' in text and '95% interval' in text


def test_two_shard_jobs_share_one_sweep_and_train_every_repeat_once(tmp_path):
  import subprocess
  import sys

  from conftest import REPO

  command = [
    sys.executable,
    '-m',
    'bit_jax.sweep',
    f'--config={REPO / "tests" / "configs" / "tiny_sweep.py"}',
    f'--workdir={tmp_path}',
  ]
  env = {**os.environ, 'PYTHONPATH': str(REPO / 'tests' / 'configs')}
  jobs = [
    subprocess.Popen(
      command + [f'--shard={i}/2'],
      cwd=REPO,
      env=env,
      text=True,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
    )
    for i in range(2)
  ]
  outputs = [job.communicate(timeout=600)[0] for job in jobs]
  assert [job.returncode for job in jobs] == [0, 0], outputs
  trained = [
    line.split('] ', 2)[-1]
    for out in outputs
    for line in out.splitlines()
    if line.startswith('[shard ')
    and ' seed ' in line
    and 'skipped' not in line
    and 'another job' not in line
  ]
  assert sorted(trained) == sorted(
    f'{n} seed {k}' for n in ('first', 'second') for k in range(3)
  ), outputs  # each exactly once
  assert not any('Resuming' in out for out in outputs)
  assert len(report.read_csv(tmp_path / 'results.csv')) == 6  # the report merges all


def test_every_miniature_starts_its_target_runs_from_a_zero_head(tmp_path, shared_tfds):
  """The published miniature numbers were once made with the upstream's classifier carried
  into the target runs; each study's target phases must start from a fresh zero head."""
  from bit_jax.recipe import plan
  from bit_jax.training import weights

  model = models.ResNetV2(units=(1, 1, 1, 1), width=0.5, num_classes=5)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))['params']
  params['head']['kernel'] = params['head']['kernel'] + 1.0  # a trained 5-class head
  for path in STUDIES:
    workdir = tmp_path / path.stem
    everything = sweep.repeats(load_study(path).get_config('mini'), workdir)
    from_upstream = [r for r in everything if str(workdir) in r.config.init]
    assert from_upstream, path.stem
    assert not any(r.config.get('head') == 'keep' for r in from_upstream)
    repeat = from_upstream[0]
    os.makedirs(os.path.dirname(repeat.config.init), exist_ok=True)
    pretrained.save_npz(repeat.config.init, params)  # the upstream's final.npz
    first = plan.resolve(repeat.config).phases[0]
    assert first.settings.head == 'reset', path.stem
    start = weights.initial_params(first, None)
    np.testing.assert_array_equal(start['head']['kernel'], 0)
    np.testing.assert_array_equal(
      start['block1']['unit01']['conv1']['kernel'], params['block1']['unit01']['conv1']['kernel']
    )


# --- the papers' own protocols ----------------------------------------------------------------


def _runs(config):
  return {r['name']: r for r in sweep.check_runs(config)}


@pytest.mark.parametrize('path', STUDIES, ids=lambda p: p.stem)
def test_paper_miniature_is_the_paper_protocol_with_other_sizes(path):
  """Both run the same conditions with the same fields, phases and report; only sizes (and the
  miniature's own upstream, where it has no checkpoint offline) differ."""
  study = load_study(path)
  full, mini = study.get_config('paper'), study.get_config('paper,mini')

  def structure(config):
    return sorted(
      {
        json.dumps([sorted(r.get('tags', {})), [sorted(p) for p in r.get('phases', ())]])
        for name, r in _runs(config).items()
        if not name.startswith(('upstream', 'source'))
      }
    )

  assert structure(full) == structure(mini)
  assert sorted(full.report) == sorted(mini.report) and ('swap' in full) == ('swap' in mini)
  assert full.seeds == mini.seeds == 5 and mini.base.model == 'R14x0.5'


def test_ahmad_shin_protocol_keeps_the_lr_fixed_and_watches_validation_accuracy():
  study = load_study(REPO / 'configs' / 'sweeps' / 'batch_size.py')
  config = study.get_config('paper,cifar100')
  base = config.base
  assert (base.dataset, base.monitor, base.lr_schedule, base.dropout) == (
    'cifar100',
    'val_top1',
    'plateau',
    0.5,
  )
  assert (base.val_fraction, base.lr_scaling, base.init, base.crop) == (
    0.1,
    'none',
    'BiT-S-R50x1',
    160,
  )
  runs = [r for name, r in _runs(config).items() if name.startswith('batch')]
  assert [r['batch_size'] for r in runs] == [32, 64, 128, 256, 512]
  for run_ in runs:  # the same rates and lengths at every batch size
    assert [(p['lr'], p['epochs']) for p in run_['phases']] == [(1e-2, 20.0), (1e-4, 100.0)]
    assert run_['eval_every'] == math.ceil(45_000 / run_['batch_size'])  # once an epoch
  assert study.get_config('full,cifar100').base.dataset == 'cifar100'


def test_prasad_protocol_is_fixed_epochs_from_scratch_with_eq9():
  from bit_jax.studies import stepwise

  config = load_study(REPO / 'configs' / 'sweeps' / 'stepwise_growth.py').get_config('paper')
  base, runs = config.base, _runs(config)
  assert (base.dataset, base.init, base.preprocess, base.crop) == (
    'cifar100',
    'scratch',
    'none',
    224,
  )
  assert (base.weight_decay, base.momentum, base.lr_schedule, base.decay_factor) == (
    1e-4,
    0.9,
    'step',
    0.1,
  )
  assert base.val_fraction is None and base.early_stopping_patience is None
  phases = runs['stepwise']['phases']
  assert [(p['epochs'], p['decay_epochs']) for p in phases] == [(20.0, (10.0,))] * 5
  assert [p['lr'] for p in phases] == list(stepwise.learning_rates(0.001, 128, (1, 2, 3, 4, 1)))
  baseline = runs['baseline']
  assert (baseline['epochs'], baseline['decay_epochs']) == (100.0, (30.0, 60.0, 90.0))
  assert 'top5' in config.report.compare[0]['y']
  # The claimed saving: 20 x (0.2 + 0.4 + 0.6 + 0.8 + 1.0) = 60 epochs of O against 100.
  assert sum(p['epochs'] * p['fraction'] for p in phases) == pytest.approx(60.0)


def test_soekhoe_protocol_transfers_and_freezes_the_first_n_and_reinitialises_the_rest():
  study = load_study(REPO / 'configs' / 'sweeps' / 'frozen_layers.py')
  config = study.get_config('paper')
  a, b = config.swap.halves
  assert len(a) == len(b) == 100 and not set(a) & set(b)
  runs = _runs(config)
  assert runs['source_AB']['classes'] == a and runs['source_BA']['classes'] == b
  assert config.base.init == 'scratch' and 'init' not in runs['source_AB']  # from scratch
  snt2 = runs['snt2_500_BA']
  assert snt2['classes'] == a and snt2['init'] == '{workdir}/source_BA/final.npz'
  assert snt2['freeze'] == '^root_block/|^block1/'
  assert snt2['reinit'] == '^block2/|^block3/|^block4/|^(pre_head_norm|head)/'
  assert runs['base_50_AB']['init'] == 'scratch' and not runs['ftall_50_AB'].get('freeze')
  assert {r['tags']['frozen'] for n, r in runs.items() if n.endswith('_300_AB')} == {
    'base',
    'FTall',
    *(f'SnT{n}' for n in range(1, 6)),
  }
  assert (config.base.total_steps, config.base.model) == (10_000, 'R152x1')
  assert len(study.get_config('paper,cifar100').swap.halves[0]) == 50


def test_li_scratch_arm_trains_with_the_upstream_recipe():
  study = load_study(REPO / 'configs' / 'sweeps' / 'dataset_size_upstream.py')
  paper, bit = _runs(study.get_config('paper')), _runs(study.get_config('full'))
  assert paper['bit_m_10'] == bit['bit_m_10']  # the transfer arms are the HyperRule's
  scratch = paper['scratch_all']
  assert scratch['lr'] == pytest.approx(0.03 * 512 / 256) and scratch['weight_decay'] == 1e-4
  assert scratch['total_steps'] == max(math.ceil(90 * 50_000 / 512), 10_000)
  assert scratch['decay_steps'] == tuple(
    round(scratch['total_steps'] * e / 90) for e in (30, 60, 80)
  )
  mini = _runs(study.get_config('paper,mini'))['scratch_5']
  assert (mini['lr'], mini['total_steps'], mini['batch_size']) == (0.03, 300, 64)


@pytest.mark.slow
def test_a_swapped_class_split_trains_both_directions_and_reports_their_mean(tmp_path):
  """Soekhoe's design end to end on digits: a source per half, SnT-2 on the other half from
  that source's weights (frozen and re-initialised as asked), the mean of both directions."""
  from bit_jax.models import layers

  base = tiny_config(eval_every=0, checkpoint_every=0, keep_checkpoints=1, total_steps=2)
  stages = layers.layers(models.Architecture.from_name('R14x0.5'))
  runs = (
    dict(name='source', classes='{source}'),
    dict(
      name='snt2',
      classes='{target}',
      init='{workdir}/source_{direction}/final.npz',
      tags={'frozen': 'SnT2'},
      **layers.transfer_first(2, stages),
    ),
  )
  config = ml_collections.ConfigDict(
    dict(
      base=base,
      runs=runs,
      swap=dict(halves=((0, 1, 2), (3, 4, 5))),
      report=dict(x='frozen', compare=(dict(column='frozen', a='SnT2', b='SnT2'),)),
    )
  )
  sweep.run_sweep(config, tmp_path, 'swap')
  source, target = final_params(tmp_path / 'source_BA'), final_params(tmp_path / 'snt2_AB')
  assert json.loads((tmp_path / 'snt2_AB' / 'phases.json').read_text())[0]['classes'] == [3, 4, 5]
  root = 'resnet/root_block/standardized_conv2d/kernel'
  np.testing.assert_array_equal(final_params(tmp_path / 'source_AB')[root], target[root])
  assert not np.array_equal(source[root], target[root])  # each direction its own source
  each = {r['name']: r for r in report.read_csv(tmp_path / 'directions' / 'results.csv')}
  [mean] = [r for r in report.read_csv(tmp_path / 'results.csv') if r['name'] == 'snt2']
  assert mean['direction'] == 'mean' and mean['classes'] == ''
  halves = [float(each[f'snt2_{d}']['top1']) for d in ('AB', 'BA')]
  assert float(mean['top1']) == pytest.approx(sum(halves) / 2)
