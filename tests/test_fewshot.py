"""The closed-form few-shot probe. Oracle: scikit-learn (StandardScaler + Ridge with its own,
unpenalised intercept) on features computed separately, image by image, with `model.apply`."""

import jax
import numpy as np
import pytest
import tensorflow as tf
from conftest import TEST_DATA
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

from bit_jax.data import data_sources, subsets
from bit_jax.models import pretrained
from bit_jax.training import linear_probe


def sklearn_predictions(train_x, train_y, test_x, num_classes, l2):
  scaler = StandardScaler().fit(train_x)
  targets = 2.0 * np.eye(num_classes)[train_y] - 1.0
  ridge = Ridge(alpha=l2, fit_intercept=True).fit(scaler.transform(train_x), targets)
  return np.argmax(ridge.predict(scaler.transform(test_x)), axis=1)


@pytest.mark.parametrize('n,d', [(30, 200), (400, 50)])  # the dual and the primal solve
def test_ridge_matches_sklearn(n, d):
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(5, d))
  train_y, test_y = rng.integers(0, 5, n), rng.integers(0, 5, 500)
  train_x = centres[train_y] + 2.0 * rng.normal(size=(n, d))
  test_x = centres[test_y] + 2.0 * rng.normal(size=(500, d))
  for l2 in (1.0, linear_probe.L2):
    ours = linear_probe.predict(linear_probe.fit_ridge(train_x, train_y, 5, l2), test_x)
    expected = sklearn_predictions(train_x, train_y, test_x, 5, l2)
    assert 0.3 < np.mean(expected == test_y) < 1.0  # a task where predictions can differ
    np.testing.assert_array_equal(ours, expected)


def oracle_features(model, params, source, crop):
  """Features of every example of `source` by id, in one batch, without the input pipeline."""
  records = list(source.records().as_numpy_iterator())
  images = tf.image.resize(np.stack([r['image'] for r in records]), [crop, crop]).numpy()
  feats = jax.jit(model.apply, static_argnames='return_intermediates')(
    {'params': params}, images / 127.5 - 1.0, return_intermediates=True
  )[1]
  ids = np.array([r['id'] for r in records])
  assert np.array_equal(ids, np.arange(len(ids)))
  return np.asarray(feats['pre_logits'], np.float64), np.array([r['label'] for r in records])


def test_fewshot_accuracies_match_sklearn_on_real_features():
  model, params = pretrained.load_pretrained(TEST_DATA / 'bit_small_official.npz', num_classes=0)
  train, test = (
    data_sources.get_source('sklearn_digits', s, classes=(0, 1, 2, 3, 4)) for s in ('train', 'test')
  )
  shots, crop, seed = (1, 3, 10), 16, 1
  got = linear_probe.fewshot_accuracies(
    model, params, train, test, shots, crop, seed, batch_size=64
  )
  test_x, test_y = oracle_features(model, params, test, crop)
  all_x, all_y = oracle_features(model, params, train, crop)
  for k in shots:
    ids = subsets.per_class(train.labels(), k, seed)
    assert len(ids) == 5 * k
    predictions = sklearn_predictions(all_x[ids], all_y[ids], test_x, 5, linear_probe.L2)
    assert got[k] == pytest.approx(np.mean(predictions == test_y), abs=1e-9), k
  assert 0.2 < got[1] < got[10]  # better than chance (0.2), and more shots help
