"""A run that loses nothing and says what is wrong in one line.

Oracles: the bytes of the files a refused resume must leave alone, an uninterrupted run (for
resumes after a failed save), the exit codes of errors.py, and the absence of a traceback in
what the command line prints.
"""

import json
import re
import signal
import subprocess
import sys
import time

import in_process
import numpy as np
import pytest
from conftest import REPO, TEST_DATA
from test_train import TINY, tiny_config

from bit_jax import sweep
from bit_jax.models import pretrained
from bit_jax.runtime import files, lock
from bit_jax.runtime.errors import ConfigError, RunError, Stopped
from bit_jax.runtime.preemption import StopRequest
from bit_jax.training import run


class StopAfter(StopRequest):
  """A stop request that arrives after `checks` looks at it (as SIGTERM would mid-run)."""

  def __init__(self, checks):
    super().__init__()
    self._left = checks

  @property
  def requested(self):
    self._left -= 1
    return self._left < 0

  @requested.setter
  def requested(self, value):
    pass


class StopWhen(StopRequest):
  """A stop request that arrives once `condition()` holds (SIGTERM at a chosen moment)."""

  def __init__(self, condition):
    super().__init__()
    self._condition = condition

  requested = property(lambda self: self._condition(), lambda self, value: None)


def snapshot(workdir, *names):
  return {name: (workdir / name).read_bytes() for name in names}


def test_a_changed_config_is_refused_on_resume_and_nothing_is_rewritten(tmp_path):
  config = tiny_config(eval_every=0, checkpoint_every=4)
  with pytest.raises(Stopped):
    run.run(config, tmp_path, stop=StopAfter(6))  # stopped (and saved) at step 6
  kept = snapshot(tmp_path, 'phases.json', 'phase0_train_ids.json')
  for change, listed in [
    (dict(batch_size=32), 'batch_size: 16 -> 32'),
    (dict(model='R26x1'), "model: 'R14x0.5' -> 'R26x1'"),
    (dict(classes=(0, 1, 3)), 'classes: [0, 1, 2] -> [0, 1, 3]'),
    (dict(total_steps=40), 'total_steps: 12 -> 40'),
  ]:
    with pytest.raises(ConfigError, match='holds a run trained with another config') as error:
      run.run(tiny_config(eval_every=0, checkpoint_every=4, **change), tmp_path)
    assert listed in str(error.value) and '--accept_changes=' in str(error.value)
    assert snapshot(tmp_path, *kept) == kept
  # Bookkeeping fields may change; an accepted change is applied and recorded.
  results = run.run(
    tiny_config(eval_every=0, checkpoint_every=4, log_every=3, total_steps=16),
    tmp_path,
    accept_changes=('total_steps',),
  )
  assert results['steps'] == 16
  [change] = files.read_json(tmp_path / 'plan_changes.json')
  assert change['global_step'] == 6 and change['changes'] == {
    'phase0': [
      'decay_steps: [5, 7, 10] -> [6, 10, 13]',
      'total_steps: 12 -> 16',
      'warmup_steps: 2 -> 3',
    ]
  }  # the HyperRule's schedule scaled to the new length
  assert json.loads((tmp_path / 'phases.json').read_text())[0]['total_steps'] == 16
  # A finished phase cannot change, even on purpose.
  with pytest.raises(ConfigError, match='has finished training'):
    run.run(
      tiny_config(eval_every=0, checkpoint_every=4, total_steps=20),
      tmp_path,
      accept_changes=('total_steps',),
    )


def test_a_failed_save_keeps_the_last_checkpoint_and_the_rerun_resumes(tmp_path, monkeypatch):
  import orbax.checkpoint as ocp

  config = tiny_config(eval_every=0, checkpoint_every=2, keep_checkpoints=1, total_steps=8)
  expected = run.run(config, tmp_path / 'reference')
  real_finalize = ocp.CheckpointManager._finalize_checkpoint
  saves = []

  def finalize_fails_once(self, step):
    saves.append(step)
    if len(saves) == 2:  # the disk filled up while checkpoint 2 was being written
      raise OSError(28, 'No space left on device')
    return real_finalize(self, step)

  monkeypatch.setattr(ocp.CheckpointManager, '_finalize_checkpoint', finalize_fails_once)
  with pytest.raises(
    RunError,
    match=r'Could not save the checkpoint of step 4 .*the checkpoint of step 2 is '
    r'intact and a rerun resumes from it',
  ):
    run.run(config, tmp_path / 'run')
  monkeypatch.undo()
  results = run.run(config, tmp_path / 'run')
  assert results['final'] == expected['final'] and results['steps'] == 8


def test_sweep_stops_between_runs_on_request_and_continues(tmp_path):
  import ml_collections

  base = tiny_config(total_steps=1, eval_every=0, checkpoint_every=0, keep_checkpoints=1)
  two_runs = ml_collections.ConfigDict(
    dict(base=base, runs=(dict(name='a'), dict(name='b')), report=dict(x='name'))
  )
  with pytest.raises(Stopped, match='before .*b; rerun'):
    sweep.run_sweep(
      two_runs, tmp_path, 'two', stop=StopWhen((tmp_path / 'a' / 'results.json').exists)
    )
  assert (tmp_path / 'a' / 'results.json').exists()
  assert not (tmp_path / 'b').exists()
  rows = sweep.run_sweep(two_runs, tmp_path, 'two')
  assert [r['name'] for r in rows] == ['a', 'b']


def test_sigterm_handler_is_restored_when_a_run_returns(tmp_path):
  def mine(signum, frame):
    pass

  previous = signal.signal(signal.SIGTERM, mine)
  try:
    run.run(tiny_config(total_steps=2, eval_every=0, checkpoint_every=0), tmp_path)
    assert signal.getsignal(signal.SIGTERM) is mine
  finally:
    signal.signal(signal.SIGTERM, previous)


def test_files_for_people_are_never_torn(tmp_path, monkeypatch):
  target = tmp_path / 'results.json'
  files.write_json(target, {'top1': 0.5})
  from etils import epath

  real_write = epath.Path.write_text

  def disk_full(self, text, *args, **kwargs):
    real_write(self, text[:5], *args, **kwargs)  # a partial write, then the error
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(epath.Path, 'write_text', disk_full)
  with pytest.raises(RunError, match='results.json .*No space left.*previous version'):
    files.write_json(target, {'top1': 0.9})
  monkeypatch.undo()
  assert json.loads(target.read_text()) == {'top1': 0.5}
  assert [p.name for p in tmp_path.iterdir()] == ['results.json']  # no temporary left
  target.write_text('{"top1": 0.')  # torn by an old version
  with pytest.raises(RunError, match='results.json is not valid JSON'):
    files.read_json(target)


def test_a_stale_lock_is_taken_over_and_a_live_one_refuses(tmp_path):
  path = tmp_path / '.lock'
  gone = subprocess.run(
    [sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True
  ).stdout.strip()
  import socket

  path.write_text(
    json.dumps({'host': socket.gethostname(), 'pid': int(gone), 'started': 0, 'heartbeat': 0})
  )
  first = lock.WorkdirLock(path)
  assert 'Took over the stale lock' in first.acquire()
  # (A live owner on this host, and one that reuses a pid: tests/test_lock.py.)
  path.write_text(
    json.dumps({'host': 'elsewhere', 'pid': 1, 'started': 0, 'heartbeat': time.time() - 10})
  )
  with pytest.raises(RunError, match='in use by pid 1 on elsewhere'):
    lock.WorkdirLock(path).acquire()
  path.write_text(
    json.dumps(
      {
        'host': 'elsewhere',
        'pid': 1,
        'started': 0,
        'heartbeat': time.time() - lock.STALE_AFTER_S - 1,
      }
    )
  )
  assert 'stale' in lock.WorkdirLock(path).acquire()


def cli(*flags, workdir, config=TINY, timeout=300):
  return subprocess.run(
    [sys.executable, '-m', 'bit_jax.train', f'--config={config}', f'--workdir={workdir}', *flags],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def train(*flags, workdir, config=TINY):
  """`python -m bit_jax.train` run in this process (tests/in_process.py)."""
  return in_process.run('train', f'--config={config}', f'--workdir={workdir}', *flags)


def test_two_processes_on_one_workdir_exactly_one_trains(tmp_path):
  # Both start at once; the one that takes the lock trains (a run far longer than the test)
  # until the other has been refused, then is stopped as a preemption would stop it.
  flags = ('--config.total_steps=100000', '--config.eval_every=0', '--config.log_every=50')
  command = [sys.executable, '-m', 'bit_jax.train', f'--config={TINY}', f'--workdir={tmp_path}']
  procs = [
    subprocess.Popen([*command, *flags], cwd=REPO, stderr=subprocess.PIPE, text=True)
    for _ in range(2)
  ]
  try:
    deadline = time.time() + 300
    while all(p.poll() is None for p in procs):
      assert time.time() < deadline, 'neither process ended'
      time.sleep(0.2)
    [refused] = [p for p in procs if p.poll() is not None]
    [trainer] = [p for p in procs if p is not refused]
    refusal = refused.communicate()[1]
    while not [p for p in (tmp_path / 'checkpoints').glob('*') if p.name.isdigit()]:
      assert trainer.poll() is None and time.time() < deadline, 'the trainer saved nothing'
      time.sleep(0.2)
    trainer.send_signal(signal.SIGTERM)
    output = trainer.communicate(timeout=300)[1]
  finally:
    for p in procs:
      p.kill()
  assert refused.returncode == 1, refusal[-2000:]
  assert 'is in use by pid' in refusal or 'just taken' in refusal
  assert 'Traceback' not in refusal
  assert trainer.returncode == 0 and 'Stopped on request' in output, output[-2000:]
  assert not (tmp_path / 'results.json').exists()
  assert not (tmp_path / '.lock').exists()


def corrupt_init(tmp_path):
  path = tmp_path / 'corrupt.npz'
  path.write_bytes(b'PK\x03\x04 not really a zip')
  return path


def wrong_root(tmp_path):
  arrays = pretrained.read_npz(TEST_DATA / 'bit_small_official.npz')
  arrays[pretrained.ROOT_KERNEL] = np.zeros((7, 7, 3, 48), np.float32)
  path = tmp_path / 'wrong_root.npz'
  np.savez(path, **arrays)
  return path


CONFIG_MISTAKES = [  # flags, words the one-line message must hold
  (['--config.batchsize=3'], ["Unknown config field 'batchsize'", 'batch_size']),
  (  # every field's type and range is checked, and all problems are listed at once
    [
      '--config.batch_size=0',
      '--config.log_every=0',
      '--config.lr=-1',
      '--config.total_steps=-5',
      '--config.checkpoint_every=-1',
      '--config.freeze=block1(',
      '--config.dtype=float16',
      '--config.lr_schedule=cosine',
      '--config.preprocess=random',
    ],
    [
      'batch_size=0 (expected an integer >= 1)',
      'log_every=0 (expected an integer >= 1)',
      'lr=-1.0 (expected a number in (0, inf))',
      'total_steps=-5',
      'checkpoint_every=-1',
      "freeze='block1(' (not a regular expression",
      "dtype='float16' (expected one of ('float32', 'bfloat16'))",
      "lr_schedule='cosine'",
      "preprocess='random'",
    ],
  ),
  (['--config.dataset=cifar1O'], ["Unknown dataset 'cifar1O'", 'close: cifar10']),
  (  # far from every field: the nearest three, and where they are all described
    ['--config.learning_rate=0.1'],
    ["Unknown config field 'learning_rate'; the nearest are ", 'bit_jax/recipe/settings.py'],
  ),
  (['--config.crop=20', '--config.resize=18'], ['crop=20 is larger than resize=18']),
  (['--config.init={corrupt}'], ['cannot use init', 'corrupt.npz', 'npz']),
  (
    ['--config.init={wrong_root}'],
    ['root_block/standardized_conv2d/kernel has shape (7, 7, 3, 48)'],
  ),
]


def test_config_mistakes_are_one_line_with_exit_code_2(tmp_path):
  paths = {'tmp': tmp_path, 'corrupt': corrupt_init(tmp_path), 'wrong_root': wrong_root(tmp_path)}

  started = time.time()
  done = [
    train(*(f.format(**paths) for f in flags), workdir=tmp_path / f'w{index}')
    for index, (flags, _) in enumerate(CONFIG_MISTAKES)
  ]
  for index, ((flags, words), result) in enumerate(zip(CONFIG_MISTAKES, done)):
    printed = result.stdout + result.stderr
    workdir = tmp_path / f'w{index}'
    assert not workdir.exists() or list(workdir.iterdir()) == [], (flags, 'wrote files')
    assert result.returncode == 2, (flags, printed[-3000:])
    assert 'Traceback' not in printed, (flags, printed[-3000:])
    [line] = [x for x in result.stderr.splitlines() if x.startswith('ERROR:')]
    for word in words:
      assert word in line, (flags, line)
  assert time.time() - started < 60 * len(CONFIG_MISTAKES)  # seconds each, no retries


def test_an_unwritable_workdir_is_refused_before_any_work(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  result = train(workdir=blocker / 'run')
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  assert 'ERROR: Cannot write to workdir' in result.stderr


def test_a_full_disk_names_the_path_and_keeps_the_last_good_checkpoint(tmp_path):
  mount = tmp_path / 'small'
  mount.mkdir()
  if subprocess.run(
    ['mount', '-t', 'tmpfs', '-o', 'size=40m', 'tmpfs', str(mount)], capture_output=True
  ).returncode:
    pytest.skip('cannot mount a small tmpfs here')
  try:
    result = cli(
      '--config.total_steps=400',
      '--config.checkpoint_every=5',
      '--config.keep_checkpoints=100',
      '--config.eval_every=0',
      workdir=mount / 'run',
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr and len(result.stderr.splitlines()) < 10
    [line] = [x for x in result.stderr.splitlines() if x.startswith('ERROR:')]
    assert str(mount / 'run') in line and 'No space left' in line
    assert 'is intact and a rerun resumes from it' in line
  finally:
    subprocess.run(['umount', '-l', str(mount)], capture_output=True)


def test_cli_refuses_a_top_level_override_that_phases_set_and_takes_a_per_phase_one(tmp_path):
  demo = REPO / 'configs' / 'demo.py'
  commands = [
    ('--config.lr=0.1', '--config.total_steps=50', '--dry_run'),
    ('--phase=transfer.lr=0.1', '--phase=upstream.total_steps=50', '--dry_run'),
  ]
  refused, applied = (train(*f, workdir=tmp_path, config=demo) for f in commands)
  assert refused.returncode == 2 and 'Traceback' not in refused.stderr, refused.stderr[-2000:]
  [line] = [x for x in refused.stderr.splitlines() if x.startswith('ERROR:')]
  assert '--config.lr=0.1 does not reach phases upstream (0.05), transfer' in line
  assert '--config.total_steps=50 does not reach' in line and '--phase=scratch.lr=0.1' in line
  assert applied.returncode == 0, applied.stderr[-2000:]
  rows = {r.split()[0]: r for r in applied.stdout.splitlines() if r.strip()}
  steps_batch_lr = lambda name: re.search(r'\s(\d+)\s+64\s+(\S+) hyperrule', rows[name]).groups()
  assert steps_batch_lr('upstream') == ('50', '0.05')
  assert steps_batch_lr('transfer') == ('300', '0.1')
  assert steps_batch_lr('scratch') == ('300', '0.000375')
