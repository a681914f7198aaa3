"""Using a trained model: predictions with class names, a TF SavedModel, features to disk.

Oracles: the run's own final evaluation (predict must print the same top-1 on the same split),
bit_jax's logits (the SavedModel, loaded by TensorFlow alone, must agree to 1e-4), and the
ridge probe on features computed in memory.
"""

import csv
import io
import json
import os
import shutil
import subprocess
import sys

import in_process
import numpy as np
import pytest
from PIL import Image
from test_train import tiny_config

from bit_jax import export, predict
from bit_jax.data import data_sources, subsets
from bit_jax.serving import fine_tuned
from bit_jax.training import linear_probe, run

CLASSES = ('zero', 'one', 'two')


def write_digits_folder(root) -> None:
  """Digits 0-2 of sklearn as an image folder (root/<split>/<class name>/<id>.png)."""
  for split in ('train', 'test'):
    source = data_sources.get_source('sklearn_digits', split, classes=(0, 1, 2))
    for record in source.records().as_numpy_iterator():
      path = root / split / CLASSES[record['label']] / f'{record["id"]:04d}.png'
      path.parent.mkdir(parents=True, exist_ok=True)
      Image.fromarray(record['image']).save(path)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A tiny run on an image folder of real digits: (workdir, folder, results)."""
  root = tmp_path_factory.mktemp('digits')
  write_digits_folder(root)
  workdir = tmp_path_factory.mktemp('run')
  results = run.run(
    tiny_config(
      dataset=f'folder:{root}', classes=None, eval_every=0, checkpoint_every=0, total_steps=20
    ),
    workdir,
  )
  return workdir, root, results


def cli(module, *flags):
  """`python -m <module> *flags`, run in this process (tests/in_process.py)."""
  return in_process.run(module.removeprefix('bit_jax.'), *flags)


def test_predict_on_the_test_split_matches_the_runs_evaluation_with_class_names(trained, tmp_path):
  workdir, root, results = trained
  out = tmp_path / 'predictions.csv'
  done = cli('bit_jax.predict', f'--model={workdir}', f'--images={root / "test"}', f'--out={out}')
  assert done.returncode == 0, done.stderr[-3000:]
  final = results['final']
  assert f'top-1 {final["test_top1"]:.4f}' in done.stdout, (done.stdout, final)
  assert f'on {final["test_examples"]} labelled images' in done.stdout
  rows = list(csv.DictReader(io.StringIO(out.read_text())))
  assert len(rows) == final['test_examples']
  assert {r['class1'] for r in rows} <= set(CLASSES) and {r['label'] for r in rows} == set(CLASSES)
  assert all(abs(sum(float(r[f'probability{i}']) for i in range(1, 4)) - 1) < 1e-4 for r in rows)
  assert (tmp_path / 'predictions.confusion.png').stat().st_size > 0


def test_an_unreadable_image_is_listed_and_skipped(trained, tmp_path):
  _, root, _ = trained
  images = tmp_path / 'images'
  shutil.copytree(root / 'test' / 'one', images / 'one')
  (images / 'one' / 'broken.png').write_bytes(b'\x89PNG not really')
  done = cli(
    'bit_jax.predict', f'--model={trained[0]}', f'--images={images}', f'--out={tmp_path / "p.csv"}'
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'Skipped 1 unreadable' in done.stdout and 'broken.png' in done.stdout
  rows = list(csv.DictReader(io.StringIO((tmp_path / 'p.csv').read_text())))
  assert len(rows) == len(list((root / 'test' / 'one').iterdir()))
  assert not any('broken' in r['image'] for r in rows)


def test_features_to_disk_feed_the_fewshot_probe(trained, tmp_path):
  workdir, root, _ = trained
  model, params, class_names, crop = fine_tuned.load_model(str(workdir))
  assert class_names == tuple(sorted(CLASSES)) and crop == 16  # folders sort by name
  for split in ('train', 'test'):
    done = cli(
      'bit_jax.predict',
      f'--model={workdir}',
      f'--images={root / split}',
      f'--out={tmp_path / split}.csv',
      f'--features={tmp_path / split}.npz',
    )
    assert done.returncode == 0, done.stderr[-3000:]
  saved = np.load(tmp_path / 'train.npz')
  assert (
    saved['features'].shape == (len(saved['ids']), 1024) and str(saved['layer']) == 'pre_logits'
  )
  assert set(saved['labels']) == {0, 1, 2}
  # The same probe on features computed in memory gives the same accuracies.
  source, _, _ = predict.image_source(str(root / 'train'), class_names)
  test_source, _, _ = predict.image_source(str(root / 'test'), class_names)
  expected = {}
  features = {
    name: predict.infer(model, params, s, crop=crop, quiet=True)
    for name, s in (('train', source), ('test', test_source))
  }
  for k in (1, 5):
    rows = subsets.per_class(features['train'][2], k, 0)
    fit = linear_probe.fit_ridge(
      features['train'][1][rows].astype(np.float64), features['train'][2][rows], 3
    )
    expected[k] = float(
      np.mean(linear_probe.predict(fit, features['test'][1]) == features['test'][2])
    )
  done = cli(
    'bit_jax.fewshot',
    f'--features={tmp_path / "train.npz"}',
    f'--test_features={tmp_path / "test.npz"}',
    '--shots=1,5',
  )
  assert done.returncode == 0, done.stderr[-3000:]
  printed = {
    int(line.split()[0]): float(line.split()[1])
    for line in done.stdout.splitlines()
    if line.split() and line.split()[0].isdigit()
  }
  assert printed == pytest.approx(expected, abs=1e-4)


TF_ONLY = """
import json, sys
import numpy as np
for name in ('jax', 'jaxlib', 'flax', 'bit_jax'):   # a machine with TensorFlow alone
  sys.modules[name] = None
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
serve = loaded.signatures['serving_default']
out = {}
for name in sys.argv[2:]:
  result = serve(images=tf.constant(np.load(name)))
  out[name] = [result['logits'].numpy().tolist(), result['probabilities'].numpy().tolist()]
names = [n.decode() for n in loaded.class_names.numpy()]
print(json.dumps({'out': out, 'classes': names}))
"""


def test_saved_model_gives_bit_jax_logits_for_any_image_size_and_batch(trained, tmp_path):
  import jax
  import tensorflow as tf

  workdir, _, _ = trained
  model, params, class_names, crop = fine_tuned.load_model(str(workdir))
  export.export(model, params, crop, tmp_path / 'saved', class_names, platforms=('cpu',))
  rng = np.random.default_rng(0)
  inputs = {}
  for batch, (h, w) in ((1, (16, 16)), (3, (16, 16)), (1, (50, 40)), (3, (23, 31)), (0, (16, 16))):
    path = tmp_path / f'images_{batch}_{h}x{w}.npy'
    np.save(path, rng.integers(0, 256, (batch, h, w, 3), np.uint8))
    inputs[str(path)] = np.load(path)
  done = subprocess.run(
    [sys.executable, '-c', TF_ONLY, str(tmp_path / 'saved'), *inputs],
    capture_output=True,
    text=True,
    timeout=600,
    env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'},
  )
  assert done.returncode == 0, done.stderr[-3000:]
  served = json.loads(done.stdout.strip().splitlines()[-1])
  assert tuple(served['classes']) == tuple(sorted(CLASSES))
  apply = jax.jit(lambda x: model.apply({'params': params}, x))
  for name, images in inputs.items():
    logits, probabilities = (np.asarray(a, np.float32).reshape(-1, 3) for a in served['out'][name])
    assert logits.shape == (len(images), 3)
    if not len(images):  # a batch of 0: empty outputs, not an error
      assert probabilities.shape == (0, 3)
      continue
    expected = np.asarray(apply(export.preprocess(tf.constant(images), crop).numpy()))
    assert np.abs(logits - expected).max() <= 1e-4, name
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def test_a_run_without_final_npz_is_named_unfinished(tmp_path):
  from bit_jax.runtime.errors import ConfigError

  (tmp_path / 'checkpoints').mkdir()  # a run stopped before its end
  (tmp_path / 'phases.json').write_text('[]')
  with pytest.raises(ConfigError, match='is a run that has not finished: no final.npz'):
    fine_tuned.load_model(str(tmp_path))


def test_the_predictions_csv_reads_back_with_the_csv_module_whatever_the_class_names():
  """Oracle: Python's csv reader gets every name and probability back as written."""
  import csv
  import io

  names = ['a,b.png', 'plain.png', 'new\nline.png']
  class_names = ['say "hi"', 'comma, here', 'x']
  logits = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 0.0, 5.0]])
  labels = np.array([0, 1, -1])
  rows = list(
    csv.reader(io.StringIO(predict.predictions_csv(names, logits, labels, class_names, 2)))
  )
  assert rows[0] == ['image', 'label', 'class1', 'probability1', 'class2', 'probability2']
  assert [r[0] for r in rows[1:]] == names
  assert [r[1] for r in rows[1:]] == ['say "hi"', 'comma, here', '']
  assert [r[2] for r in rows[1:]] == ['say "hi"', 'comma, here', 'x']
  softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  np.testing.assert_allclose([float(r[3]) for r in rows[1:]], softmax.max(axis=1), atol=1e-6)
