"""bit_jax.studies.how_small on a finished sweep directory: the command line, the sweep report's
section, which series it reads and how it marks extrapolation. The estimator's statistics are
tested in test_learning_curve.py; here the oracle is the known curve the rows are drawn from."""

import sys

import numpy as np
import pytest

from bit_jax import report
from bit_jax.studies import how_small
from bit_jax.studies import learning_curve as lc

SIZES = (2, 5, 10, 25, 100, 500)
CURVES = {'big': (0.45, 0.5, 0.2), 'none (scratch)': (0.45, 0.3, 0.35)}


def _rows(noise=0.002, seeds=5):
  """A sweep's results rows: two series (one from scratch) at six sizes, plus an upstream
  run without a series, drawn from known curves with a little noise."""
  rng = np.random.default_rng(0)
  rows = [
    dict(name='upstream', seed_index=0, upstream='', init='scratch', per_class=512.2, top1=0.54)
  ]
  for label, (a, b, c) in CURVES.items():
    init = 'scratch' if 'scratch' in label else '{workdir}/upstream/final.npz'
    for k in SIZES:
      for seed in range(seeds):
        top1 = 1 - (a * k**-b + c) + rng.normal(0, noise)
        rows.append(
          dict(
            name=f'{label}_{k}', seed_index=seed, upstream=label, init=init, per_class=k, top1=top1
          )
        )
  return rows


def test_how_small_runs_on_a_sweep_directory_and_finds_the_true_sizes(
  tmp_path, monkeypatch, capsys
):
  rows = _rows()
  report.write_csv(tmp_path / 'results.csv', rows, list(rows[0]))
  monkeypatch.setattr(sys, 'argv', ['report', f'--how_small={tmp_path}', '--target=70'])
  report.main()
  assert 'series: upstream' in capsys.readouterr().out  # inferred from the columns
  table = {
    (r['series'], r['question'].split()[0]): r for r in report.read_csv(tmp_path / 'how_small.csv')
  }
  big = np.array(CURVES['big'])
  scratch_at_500 = 1 - lc.error_at(np.array(CURVES['none (scratch)']), [500])[0]
  truth = {
    'within': lc.k_reaching(big, lc.error_at(big, [500])[0] + 0.01),  # ~200
    'top-1': lc.k_reaching(big, 0.3),  # top-1 70%: k = 16
    'beats': lc.k_reaching(big, 1 - scratch_at_500),  # ~2.6
  }
  for question, k in truth.items():
    row = table['big', question]
    assert float(row['k_low']) <= k <= float(row['k_high'])
    assert float(row['k']) == pytest.approx(k, rel=0.1)  # noise 0.2 points: close
    assert row['beyond_grid'] == '' and row['n'] == '5'
  assert ('none (scratch)', 'beats') not in table  # scratch is the reference, not a series
  assert (tmp_path / 'how_small.png').stat().st_size > 0
  assert '| big | top-1 70% |' in (tmp_path / 'how_small.md').read_text()


def test_answers_beyond_the_grid_are_marked_and_unreachable_ones_say_never(tmp_path):
  series = how_small.series_of(_rows(), 'upstream')
  answers, _ = how_small.estimate(series, target=78, draws=200)
  rows = {(r['series'], r['question']): r for r in answers}
  # Top-1 78% needs k ~ 2000 on the 'big' curve (floor 80%): beyond the largest size, 500.
  far = rows['big', 'top-1 78%']
  assert far['k'] > 500 and far['beyond_grid'] == 'estimate'
  # Scratch levels off at 65%: it never reaches 78%.
  never = rows['none (scratch)', 'top-1 78%']
  assert never['k'] == np.inf and never['k_high'] == np.inf
  text = how_small.markdown(answers)
  assert 'never [' in text and '‡' in text


def test_a_sweep_over_images_per_class_gets_a_how_small_section(tmp_path):
  rows = _rows()
  columns = list(rows[0])
  settings = {'x': 'per_class', 'series': 'upstream', 'log_x': True, 'title': 'synthetic'}
  report.write_all(tmp_path, 'synthetic', rows, columns, [], [], settings)
  assert 'How small can the target set be?' in (tmp_path / 'results.md').read_text()
  assert len(report.read_csv(tmp_path / 'how_small.csv')) == 3  # big: 2 answers; scratch: 1
  settings = {'x': 'batch_size', 'series': 'upstream'}  # no size swept: no section
  other = tmp_path / 'other'
  other.mkdir()
  report.write_all(
    other,
    'other',
    [dict(r, batch_size=8) for r in rows],
    columns + ['batch_size'],
    [],
    [],
    settings,
  )
  assert not (other / 'how_small.csv').exists()
  # Before any run of a series has finished (the report is written after every repeat).
  assert how_small.write(other, rows[:1], 'upstream') is None


def test_runs_at_one_size_are_no_curve():
  """A class split's two directions at 25 per class are two runs but one size: no series."""
  rows = [
    dict(
      name=f'snt1_{d}', seed_index=s, condition='snt1', init='x', per_class=25, top1=0.3 + s / 100
    )
    for d in ('a_to_b', 'b_to_a')
    for s in range(5)
  ]
  assert how_small.series_of(rows, 'condition') == []
  both = rows + [dict(r, name='snt1_50', per_class=50, top1=r['top1'] + 0.05) for r in rows[:5]]
  [series] = how_small.series_of(both, 'condition')
  assert sorted(set(series.k.tolist())) == [25.0, 50.0]
