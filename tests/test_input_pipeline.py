"""Tests for bit_jax/data/input_pipeline.py.

Oracles: the source's own decoded records (the pixels, labels and ids a batch must
come from), an uninterrupted stream (what a resumed one must equal), and set arithmetic
over ids (shards disjoint, covering, eval exactly once). Units run on small in-memory
arrays and `tfds.testing.mock_data`; the real CIFAR-10 subset checks value ranges,
flips and eval coverage.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from bit_jax.data import data_sources, input_pipeline, subsets

CIFAR_DIR = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'tfds'


def _take(iterator, count):
  return [next(iterator) for _ in range(count)]


@pytest.fixture(scope='module')
def tiny():
  """50 random 12x10 RGB images, 5 classes: fast enough for many pipelines."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (50, 12, 10, 3), np.uint8)
  return data_sources.array_source(images, np.arange(50) % 5)


def _train(source, **overrides):
  settings = dict(global_batch_size=8, resize=10, crop=8, seed=0, process_count=1, process_index=0)
  return input_pipeline.train_data(source, **{**settings, **overrides})


def test_batches_on_mock_tfds_have_the_promised_shapes_and_range():
  with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
    source = data_sources.tfds_source('cifar10', 'train', download=False)
    for preprocess in input_pipeline.PREPROCESSINGS:
      batch = next(_train(source, resize=40, crop=24, preprocess=preprocess))
      assert batch['image'].shape == (8, 24, 24, 3) and batch['image'].dtype == np.float32
      assert batch['label'].shape == (8,) and batch['label'].dtype == np.int32
      assert -1 <= batch['image'].min() and batch['image'].max() <= 1
      np.testing.assert_array_equal(batch['label'], source.labels()[batch['id']])


def test_same_seed_same_batches_other_seed_other_batches(tiny):
  for preprocess in input_pipeline.PREPROCESSINGS:
    first = _take(_train(tiny, preprocess=preprocess), 10)  # 80 > 50: two epochs
    again = _take(_train(tiny, preprocess=preprocess), 10)
    other = _take(_train(tiny, preprocess=preprocess, seed=1), 10)
    for a, b in zip(first, again):
      for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert any((a['id'] != c['id']).any() for a, c in zip(first, other))
    assert any((a['image'] != c['image']).any() for a, c in zip(first, other))


def test_epochs_are_permutations_in_new_orders(tiny):
  # Batch 10 over 50 examples: every 5 batches are one epoch.
  ids = np.concatenate([b['id'] for b in _take(_train(tiny, global_batch_size=10), 25)])
  epochs = ids.reshape(5, 50)
  for epoch in epochs:
    np.testing.assert_array_equal(np.sort(epoch), np.arange(50))
  assert len({tuple(epoch) for epoch in epochs}) == 5


@pytest.mark.parametrize('preprocess', input_pipeline.PREPROCESSINGS)
@pytest.mark.parametrize('start_step', [1, 6, 7, 13])  # 50 / 8: epoch 1 begins in step 6
def test_resume_yields_the_uninterrupted_batches(tiny, start_step, preprocess):
  uninterrupted = _take(_train(tiny, preprocess=preprocess), start_step + 4)
  resumed = _take(_train(tiny, preprocess=preprocess, start_step=start_step), 4)
  for expected, got in zip(uninterrupted[start_step:], resumed):
    for key in expected:
      np.testing.assert_array_equal(expected[key], got[key])


@pytest.mark.parametrize('process_count', [2, 3])
def test_process_shards_are_disjoint_and_cover_the_subset(tiny, process_count):
  subset = subsets.per_class(tiny.labels(), 7, seed=3)  # 35 of the 50
  shards = []
  for process_index in range(process_count):
    stream = _train(
      tiny,
      ids=subset,
      global_batch_size=6,
      process_index=process_index,
      process_count=process_count,
    )
    batch_size = 6 // process_count
    shard_size = len(subset[process_index::process_count])
    first_epoch = np.concatenate(
      [b['id'] for b in _take(stream, math.ceil(shard_size / batch_size))]
    )[:shard_size]
    assert len(set(first_epoch)) == shard_size  # one epoch sees each example once
    shards.append(set(first_epoch))
  assert sum(len(s) for s in shards) == len(set().union(*shards))  # disjoint
  assert set().union(*shards) == set(subset)  # together: exactly the subset


def test_subset_ids_restrict_training_and_eval(tiny):
  subset = subsets.per_class(tiny.labels(), 2, seed=0)
  trained = np.concatenate([b['id'] for b in _take(_train(tiny, ids=subset), 5)])
  assert set(trained) == set(subset)
  evaluated = input_pipeline.eval_data(
    tiny, global_batch_size=4, crop=8, ids=subset, process_count=1, process_index=0
  )
  seen = np.concatenate([b['id'][b['mask']] for b in evaluated])
  np.testing.assert_array_equal(seen, subset)


def test_bad_settings_are_explained(tiny):
  with pytest.raises(ValueError, match='Use a multiple of 3, e.g. 9'):
    _train(tiny, global_batch_size=8, process_count=3)
  with pytest.raises(ValueError, match='crop <= resize'):
    _train(tiny, resize=8, crop=10)
  with pytest.raises(ValueError, match='distinct'):
    _train(tiny, ids=np.array([1, 1, 2]))
  with pytest.raises(ValueError, match=r'ids in \[0, 50\)'):
    _train(tiny, ids=np.array([3, 50]))


def test_multi_hot_labels(tiny):
  batch = next(_train(tiny, multi_hot=True))
  np.testing.assert_array_equal(batch['label'], np.eye(5)[tiny.labels()[batch['id']]])

  # Multi-label records: a list of classes per example, possibly empty or repeated.
  label_lists = [[0], [1, 2], [], [3, 0, 3]] * 3
  oracle = np.array([[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [1, 0, 0, 1]] * 3)

  def undecoded_records():
    listed = tf.data.Dataset.from_generator(
      lambda: iter(label_lists), output_signature=tf.TensorSpec([None], tf.int32)
    )
    return listed.enumerate().map(
      lambda i, labels: {'image': tf.zeros([4, 4, 3], tf.uint8), 'label': labels, 'id': i}
    )

  multi_label = data_sources.DataSource(
    'multi-label',
    12,
    4,
    undecoded_records,
    decode_image=lambda image: image,
    labels=lambda: None,
  )
  batch = next(_train(multi_label, resize=4, crop=4, multi_hot=True, global_batch_size=12))
  np.testing.assert_array_equal(batch['label'], oracle[batch['id']])
  evaluated = next(
    iter(
      input_pipeline.eval_data(
        multi_label,
        global_batch_size=16,
        crop=4,
        multi_hot=True,
        process_count=1,
        process_index=0,
      )
    )
  )
  np.testing.assert_array_equal(evaluated['label'][:12], oracle)
  np.testing.assert_array_equal(evaluated['label'][12:], 0)  # padding


@pytest.fixture(scope='module')
def cifar():
  if not (CIFAR_DIR / 'cifar10').is_dir():
    pytest.skip(f'CIFAR-10 subset not found under {CIFAR_DIR}')
  load = lambda split: data_sources.tfds_source(  # noqa: E731
    'cifar10', split, data_dir=CIFAR_DIR, download=False
  )
  return load('train'), load('test')


@pytest.fixture(scope='module')
def cifar_train_pixels(cifar):
  """Every train image in id order, uint8 [5085, 32, 32, 3]: the source's own decode."""
  return np.stack([r['image'] for r in cifar[0].records().as_numpy_iterator()])


def test_real_cifar_range_and_random_flips(cifar, cifar_train_pixels):
  # crop == resize == 32: no resize, no crop, so each image is its source or its mirror.
  batch = next(_train(cifar[0], global_batch_size=256, resize=32, crop=32, seed=4))
  assert batch['image'].min() < -0.95 and batch['image'].max() > 0.95
  assert -1 <= batch['image'].min() and batch['image'].max() <= 1
  as_read = cifar_train_pixels[batch['id']] / 127.5 - 1
  unflipped = np.all(np.isclose(batch['image'], as_read, atol=1e-6), axis=(1, 2, 3))
  flipped = np.all(np.isclose(batch['image'], as_read[:, :, ::-1], atol=1e-6), axis=(1, 2, 3))
  assert np.all(unflipped | flipped)  # nothing but a flip happened
  assert 50 < np.sum(flipped & ~unflipped) < 206 and np.sum(unflipped & ~flipped) > 50


# Batch sizes that divide neither the split nor the used ids, and where the smaller
# shards fill whole batches but the larger do not: per-shard batch counts would differ.
@pytest.mark.parametrize(
  'process_count, global_batch_size, num_used',
  [(1, 100, 1017), (2, 254, 1017), (3, 333, 1000)],
)
def test_real_cifar_eval_sees_every_example_once_with_equal_batch_counts(
  cifar, process_count, global_batch_size, num_used
):
  test = cifar[1]  # 1017 examples
  ids = None if num_used == test.num_examples else np.arange(num_used)
  counts, seen = set(), []
  for process_index in range(process_count):
    data = input_pipeline.eval_data(
      test,
      global_batch_size=global_batch_size,
      crop=32,
      ids=ids,
      process_index=process_index,
      process_count=process_count,
    )
    batches = list(data)
    counts.add(len(batches))
    assert len(batches) == len(data)
    for batch in batches:
      assert batch['image'].shape == (global_batch_size // process_count, 32, 32, 3)
      assert np.all(batch['id'][~batch['mask']] == -1)
      real = batch['id'][batch['mask']]
      np.testing.assert_array_equal(batch['label'][batch['mask']], test.labels()[real])
      seen.append(real)
  batch_size = global_batch_size // process_count
  assert counts == {math.ceil(math.ceil(num_used / process_count) / batch_size)}
  np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(num_used))


def test_eval_images_are_the_source_pixels_scaled(cifar):
  first = next(
    iter(
      input_pipeline.eval_data(
        cifar[1], global_batch_size=16, crop=32, process_index=0, process_count=1
      )
    )
  )
  pixels = np.stack([r['image'] for r in cifar[1].records().take(16).as_numpy_iterator()])
  np.testing.assert_allclose(first['image'], pixels / 127.5 - 1, atol=1e-6)
