"""The statistics of a study: repeated runs summarised with 95% confidence intervals, and
paired differences between series that share their subsets and seeds.

* `summary(values)`: mean, sample standard deviation (n - 1), n and the two-sided 95%
  interval of the mean from Student's t distribution, mean +- t(0.975, n - 1) * sd / sqrt(n)
  (scipy's t quantile). It assumes roughly normal run-to-run noise; with n = 5 it is wide on
  purpose.
* `paired(a, b)`: the same for the differences a_i - b_i of runs that share seed i (the same
  subset draw and training seed on both sides), plus the paired t test's p-value; a
  difference is significant at 95% on its own when its interval excludes 0 (p < 0.05).
* `holm(p_values)`: Holm's step-down adjustment of a family of p-values (a study's
  comparisons): the i-th smallest of m becomes max over j <= i of min(1, (m - j + 1) p_(j)).
  Rejecting where the adjusted value is below 0.05 keeps the chance of any false "significant"
  in the family at 5% whatever the comparisons' dependence (they share seeds and runs), which
  is why it is used rather than a correction that assumes independence.

Pure functions of numbers; `report.py` groups a results table and calls them.
"""

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as scipy_stats

LEVEL = 0.95


def summary(values: Sequence[float]) -> dict:
  """{'mean', 'std', 'n', 'ci_low', 'ci_high'} of `values` (std and interval None if n < 2)."""
  x = np.asarray(values, np.float64)
  n = len(x)
  if n == 0:
    raise ValueError('Expected at least one value to summarise; got none.')
  mean = float(x.mean())
  if n < 2:
    return {'mean': mean, 'std': None, 'n': 1, 'ci_low': None, 'ci_high': None}
  std = float(x.std(ddof=1))
  half = float(scipy_stats.t.ppf(0.5 + LEVEL / 2, n - 1)) * std / math.sqrt(n)
  return {'mean': mean, 'std': std, 'n': n, 'ci_low': mean - half, 'ci_high': mean + half}


def paired(a: Sequence[float], b: Sequence[float]) -> dict:
  """Summary of the differences a - b, with the paired t test's p-value and `significant`."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape:
    raise ValueError(
      f'Expected paired values (one a and one b per seed); got {len(a)} and {len(b)}.'
    )
  result = summary(a - b)
  if result['n'] < 2:
    return {**result, 'p_value': None, 'significant': None}
  if np.all(a - b == (a - b)[0]):  # no spread: the t test is undefined
    p_value = 0.0 if (a - b)[0] != 0 else 1.0
  else:
    p_value = float(scipy_stats.ttest_rel(a, b).pvalue)
  return {**result, 'p_value': p_value, 'significant': p_value < 1 - LEVEL}


def holm(p_values: Sequence[float | None]) -> list[float | None]:
  """Holm-adjusted p-values, in the order given; None (no test) stays None and is not
  counted in the family."""
  tested = [i for i, p in enumerate(p_values) if p is not None]
  order = sorted(tested, key=lambda i: p_values[i])
  m, running, adjusted = len(order), 0.0, [None] * len(p_values)
  for rank, i in enumerate(order):
    running = max(running, min(1.0, (m - rank) * p_values[i]))  # step-down: never decreases
    adjusted[i] = running
  return adjusted
