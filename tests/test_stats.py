"""bit_jax.studies.stats.holm and the Holm column of a sweep's comparisons, against a hand computation
and statsmodels' multipletests (an independent implementation)."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from bit_jax import report
from bit_jax.studies import stats


def test_holm_matches_a_hand_computation():
  # m = 4 p-values; sorted 0.005, 0.01, 0.03, 0.04 are multiplied by 4, 3, 2, 1:
  # 0.02, 0.03, 0.06, 0.04 -> running maximum 0.02, 0.03, 0.06, 0.06; back in the given order.
  assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
  # None is no test: left out of the family (m = 3 here) and kept in place. Sorted 0.01,
  # 0.6, 0.7 times 3, 2, 1: 0.03, 1.2 -> capped at 1, 0.7 -> the running maximum 1.
  assert stats.holm([None, 0.6, 0.7, 0.01]) == [None, 1.0, 1.0, pytest.approx(0.03)]
  assert stats.holm([]) == []


def test_holm_matches_statsmodels():
  multipletests = pytest.importorskip('statsmodels.stats.multitest').multipletests
  rng = np.random.default_rng(0)
  for m in (1, 2, 7, 18):
    p = np.concatenate([rng.uniform(0, 0.05, m // 2), rng.uniform(0, 1, m - m // 2)])
    rng.shuffle(p)
    reject, expected, _, _ = multipletests(p, alpha=0.05, method='holm')
    assert stats.holm(list(p)) == pytest.approx(list(expected), rel=1e-12)
    assert [q < 0.05 for q in stats.holm(list(p))] == list(reject)


def test_comparisons_csv_gives_holm_values_and_significance_after_correction(tmp_path):
  # Three paired comparisons on 4 seeds; each difference vector gives a t-test p-value
  # computed below by scipy, and Holm by hand from those.
  differences = {
    'b': (0.03, 0.035, 0.028, 0.033),
    'c': (0.02, 0.05, 0.01, 0.03),
    'd': (0, 0.01, -0.01, 0.005),
  }
  base = (0.5, 0.6, 0.55, 0.52)
  rows = [dict(name='a', seed_index=k, arm='a', top1=v) for k, v in enumerate(base)]
  for arm, d in differences.items():
    rows += [
      dict(name=arm, seed_index=k, arm=arm, top1=v - dk) for k, (v, dk) in enumerate(zip(base, d))
    ]
  p = {arm: scipy_stats.ttest_1samp(d, 0).pvalue for arm, d in differences.items()}
  order = sorted(p, key=p.get)
  holm, running = {}, 0
  for rank, arm in enumerate(order):
    running = max(running, min(1, (3 - rank) * p[arm]))
    holm[arm] = running
  assert p['c'] < 0.05 < holm['c']  # the case the correction is for: significant alone only
  compare = [dict(column='arm', a='a', b=arm) for arm in differences]
  report.write_all(
    tmp_path,
    'made_up',
    rows,
    ['name', 'seed_index', 'arm', 'top1'],
    [],
    [],
    {'x': 'arm', 'compare': compare},
  )
  table = {r['b']: r for r in report.read_csv(tmp_path / 'comparisons.csv')}
  for arm in differences:
    assert float(table[arm]['p_value']) == pytest.approx(p[arm], rel=1e-8)
    assert float(table[arm]['p_holm']) == pytest.approx(holm[arm], rel=1e-8)
    assert table[arm]['significant'] == str(holm[arm] < 0.05)
  text = (tmp_path / 'results.md').read_text()
  assert 'Holm-adjusted over the 3 comparisons' in text
