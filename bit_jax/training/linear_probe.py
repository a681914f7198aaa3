"""Few-shot linear evaluation on frozen pre-logits, in closed form, as big_vision does
(`python -m bit_jax.fewshot` is its command line).

For each k the training set is `subsets.per_class(labels, k, seed)` (nested: the 1-shot images
are among the 5-shot ones). Features are `model.apply(..., return_intermediates=True)[1]
['pre_logits']` of the eval preprocessing (resize to `crop`, no augmentation); each dimension
is standardised with the training set's mean and std (+1e-5), a constant column of 100 is
appended (a bias that the ridge penalty barely touches), and the targets are one-hot
rescaled to +-1. Then W = (X^T X + l2 I)^-1 X^T Y, the prediction is argmax(X_test W), and
the accuracy is measured on the whole eval split. big_vision's default l2 is 2^10.

`fewshot_accuracies` is the function to call from research code; `Probe` builds the data and
the compiled feature function once, for probing during training (bit_jax/training/evaluators.py);
`accuracies_of_features` fits on features saved by `bit_jax.predict --features`.
"""

import functools

import jax
import numpy as np

from bit_jax.data import input_pipeline, subsets

L2 = 2.0**10  # big_vision's fewshot default
BIAS_CONSTANT = 100.0  # big_vision: a large constant feature, so the bias is ~unregularised
STD_EPS = 1e-5


def pre_logits(model, params, images):
  return model.apply({'params': params}, images, return_intermediates=True)[1]['pre_logits']


def pre_logits_fn(model):
  """A jitted `(params, images) -> pre-logits`; build it once, it compiles per image shape."""
  return jax.jit(functools.partial(pre_logits, model))


def features(apply, params, batches):
  """(pre-logit features [n, d] float64, labels [n], ids [n]) of eval `batches`; `apply` is a
  `pre_logits_fn(model)`."""
  feats, labels, read = [], [], []
  for batch in batches:
    mask = batch['mask']
    feats.append(np.asarray(apply(params, batch['image']), np.float64)[mask])
    labels.append(batch['label'][mask])
    read.append(batch['id'][mask])
  return np.concatenate(feats), np.concatenate(labels), np.concatenate(read)


def _design(x, mean, std):
  x = (x - mean) / std
  return np.concatenate([x, np.full((len(x), 1), BIAS_CONSTANT)], axis=1)


def fit_ridge(x, labels, num_classes, l2=L2):
  """(mean, std, W) of the closed-form ridge regression of +-1 one-hot targets on `x`."""
  mean, std = x.mean(axis=0), x.std(axis=0) + STD_EPS
  design = _design(x, mean, std)
  targets = 2.0 * np.eye(num_classes)[labels] - 1.0
  n, d = design.shape
  if n < d:  # the same W by the push-through identity, solving an n x n system instead
    w = design.T @ np.linalg.solve(design @ design.T + l2 * np.eye(n), targets)
  else:
    w = np.linalg.solve(design.T @ design + l2 * np.eye(d), design.T @ targets)
  return mean, std, w


def predict(fit, x):
  mean, std, w = fit
  return np.argmax(_design(x, mean, std) @ w, axis=1)


class Probe:
  """The probe of one dataset, built once (k-shot subsets, input pipelines, the compiled
  feature function) and evaluated on any parameters with `accuracies(params)`."""

  def __init__(
    self, model, train_source, test_source, shots, crop, seed=0, *, l2=L2, batch_size=256
  ):
    self.shots, self.l2, self.num_classes = sorted(shots), l2, train_source.num_classes
    labels = train_source.labels()
    self._subsets = {k: subsets.per_class(labels, k, seed) for k in self.shots}
    # One process reads everything: the probe is small and every process gets the same answer.
    eval_data = lambda source, ids: input_pipeline.eval_data(
      source, global_batch_size=batch_size, crop=crop, ids=ids, process_index=0, process_count=1
    )
    self._train = eval_data(train_source, self._subsets[self.shots[-1]])
    self._test = eval_data(test_source, None)
    self._features = pre_logits_fn(model)

  def accuracies(self, params) -> dict[int, float]:
    """{k: test top-1} of the ridge probe trained on k images per class, for each k."""
    train_x, train_y, train_ids = features(self._features, params, self._train)
    test_x, test_y, _ = features(self._features, params, self._test)
    accuracies = {}
    for k in self.shots:  # the k-shot sets are nested: each is a subset of the largest one's
      rows = np.isin(train_ids, self._subsets[k])
      fit = fit_ridge(train_x[rows], train_y[rows], self.num_classes, self.l2)
      accuracies[k] = float(np.mean(predict(fit, test_x) == test_y))
    return accuracies


def fewshot_accuracies(
  model, params, train_source, test_source, shots, crop, seed=0, *, l2=L2, batch_size=256
):
  """{k: test top-1} of the ridge probe trained on k images per class, for each k in shots."""
  return Probe(
    model, train_source, test_source, shots, crop, seed, l2=l2, batch_size=batch_size
  ).accuracies(params)


def accuracies_of_features(train_file, test_file, shots, seed=0, l2=L2) -> dict[int, float]:
  """{k: test top-1} of the probe fitted on k examples per class of saved features (the .npz
  files `bit_jax.predict --features` writes; examples without a label are left out)."""
  (train_x, train_y), (test_x, test_y) = (
    (data['features'].reshape(len(data['features']), -1).astype(np.float64), data['labels'])
    for data in (np.load(train_file), np.load(test_file))
  )
  known, test_known = train_y >= 0, test_y >= 0
  train_x, train_y, test_x, test_y = (
    train_x[known],
    train_y[known],
    test_x[test_known],
    test_y[test_known],
  )
  num_classes = int(max(train_y.max(), test_y.max())) + 1
  result = {}
  for k in sorted(shots):
    rows = subsets.per_class(train_y, k, seed)
    fit = fit_ridge(train_x[rows], train_y[rows], num_classes, l2)
    result[k] = float(np.mean(predict(fit, test_x) == test_y))
  return result
