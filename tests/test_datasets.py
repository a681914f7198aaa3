"""Dataset names -> sources. Oracle: scikit-learn's own digits arrays."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from bit_jax import datasets


def images_of(source):
  return np.stack([r['image'] for r in source.records().as_numpy_iterator()])


def test_digits_slices_are_disjoint_and_cover_train():
  a, b = datasets.digits_source('train[:60%]'), datasets.digits_source('train[60%:]')
  train, test = datasets.digits_source('train'), datasets.digits_source('test')
  assert a.num_examples + b.num_examples == train.num_examples
  assert train.num_examples + test.num_examples == 1797
  flat = lambda s: {x.tobytes() for x in images_of(s)}
  assert not flat(a) & flat(b) and not flat(train) & flat(test)
  digits = load_digits()                  # pixels 0..16 scaled to 0..255, grey -> 3 channels
  first = images_of(test)[0]
  assert first.shape == (8, 8, 3) and (first[..., 0] == first[..., 2]).all()
  matches = [i for i, img in enumerate(digits.images)
             if np.array_equal(np.round(img * 255 / 16).astype(np.uint8), first[..., 0])]
  assert digits.target[matches[0]] == test.labels()[0]
  with pytest.raises(ValueError, match='sliceable'):
    datasets.digits_source('validation')


def test_restrict_classes_relabels_in_order_with_contiguous_ids():
  full = datasets.digits_source('test')
  only = datasets.restrict_classes(full, [7, 3])
  records = list(only.records().as_numpy_iterator())
  assert [r['id'] for r in records] == list(range(only.num_examples))
  expected = np.array([{7: 0, 3: 1}[l] for l in full.labels() if l in (7, 3)])
  np.testing.assert_array_equal(only.labels(), expected)
  np.testing.assert_array_equal([r['label'] for r in records], expected)
  assert only.num_classes == 2
  with pytest.raises(ValueError, match='not in'):
    datasets.restrict_classes(full, [12])
