"""Seeded, nested, stratified subsets.

Oracles: counting with ``np.bincount`` / Python sets on the returned ids (per-class
counts, nesting, disjointness), hand-computed rounding of f * n_c, and the real
CIFAR-10 train labels of the shared TFDS copy (5,085 examples).
"""

import numpy as np
import pytest
from conftest import SHARED_TFDS

from bit_jax.data import subsets

TFDS_DIR = SHARED_TFDS  # BIT_JAX_TEST_DATA, else ../shared/data/tfds

# 3 classes with 10, 20 and 7 examples, interleaved so ids are not grouped by class.
SYNTHETIC = np.random.default_rng(0).permutation(np.repeat([0, 1, 2], [10, 20, 7]))


@pytest.fixture(scope='module')
def cifar10_labels():
  if not TFDS_DIR.is_dir():
    pytest.skip(f'no TFDS data at {TFDS_DIR}')
  tfds = pytest.importorskip('tensorflow_datasets')
  split = tfds.load('cifar10', data_dir=str(TFDS_DIR), split='train', download=False)
  labels = np.array([int(x['label']) for x in tfds.as_numpy(split)])
  assert labels.shape == (5085,)
  return labels


def _is_subset(small, large):
  return set(small.tolist()) <= set(large.tolist())


def test_per_class_counts_are_exact():
  ids = subsets.per_class(SYNTHETIC, 5, seed=1)
  assert ids.dtype == np.int64
  assert np.all(np.diff(ids) > 0), 'ids must be sorted and unique'
  assert np.bincount(SYNTHETIC[ids]).tolist() == [5, 5, 5]


def test_k_shot_subsets_are_nested():
  one, five, seven = (subsets.per_class(SYNTHETIC, k, seed=3) for k in (1, 5, 7))
  assert _is_subset(one, five) and _is_subset(five, seven)
  assert len(seven) == 21


def test_same_seed_same_ids_other_seed_different():
  first = subsets.per_class(SYNTHETIC, 3, seed=7)
  again = subsets.per_class(SYNTHETIC, 3, seed=7)
  other = subsets.per_class(SYNTHETIC, 3, seed=8)
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other)


def test_k_larger_than_a_class_is_an_error_naming_the_class():
  with pytest.raises(ValueError, match='class 2 has 7'):
    subsets.per_class(SYNTHETIC, 8, seed=0)


def test_fractions_are_stratified_and_nested():
  chosen = [subsets.fraction(SYNTHETIC, f, seed=5) for f in (0.2, 0.4, 0.6, 0.8, 1.0)]
  # round half-up of f * (10, 20, 7): 0.2 -> (2, 4, 1.4->1), 0.4 -> (4, 8, 2.8->3),
  # 0.6 -> (6, 12, 4.2->4), 0.8 -> (8, 16, 5.6->6), 1.0 -> everything.
  expected = [[2, 4, 1], [4, 8, 3], [6, 12, 4], [8, 16, 6], [10, 20, 7]]
  assert [np.bincount(SYNTHETIC[ids]).tolist() for ids in chosen] == expected
  for smaller, larger in zip(chosen, chosen[1:]):
    assert _is_subset(smaller, larger)
  np.testing.assert_array_equal(chosen[-1], np.arange(len(SYNTHETIC)))


def test_fraction_rounds_half_up():
  labels = np.array([0, 0, 0, 1, 1, 1, 1, 1])  # 0.5 * 3 = 1.5 -> 2, 0.5 * 5 = 2.5 -> 3
  assert np.bincount(labels[subsets.fraction(labels, 0.5, seed=0)]).tolist() == [2, 3]


def test_k_shot_is_the_front_of_the_fraction_order():
  # Both come from the same class order: 2 per class sits inside 40% (>= 3 each).
  assert _is_subset(
    subsets.per_class(SYNTHETIC, 2, seed=4), subsets.fraction(SYNTHETIC, 0.4, seed=4)
  )


@pytest.mark.parametrize('bad', [0.0, -0.1, 1.5])
def test_fraction_out_of_range_is_rejected(bad):
  with pytest.raises(ValueError, match='0 < f <= 1'):
    subsets.fraction(SYNTHETIC, bad, seed=0)


def test_per_class_counts_variant():
  ids = subsets.per_class_counts(SYNTHETIC, {0: 3, 2: 7}, seed=2)
  assert np.bincount(SYNTHETIC[ids], minlength=3).tolist() == [3, 0, 7]
  # Same class order as per_class: class 0's 3-shot ids are the ones chosen here.
  three_shot = subsets.per_class(SYNTHETIC, 3, seed=2)
  assert _is_subset(three_shot[SYNTHETIC[three_shot] == 0], ids)
  with pytest.raises(ValueError, match='unknown classes \\[9\\]'):
    subsets.per_class_counts(SYNTHETIC, {9: 1}, seed=2)
  with pytest.raises(ValueError, match='class 0 has 10'):
    subsets.per_class_counts(SYNTHETIC, {0: 11}, seed=2)


def test_holdout_is_stratified_disjoint_and_covering():
  train, val = subsets.holdout_split(SYNTHETIC, seed=9, val_fraction=0.3)
  assert np.bincount(SYNTHETIC[val]).tolist() == [3, 6, 2]  # 3.0, 6.0, 2.1 -> 2
  assert not set(train.tolist()) & set(val.tolist())
  np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(len(SYNTHETIC)))


def test_holdout_takes_the_end_so_train_subsets_match_whole_split():
  train, val = subsets.holdout_split(SYNTHETIC, seed=11, val_fraction=0.3)
  # 4 per class fits in every class's train part (7, 14, 5), so the k-shot drawn
  # inside train is exactly the k-shot of the whole split: same front of the order.
  np.testing.assert_array_equal(
    subsets.per_class(SYNTHETIC, 4, seed=11, within=train),
    subsets.per_class(SYNTHETIC, 4, seed=11),
  )
  inside = subsets.per_class(SYNTHETIC, 4, seed=11, within=train)
  assert not set(inside.tolist()) & set(val.tolist())
  # A fraction of train is nested and never leaks validation ids.
  half, full = (subsets.fraction(SYNTHETIC, f, seed=11, within=train) for f in (0.5, 1.0))
  assert _is_subset(half, full)
  np.testing.assert_array_equal(full, train)
  # class 2 keeps 5 training examples: asking 6 inside train must fail.
  with pytest.raises(ValueError, match='class 2 has 5'):
    subsets.per_class(SYNTHETIC, 6, seed=11, within=train)


def test_holdout_errors():
  with pytest.raises(ValueError, match='class 2 has 7'):  # 0.93 * 7 = 6.51 -> 7 of 7
    subsets.holdout_split(SYNTHETIC, seed=0, val_fraction=0.93)
  with pytest.raises(ValueError, match='0 < val_fraction < 1'):
    subsets.holdout_split(SYNTHETIC, seed=0, val_fraction=1.0)


def test_bad_inputs_are_rejected():
  with pytest.raises(ValueError, match='1-D integer'):
    subsets.per_class(SYNTHETIC.astype(float), 1, seed=0)
  with pytest.raises(ValueError, match='within'):
    subsets.per_class(SYNTHETIC, 1, seed=0, within=np.array([0, 999]))


def test_save_load_round_trip(tmp_path):
  ids = subsets.per_class(SYNTHETIC, 2, seed=np.int64(4))
  path = tmp_path / 'runs' / 'ids.json'
  subsets.save_ids(path, ids, seed=np.int64(4), k=2, dataset='synthetic', split='train')
  loaded, metadata = subsets.load_ids(path)
  np.testing.assert_array_equal(loaded, ids)
  assert loaded.dtype == np.int64
  assert metadata == {'seed': 4, 'k': 2, 'dataset': 'synthetic', 'split': 'train'}


def test_load_detects_edited_file(tmp_path):
  path = tmp_path / 'ids.json'
  subsets.save_ids(path, np.array([1, 2, 3]))
  path.write_text(path.read_text().replace('[1, 2, 3]', '[1, 2]'))
  with pytest.raises(ValueError, match='Expected 3 ids'):
    subsets.load_ids(path)


def test_real_cifar10_labels(cifar10_labels):
  labels = cifar10_labels
  per_class_total = np.bincount(labels, minlength=10)
  assert per_class_total.sum() == 5085

  shots = [subsets.per_class(labels, k, seed=0) for k in (1, 5, 10)]
  for k, ids in zip((1, 5, 10), shots):
    assert np.bincount(labels[ids], minlength=10).tolist() == [k] * 10
  assert _is_subset(shots[0], shots[1]) and _is_subset(shots[1], shots[2])

  fractions = [subsets.fraction(labels, f, seed=0) for f in (0.2, 0.4, 0.6, 0.8, 1.0)]
  for f, ids in zip((0.2, 0.4, 0.6, 0.8), fractions):
    got = np.bincount(labels[ids], minlength=10)
    assert np.all(np.abs(got - f * per_class_total) <= 0.5)  # stratified per class
  for smaller, larger in zip(fractions, fractions[1:]):
    assert _is_subset(smaller, larger)
  assert len(fractions[-1]) == 5085

  train, val = subsets.holdout_split(labels, seed=0, val_fraction=0.1)
  assert len(set(train.tolist()) | set(val.tolist())) == 5085
  assert not set(train.tolist()) & set(val.tolist())
  np.testing.assert_array_equal(subsets.per_class(labels, 10, seed=0, within=train), shots[2])
