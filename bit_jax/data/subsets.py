"""Nested, stratified, seeded subsets of a labelled split (k-shot, fractions, holdout).

An example's id is its position in the split (the order TFDS reads it without
shuffling). Every subset comes from ONE random order per class, fixed by the seed:

  order of class c = ids of class c sorted by a seeded random priority
           (one ``default_rng(seed).permutation`` over the whole split)

* `per_class(k)` takes the first k of each class order, so 1-shot ⊂ 5-shot ⊂ 10-shot.
* `fraction(f)` takes the first round(f * n_c) of each class, so 20% ⊂ 40% ⊂ 100%.
* `per_class_counts` takes a chosen number from each class's front.
* `holdout_split` takes validation examples from the END of each class order, so a
 subset drawn ``within`` the train part is still the front of the same order (and
 equals the one drawn from the whole split whenever it fits in the train part).

The order never depends on which subset is asked for, nor on ``within``:
candidate ids only filter it. Classes are the label values present in the split.
All functions return sorted int64 id arrays.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping

import numpy as np
from etils import epath

from bit_jax.runtime import files


@dataclasses.dataclass(frozen=True)
class _ClassOrders:
  """Candidate ids grouped by class, each class in its seeded random order."""

  ordered_ids: np.ndarray  # candidates, class after class
  rank_in_class: np.ndarray  # 0 for the first of its class order, 1 for the next ...
  class_index: np.ndarray  # index into `classes` of each ordered id
  classes: np.ndarray  # every label value of the split, ascending
  candidates_per_class: np.ndarray  # how many candidates each class has

  def first(self, take_per_class: np.ndarray) -> np.ndarray:
    """Sorted ids of the first ``take_per_class[i]`` candidates of class i."""
    chosen = self.rank_in_class < take_per_class[self.class_index]
    return np.sort(self.ordered_ids[chosen]).astype(np.int64)


def _check_labels(labels: np.ndarray) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(
      'Expected labels as a 1-D integer array (one class id per example, in '
      f'split order); got dtype {labels.dtype} with shape {labels.shape}.'
    )
  return labels


def _check_within(within: np.ndarray | None, num_examples: int) -> np.ndarray:
  if within is None:
    return np.arange(num_examples, dtype=np.int64)
  candidates = np.unique(np.asarray(within, dtype=np.int64))
  if candidates.size and (candidates[0] < 0 or candidates[-1] >= num_examples):
    raise ValueError(
      f'Expected `within` ids in [0, {num_examples}) (positions in the split); '
      f'got ids from {candidates[0]} to {candidates[-1]}.'
    )
  return candidates


def _class_orders(labels: np.ndarray, seed: int, within: np.ndarray | None) -> _ClassOrders:
  labels = _check_labels(labels)
  candidates = _check_within(within, len(labels))
  # One priority per example of the whole split: an example's place in its class
  # order is then the same whatever `within` is and whatever subset is asked for.
  priority = np.random.default_rng(seed).permutation(len(labels))
  ordered_ids = candidates[np.lexsort((priority[candidates], labels[candidates]))]
  # All classes of the split, so a class with no candidates left is still reported.
  classes = np.unique(labels)
  class_index = np.searchsorted(classes, labels[ordered_ids])
  candidates_per_class = np.bincount(class_index, minlength=len(classes))
  class_start = np.concatenate([[0], np.cumsum(candidates_per_class)[:-1]])
  rank_in_class = np.arange(len(ordered_ids)) - class_start[class_index]
  return _ClassOrders(ordered_ids, rank_in_class, class_index, classes, candidates_per_class)


def _check_enough(orders: _ClassOrders, wanted: np.ndarray) -> np.ndarray:
  short = np.flatnonzero(wanted > orders.candidates_per_class)
  if short.size:
    details = ', '.join(
      f'class {orders.classes[i]} has {orders.candidates_per_class[i]}' for i in short[:10]
    )
    more = f' (and {short.size - 10} more classes)' if short.size > 10 else ''
    raise ValueError(
      f'Expected at least the requested number of examples per class; '
      f'{details}{more} (wanted {wanted[short[0]]}). Ask for fewer.'
    )
  return wanted


def per_class(
  labels: np.ndarray,
  k: int,
  seed: int,
  *,
  within: np.ndarray | None = None,
) -> np.ndarray:
  """k-shot subset: the first ``k`` ids of every class order.

  ``within`` restricts candidates (e.g. the train part of `holdout_split`). A
  class with fewer than ``k`` candidates is an error.
  """
  if k < 0:
    raise ValueError(f'Expected k >= 0 examples per class; got k={k}.')
  orders = _class_orders(labels, seed, within)
  wanted = np.full(len(orders.classes), k)
  return orders.first(_check_enough(orders, wanted))


def per_class_counts(
  labels: np.ndarray,
  counts: Mapping[int, int],
  seed: int,
  *,
  within: np.ndarray | None = None,
) -> np.ndarray:
  """The first ``counts[c]`` ids of class c's order; classes not in ``counts`` give none."""
  orders = _class_orders(labels, seed, within)
  unknown = sorted(set(counts) - set(orders.classes.tolist()))
  if unknown:
    raise ValueError(
      f'Expected counts keyed by label values of the split '
      f'{orders.classes.tolist()[:20]}...; got unknown classes {unknown[:20]}.'
    )
  if any(count < 0 for count in counts.values()):
    raise ValueError(f'Expected counts >= 0; got {dict(counts)}.')
  wanted = np.array([counts.get(int(c), 0) for c in orders.classes], dtype=np.int64)
  return orders.first(_check_enough(orders, wanted))


def _round_half_up(values: np.ndarray) -> np.ndarray:
  # Half-up (not numpy's half-to-even) so 0.5 of 3 examples is 2, as people expect;
  # both are monotone, which is what keeps fractions nested.
  return np.floor(values + 0.5).astype(np.int64)


def fraction(
  labels: np.ndarray,
  f: float,
  seed: int,
  *,
  within: np.ndarray | None = None,
) -> np.ndarray:
  """Stratified fraction: the first round(f * n_c) of every class order.

  ``n_c`` counts class c's candidates (all of the split, or those ``within``).
  Rounding is half-up; a rare class may get 0 examples at small ``f``.
  """
  if not 0 < f <= 1:
    raise ValueError(f'Expected a fraction 0 < f <= 1; got f={f}.')
  orders = _class_orders(labels, seed, within)
  return orders.first(_round_half_up(f * orders.candidates_per_class))


def holdout_split(
  labels: np.ndarray,
  seed: int,
  *,
  val_fraction: float,
  within: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Stratified ``(train_ids, val_ids)``: disjoint, together all candidates.

  Each class gives round half-up of ``val_fraction * n_c`` to validation: the LAST ids
  of its order, so `per_class`/`fraction` with ``within=train_ids`` keep the same front
  of the order. Every class keeps at least one training example.
  """
  if not 0 < val_fraction < 1:
    raise ValueError(f'Expected 0 < val_fraction < 1; got {val_fraction}.')
  orders = _class_orders(labels, seed, within)
  val_counts = _round_half_up(val_fraction * orders.candidates_per_class)
  no_train_left = np.flatnonzero(val_counts >= orders.candidates_per_class)
  if no_train_left.size:
    i = no_train_left[0]
    raise ValueError(
      f'Expected every class to keep a training example; class '
      f'{orders.classes[i]} has {orders.candidates_per_class[i]} candidates and '
      f'{val_counts[i]} would go to validation. Use a smaller validation size.'
    )
  train_counts = orders.candidates_per_class - val_counts
  train_ids = orders.first(train_counts)
  val_ids = np.setdiff1d(orders.ordered_ids, train_ids).astype(np.int64)
  return train_ids, val_ids


def _to_json_value(value):
  # numpy scalars and arrays show up in metadata (seeds, fractions); JSON needs
  # plain Python values.
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, os.PathLike):
    return os.fspath(value)
  raise TypeError(f'Expected JSON-serialisable metadata; got {type(value).__name__}: {value!r}.')


def save_ids(path: str | os.PathLike, ids: np.ndarray, **metadata) -> None:
  """Writes ``ids`` and ``metadata`` (seed, k or fraction, dataset, split ...) as JSON.

  The exact ids are stored, not the recipe, so a run's data can be audited even
  if the subset code changes later.
  """
  ids = np.asarray(ids)
  if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(
      f'Expected a 1-D integer array of example ids; got dtype {ids.dtype} with shape {ids.shape}.'
    )
  record = {'metadata': metadata, 'num_ids': int(ids.size), 'ids': ids.tolist()}
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  # Written whole or not at all: a crash never leaves a truncated id file behind.
  files.write_atomic(path, json.dumps(record, default=_to_json_value))


def load_ids(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
  """Reads a `save_ids` file: ``(ids as int64 array, metadata dict)``."""
  record = json.loads(epath.Path(path).read_text())
  ids = np.asarray(record['ids'], dtype=np.int64)
  if ids.size != record['num_ids']:
    raise ValueError(
      f'Expected {record["num_ids"]} ids in {path}; found {ids.size}. The '
      'file was edited or corrupted: regenerate it with save_ids.'
    )
  return ids, record['metadata']
