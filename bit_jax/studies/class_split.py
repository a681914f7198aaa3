"""A class split whose source and target swap: Soekhoe et al.'s protocol, where one dataset's
classes are cut into two disjoint halves, a source network trains on one half, transfers to
the other, and every result is the mean of that experiment and its swap.

A sweep config with `swap = dict(halves=(A, B))` (two disjoint tuples of class ids; see
`halves`) runs every run that mentions the halves twice: in direction 'A->B' (source A,
target B) and 'B->A'. In a run, the values '{source}' and '{target}' (of `classes`, say) are
the direction's class tuples, and '{direction}' in any text is 'AB' or 'BA', so a target run
finds its own direction's source: `init='{workdir}/source_{direction}/final.npz'`. The two
runs are named `<name>_AB` and `<name>_BA` and tagged `direction`.

`direction_means` turns the rows of both directions into one row per run and seed: the mean
of the two, tagged direction 'mean'; the sweep reports those (results.csv, comparisons), and
each direction by itself under `<workdir>/directions/`.
"""

from types import MappingProxyType

import numpy as np

DIRECTIONS = MappingProxyType({'AB': 'A->B', 'BA': 'B->A'})
SOURCE, TARGET, DIRECTION = '{source}', '{target}', '{direction}'
# Measured columns averaged over the two directions (bit_jax/report.py's MEASURED).
AVERAGED = ('train_examples', 'per_class', 'top1', 'top5', 'steps', 'examples_seen')
AVERAGED += ('compute_epochs', 'wall_time_s')


def halves(num_classes: int, seed: int | None = 0) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """Two disjoint halves of classes 0..num_classes-1, each sorted: a seeded random split
  (Soekhoe et al. split at random), or with seed=None the first and the second half."""
  order = (
    np.arange(num_classes) if seed is None else np.random.default_rng(seed).permutation(num_classes)
  )
  half = num_classes // 2
  return tuple(sorted(map(int, order[:half]))), tuple(sorted(map(int, order[half:])))


def _mentions(value) -> bool:
  if isinstance(value, str):
    return value in (SOURCE, TARGET) or DIRECTION in value
  if isinstance(value, (list, tuple)):
    return any(_mentions(v) for v in value)
  if isinstance(value, dict):
    return any(_mentions(v) for v in value.values())
  return False


def _fill(value, source, target, direction):
  if value == SOURCE:
    return tuple(source)
  if value == TARGET:
    return tuple(target)
  if isinstance(value, str):
    return value.replace(DIRECTION, direction)
  if isinstance(value, (list, tuple)):
    return type(value)(_fill(v, source, target, direction) for v in value)
  if isinstance(value, dict):
    return {k: _fill(v, source, target, direction) for k, v in value.items()}
  return value


def expand(runs: list[dict], swap: dict | None) -> list[dict]:
  """Every run that mentions the halves, once per direction (see module); others as they are."""
  if not swap:
    return runs
  a, b = (tuple(h) for h in swap['halves'])
  if not a or not b or set(a) & set(b):
    raise ValueError(f'swap halves must be two non-empty disjoint class tuples; got {a}, {b}.')
  out = []
  for run in runs:
    if not _mentions({k: v for k, v in run.items() if k != 'name'}):
      out.append(run)
      continue
    for direction, (source, target) in (('AB', (a, b)), ('BA', (b, a))):
      filled = _fill(run, source, target, direction)
      filled['name'] = f'{run["name"]}_{direction}'
      filled['tags'] = {**run.get('tags', {}), 'direction': DIRECTIONS[direction]}
      out.append(filled)
  return out


def direction_means(rows: list[dict]) -> list[dict]:
  """The rows without a direction as they are, and for every run and seed whose two
  directions both finished, one row: their mean (AVERAGED), named and tagged like the run."""
  out, pairs = [], {}
  for row in rows:
    if row.get('direction') in DIRECTIONS.values():
      pairs.setdefault((row['name'][: -len('_AB')], row['seed_index']), []).append(row)
    else:
      out.append(row)
  for (name, _), pair in pairs.items():
    if len(pair) != 2:
      continue  # one direction still training
    # What differs between the directions (the classes, the init) is neither's: left blank.
    mean = {k: v if all(r.get(k) == v for r in pair) else '' for k, v in pair[0].items()}
    for column in AVERAGED:
      values = [r.get(column) for r in pair]
      if all(isinstance(v, (int, float)) for v in values):
        mean[column] = float(np.mean(values))
    out.append({**mean, 'name': name, 'direction': 'mean'})
  return out
