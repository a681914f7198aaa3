"""The training shell, end to end on real (bundled or shared) data.

Oracles: an uninterrupted run (for kill -9 and SIGTERM resume), a one-process run (for two
processes), chance accuracy (for learning on real CIFAR-10).
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import in_process
import numpy as np
import pytest
from conftest import REPO, user_environment
from test_settings import field_rows

from bit_jax.models import pretrained
from bit_jax.recipe import plan as plan_lib
from bit_jax.runtime import metric_names
from bit_jax.runtime.errors import ConfigError, RunError
from bit_jax.training import run, weights

TINY = REPO / 'tests' / 'configs' / 'tiny.py'


def tiny_config(**overrides):
  sys.path.insert(0, str(TINY.parent))
  import tiny  # noqa: E402  (a config file, loaded as config_flags would)

  config = tiny.get_config()
  config.update(overrides)
  return config


def losses(workdir):
  lines = [json.loads(x) for x in (workdir / 'metrics.jsonl').read_text().splitlines()]
  return {r['step']: r['loss'] for r in lines if 'loss' in r}


def test_tiny_run_writes_everything_and_resume_of_a_finished_run_is_a_no_op(tmp_path):
  results = run.run(tiny_config(), tmp_path)
  assert results['steps'] == 12 and results['examples_seen'] == 12 * 16
  assert results['final']['test_examples'] > 0 and 0 <= results['final']['test_top1'] <= 1
  assert json.loads((tmp_path / 'results.json').read_text()) == results
  [phase] = json.loads((tmp_path / 'phases.json').read_text())
  assert (phase['total_steps'], phase['mixup_alpha'], phase['num_classes']) == (12, 0.0, 3)
  assert sorted(losses(tmp_path)) == [2, 4, 6, 8, 10, 12]
  ids = json.loads((tmp_path / 'phase0_train_ids.json').read_text())
  assert ids['num_ids'] == phase['num_examples']
  again = run.run(tiny_config(), tmp_path)
  assert again['steps'] == 12 and again['final'] == results['final']
  top_level, per_phase = documented_results_keys()
  assert set(top_level) == set(results) == set(metric_names.RESULTS_KEYS)
  always = {'phase', 'steps', 'examples_seen', 'test_top1', 'test_top5', 'test_loss'}
  assert always | {'test_examples'} <= set(per_phase)  # README promises them ...
  assert set(results['final']) == always | {'test_examples'}  # ... and a run writes them


def documented_results_keys() -> tuple[list[str], list[str]]:
  """The keys README.md's "results.json" section documents: (top level, a phase's result)."""
  section = (REPO / 'README.md').read_text().split('### results.json')[1].split('\n#')[0]
  bullets = section.split('\n- ')[1:3]
  keys = [re.findall(r'`([a-z0-9_]+)`', b.split('\n\n')[0]) for b in bullets]
  return keys[0], keys[1]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  blow_up = (
    {'name': 'good', 'total_steps': 4},
    {'name': 'bad', 'lr': 1e30, 'warmup_steps': 0, 'decay_steps': ()},
  )
  with pytest.raises(RunError, match='last good checkpoint is step 4'):
    run.run(tiny_config(phases=blow_up, checkpoint_every=2), tmp_path)
  with pytest.raises(RunError, match='no checkpoint was saved yet'):
    run.run(tiny_config(lr=1e30, warmup_steps=0, decay_steps=()), tmp_path / 'fresh')


@pytest.mark.parametrize(
  'overrides,message',
  [
    (dict(batch_size=13), r'batch_size=13 does not divide over \d+ devices'),
    (dict(dataset='no_such_dataset'), "cannot load dataset 'no_such_dataset'"),
    (dict(init='/nonexistent.npz'), 'cannot use init'),
    (dict(model='R34x1'), "Unknown model 'R34x1'"),
    (dict(freeze='stage9'), 'matches no parameter'),
  ],
)
def test_bad_input_gives_a_clear_message(tmp_path, overrides, message):
  with pytest.raises(ConfigError, match=message):
    run.run(tiny_config(**overrides), tmp_path)


def command(workdir, *flags, env=None):
  return subprocess.Popen(
    [sys.executable, '-m', 'bit_jax.train', f'--config={TINY}', f'--workdir={workdir}', *flags],
    cwd=REPO,
    env={**os.environ, **(env or {})},
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )


def wait_for_checkpoint(workdir, proc, timeout=240):
  deadline = time.time() + timeout
  while time.time() < deadline:
    steps = [int(p.name) for p in (workdir / 'checkpoints').glob('*') if p.name.isdigit()]
    if steps:
      return max(steps)
    assert proc.poll() is None, proc.stdout.read()
    time.sleep(0.2)
  raise TimeoutError('no checkpoint appeared')


LONGER = ('--config.total_steps=40', '--config.eval_every=0', '--config.log_every=4')


@pytest.mark.slow
def test_interrupted_run_finishes_like_an_uninterrupted_one(tmp_path):
  # kill -9 with a save every step and only one checkpoint kept: the kill most likely lands
  # while a checkpoint is being written, the window where the newest one must not be lost.
  # (SIGTERM's stop-save-resume ends bit-identical too: test_gcs.py, on a bucket.)
  # The reference, the same run never stopped, trains beside it (checkpoint settings do not
  # change a run).
  uninterrupted = tmp_path / 'reference'
  reference = command(uninterrupted, *LONGER)
  flags = LONGER + ('--config.keep_checkpoints=1', '--config.checkpoint_every=1')
  interrupted = command(tmp_path / 'run', *flags)
  wait_for_checkpoint(tmp_path / 'run', interrupted)
  interrupted.send_signal(signal.SIGKILL)
  interrupted.communicate(timeout=120)
  assert not (tmp_path / 'run' / 'results.json').exists(), 'finished before the signal'
  resumed = command(tmp_path / 'run', *flags)
  output = resumed.communicate(timeout=300)[0]
  assert resumed.returncode == 0 and 'Resuming from' in output, output
  resumed_at = int(output.split('(step ')[1].split(':')[0])
  assert reference.wait(300) == 0, reference.stdout.read()

  expected = json.loads((uninterrupted / 'results.json').read_text())
  got = json.loads((tmp_path / 'run' / 'results.json').read_text())
  assert got['final'] == expected['final'] and got['steps'] == expected['steps'] == 40
  reference_losses, resumed_losses = losses(uninterrupted), losses(tmp_path / 'run')
  # Logged losses are means over the steps since the previous log line; compare the windows
  # that do not straddle the restart.
  log_every = 4
  comparable = [
    step
    for step in resumed_losses
    if step % log_every == 0 and (step <= resumed_at or step - log_every >= resumed_at)
  ]
  assert len(comparable) >= 8
  for step in comparable:
    assert resumed_losses[step] == reference_losses[step], step


def free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
  flags = ('--config.data_shards=2', '--config.lr=0.005', '--config.batch_size=16')
  two_devices = {
    'XLA_FLAGS': re.sub(r'device_count=\d+', 'device_count=2', os.environ['XLA_FLAGS'])
  }
  address = f'127.0.0.1:{free_port()}'
  procs = [
    command(
      tmp_path / 'two',
      *flags,
      f'--coordinator_address={address}',
      '--num_processes=2',
      f'--process_id={i}',
      env=two_devices,
    )
    for i in range(2)
  ]
  try:
    # The reference, meanwhile: one process (this one, with conftest's devices) reading both
    # data shards as the two processes do. Device counts change only the order of float32
    # reductions.
    run.run(tiny_config(data_shards=2, lr=0.005, batch_size=16), tmp_path / 'one')
    outputs = [p.communicate(timeout=300)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  assert all(p.returncode == 0 for p in procs), outputs
  one, two = losses(tmp_path / 'one'), losses(tmp_path / 'two')
  assert sorted(one) == sorted(two)
  np.testing.assert_allclose(
    [two[s] for s in sorted(two)], [one[s] for s in sorted(one)], rtol=1e-4
  )
  a = json.loads((tmp_path / 'one' / 'results.json').read_text())['final']
  b = json.loads((tmp_path / 'two' / 'results.json').read_text())['final']
  assert a['test_examples'] == b['test_examples'] and abs(a['test_top1'] - b['test_top1']) < 0.02


def test_small_bit_learns_real_cifar10(tmp_path, shared_tfds):
  # The scratch run of the dataset-size miniature (docs/studies.md): from scratch on CIFAR-10
  # classes 5-9, 60 HyperRule steps of 64. Its five seeds scored 42.4-46.5% (chance: 20%).
  config = tiny_config(
    dataset='cifar10',
    data_dir=str(shared_tfds),
    classes=(5, 6, 7, 8, 9),
    resize=36,
    crop=32,
    batch_size=64,
    lr=0.01,
    total_steps=60,
    eval_every=0,
    checkpoint_every=0,
    log_every=20,
  )
  results = run.run(config, tmp_path)
  assert results['final']['test_examples'] == 523
  assert results['final']['test_top1'] > 0.3, results


def test_carried_weights_get_a_fresh_head_for_a_new_task(tmp_path):
  first, same, other = plan_lib.resolve(tiny_config(phases=({}, {}, {'classes': (3, 4, 5)}))).phases
  assert (same.settings.head, other.settings.head) == ('keep', 'reset')
  params = weights.initial_params(first, None)
  params['head']['kernel'] = params['head']['kernel'] + 1.0  # a trained head
  kept = weights.initial_params(same, params)
  fresh = weights.initial_params(other, params)
  np.testing.assert_array_equal(kept['head']['kernel'], params['head']['kernel'])
  np.testing.assert_array_equal(fresh['head']['kernel'], 0.0)  # same size, new classes
  np.testing.assert_array_equal(
    fresh['block1']['unit01']['conv1']['kernel'], params['block1']['unit01']['conv1']['kernel']
  )


def trained_checkpoint(tmp_path):
  """A checkpoint with a trained (non-zero) 3-class head, as the digits run leaves it."""
  results = run.run(tiny_config(total_steps=4, eval_every=0, checkpoint_every=0), tmp_path)
  assert results['steps'] == 4
  arrays = pretrained.read_npz(tmp_path / 'final.npz')
  assert np.abs(arrays[pretrained.HEAD_KERNEL]).max() > 0
  return tmp_path / 'final.npz', arrays


def test_fine_tuning_a_checkpoint_with_the_same_class_count_starts_from_a_zero_head(tmp_path):
  checkpoint, arrays = trained_checkpoint(tmp_path / 'upstream')
  # total_steps=0: the final weights are the starting weights, before any update.
  reset = run.run(tiny_config(init=str(checkpoint), total_steps=0), tmp_path / 'reset')
  start = pretrained.read_npz(tmp_path / 'reset' / 'final.npz')
  assert reset['steps'] == 0
  np.testing.assert_array_equal(start[pretrained.HEAD_KERNEL], 0)
  np.testing.assert_array_equal(start[pretrained.HEAD_BIAS], 0)
  body = 'resnet/block2/unit01/b/standardized_conv2d/kernel'
  np.testing.assert_array_equal(start[body], arrays[body])
  run.run(tiny_config(init=str(checkpoint), total_steps=0, head='keep'), tmp_path / 'keep')
  kept = pretrained.read_npz(tmp_path / 'keep' / 'final.npz')
  np.testing.assert_array_equal(kept[pretrained.HEAD_KERNEL], arrays[pretrained.HEAD_KERNEL])
  with pytest.raises(ConfigError, match="head='keep' but .* 3 classes .* 2"):
    plan_lib.resolve(tiny_config(init=str(checkpoint), classes=(0, 1), head='keep'))


def test_upstream_recipe_path_sigmoid_multi_hot_inception_crop(tmp_path):
  results = run.run(
    tiny_config(
      loss='sigmoid', preprocess='inception', weight_decay=1e-4, total_steps=4, eval_every=0
    ),
    tmp_path,
  )
  assert results['steps'] == 4 and results['final']['test_examples'] > 0


def test_fewshot_probe_runs_during_training_and_compiles_once_per_phase(tmp_path, monkeypatch):
  from bit_jax.training import linear_probe

  traces = []

  def counting_pre_logits(model, params, images):
    traces.append(images.shape)  # runs only while jax traces the jitted function
    return original(model, params, images)

  original = linear_probe.pre_logits
  monkeypatch.setattr(linear_probe, 'pre_logits', counting_pre_logits)
  results = run.run(
    tiny_config(total_steps=4, eval_every=1, fewshot_shots=(1, 2), fewshot_classes=(3, 4, 5)),
    tmp_path,
  )
  final = results['final']
  assert 0 <= final['fewshot_1shot_top1'] <= 1 and 0 <= final['fewshot_2shot_top1'] <= 1
  lines = [json.loads(x) for x in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert sum('fewshot_2shot_top1' in x for x in lines) == 4  # steps 1, 2, 3 and the end
  assert len(traces) == 1, traces


def load_config(path, arg):
  import importlib.util

  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_bit_m_upstream_config_trains_on_multi_label_data_without_reading_labels(
  tmp_path, monkeypatch
):
  import tfds_builders

  from bit_jax.data import data_sources

  name = tfds_builders.prepare(tfds_builders.MultiLabelImages, tmp_path / 'tfds')
  label_passes = []
  real_labels_of = data_sources._labels_of
  monkeypatch.setattr(
    data_sources, '_labels_of', lambda *a: label_passes.append(a) or real_labels_of(*a)
  )
  config = load_config(REPO / 'configs' / 'bit_upstream.py', 'BiT-M-R50x1')
  assert (config.label_key, config.loss) == ('labels', 'sigmoid')
  config.update(
    dataset=name,
    data_dir=str(tmp_path / 'tfds'),
    train_split='full[16:]',
    eval_split='full[:16]',
    model='R14x0.5',
    crop=16,
    resize=16,
    batch_size=8,
    epochs=None,
    total_steps=3,
    warmup_steps=1,
    decay_epochs=None,
    log_every=1,
    eval_every=0,
    checkpoint_every=0,
  )
  results = run.run(config, tmp_path / 'run')
  final = results['final']
  assert results['steps'] == 3 and final['test_examples'] == 16
  assert 0 <= final['test_prec1'] <= 1 and 'test_top1' not in final
  assert label_passes == []  # nothing needed the labels: no pass over the split
  [phase] = json.loads((tmp_path / 'run' / 'phases.json').read_text())
  assert phase['multi_label'] and phase['num_classes'] == 6 and phase['lr_scaling'] == 'linear'
  assert phase['lr'] == pytest.approx(0.03 * 8 / 256)


def cli(workdir, *flags, timeout=300):
  return subprocess.run(
    [sys.executable, '-m', 'bit_jax.train', f'--config={TINY}', f'--workdir={workdir}', *flags],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=timeout,
    env=user_environment(),
  )


def test_cli_dry_run_prints_the_plan_and_a_mistake_is_one_message(tmp_path):
  dry = in_process.run(  # in this process: the plan is what is checked, not the start-up
    'train',
    f'--config={TINY}',
    f'--workdir={tmp_path / "dry"}',
    '--dry_run',
    '--config.phases=({"name": "a"}, {"name": "b", "shots": 5})',
  )
  assert dry.returncode == 0, dry.stderr
  lines = dry.stdout.splitlines()
  assert lines[0].split()[:3] == ['phase', 'data', 'examples']
  assert lines[1].startswith('a ') and ', 5/class' in lines[2] and 'keep' in lines[2]
  fields = field_rows(dry.stdout, ['a', 'b'])  # every field of the schema, as resolved
  assert fields['shots'] == ['None', '5'] and fields['init'] == ["'scratch'", "'previous'"]
  assert not (tmp_path / 'dry').exists()
  # A fresh process: nothing native (TensorFlow's, XLA's start-up logs) precedes the message.
  wrong = cli(tmp_path / 'wrong', '--config.freeze=blok1')
  assert wrong.returncode == 2
  assert wrong.stderr.strip().startswith("ERROR: Phase phase0: freeze='blok1' matches no")
  assert 'Traceback' not in wrong.stderr + wrong.stdout
