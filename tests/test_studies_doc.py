"""docs/studies.md against docs/studies/*/: every headline figure is recomputed from the CSVs,
and every 'mean [low, high]' the page shows must be one the CSVs give.

A headline table sits between `<!-- headline: <study> -->` and `<!-- /headline -->`; each row
is `| key | value |`, the key saying what to recompute (`figure` below). Differences between
runs that no comparison of the study makes (`paired a - b`) are recomputed with scipy from
results.csv, independently of bit_jax.studies.stats. A key ending in ` in directions/` is recomputed
from the study's `directions/` (a class-swap study's two directions, each training a row,
where the study's own tables hold their means).
"""

import math
import re

import numpy as np
import pytest
from conftest import REPO
from scipy import stats as scipy_stats

from bit_jax import report

DOC = REPO / 'docs' / 'studies.md'
STUDIES = REPO / 'docs' / 'studies'
BLOCK = re.compile(r'<!-- headline: (\w+) -->\n(.*?)<!-- /headline -->', re.S)
TRIPLE = re.compile(r'([-−+]?[0-9][0-9,.]*) \[([-−+]?[0-9][0-9,.]*), ([-−+]?[0-9][0-9,.]*)\]')


def p_text(p: float) -> str:
  return '< 0.001' if p < 0.001 else f'{p:.2g}'


def _scale(y: str):
  """How a metric is shown: top-1 in % (points for differences), the rest as they are."""
  if y == 'top1':
    return 100, '.1f'
  return (1, ',.0f') if y in ('examples_seen', 'steps') else (1, '.1f')


def _triple(mean, low, high, y, signed=False):
  scale, spec = _scale(y)
  spec = ('+' if signed else '') + spec
  return f'{mean * scale:{spec}} [{low * scale:{spec}}, {high * scale:{spec}}]'


def _paired(results, a, b):
  def values(name):
    rows = sorted((r for r in results if r['name'] == name), key=lambda r: int(r['seed_index']))
    return np.array([float(r['top1']) for r in rows])

  x, y = values(a), values(b)
  d = x - y
  low, high = scipy_stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=scipy_stats.sem(d))
  return (
    f'{_triple(d.mean(), low, high, "top1", True)}, p {p_text(scipy_stats.ttest_rel(x, y).pvalue)}'
  )


DIRECTIONS = ' in directions/'


def figure(study: str, key: str) -> str:
  """The text a headline key stands for, recomputed from docs/studies/<study>/."""
  directory = STUDIES / study
  if key.endswith(DIRECTIONS):
    directory, key = directory / 'directions', key[: -len(DIRECTIONS)]
  results = report.read_csv(directory / 'results.csv')
  kind, _, rest = key.partition(' ')
  if kind in ('top1', 'epochs', 'examples'):  # a run's mean and 95% interval
    y = {'top1': 'top1', 'epochs': 'compute_epochs', 'examples': 'examples_seen'}[kind]
    [row] = [r for r in report.read_csv(directory / 'summary.csv') if r['name'] == rest]
    return _triple(*(float(row[f'{y}_{s}']) for s in ('mean', 'ci_low', 'ci_high')), y)
  if kind == 'diff':  # 'diff <y> <a> - <b> [at <at>]': a row of comparisons.csv
    y, _, rest = rest.partition(' ')
    pair, _, at = rest.partition(' at ')
    a, b = pair.split(' - ')
    [row] = [
      r
      for r in report.read_csv(directory / 'comparisons.csv')
      if (r['y'], r['a'], r['b'], r['at']) == (y, a, b, at)
    ]
    numbers = (float(row[k]) for k in ('mean', 'ci_low', 'ci_high'))
    return (
      f'{_triple(*numbers, y, signed=True)}, p {p_text(float(row["p_value"]))}, '
      f'Holm {p_text(float(row["p_holm"]))}'
    )
  if kind == 'paired':  # 'paired <run a> - <run b>': top-1, seed by seed, scipy
    return _paired(results, *rest.split(' - '))
  if kind == 'k':  # 'k <series> / <first word of the question>': how_small.csv
    series, _, question = rest.partition(' / ')
    [row] = [
      r
      for r in report.read_csv(directory / 'how_small.csv')
      if r['series'] == series and r['question'].split()[0] == question
    ]
    return ' '.join(
      ['{:.3g} [{:.3g}, {:.3g}]'.format(*(float(row[k]) for k in ('k', 'k_low', 'k_high')))]
    )
  if kind == 'significant':  # 'significant alone' / 'significant after Holm': counts
    comparisons = report.read_csv(directory / 'comparisons.csv')
    column = 'p_value' if rest == 'alone' else 'p_holm'
    return f'{sum(float(r[column]) < 0.05 for r in comparisons)} of {len(comparisons)}'
  if key == 'trainings':
    return str(len(results))
  if key == 'wall minutes':
    return f'{sum(float(r["wall_time_s"]) for r in results) / 60:.1f}'
  if kind == 'steps':  # 'steps <run> seed <k> <phase>': phases.csv
    run, _, rest = rest.partition(' seed ')
    seed, phase = rest.split()
    [row] = [
      r
      for r in report.read_csv(directory / 'phases.csv')
      if (r['name'], r['seed_index'], r['phase']) == (run, seed, phase)
    ]
    return row['steps']
  if kind in ('phase', 'lr'):  # 'phase <run> <phase>': mean test top-1 after it; 'lr': its lr
    run, phase = rest.split()
    rows = [
      r
      for r in report.read_csv(directory / 'phases.csv')
      if (r['name'], r['phase']) == (run, phase)
    ]
    if kind == 'lr':
      [lr] = {float(r['lr']) for r in rows}
      return f'{lr:.2g}'
    return f'{100 * np.mean([float(r["test_top1"]) for r in rows]):.1f}'
  raise ValueError(f'{study}: unknown headline key {key!r}')


def _blocks():
  return BLOCK.findall(DOC.read_text())


def test_every_study_has_a_headline_table():
  assert sorted({study for study, _ in _blocks()}) == sorted(
    p.name for p in STUDIES.iterdir() if p.is_dir()
  )


@pytest.mark.parametrize('study', sorted(p.name for p in STUDIES.iterdir() if p.is_dir()))
def test_headline_figures_match_the_csvs(study):
  checked = 0
  for name, table in _blocks():
    if name != study:
      continue
    for line in table.strip().splitlines()[2:]:  # after the header and the rule
      key, value = (cell.strip().strip('`') for cell in line.strip('|').split('|'))
      assert value == figure(study, key), f'{study}: {key}'
      checked += 1
  assert checked


def _shown_triples():
  """Every 'mean [low, high]' docs/studies/ can give: runs, comparisons, how-small answers."""
  shown = set()
  for directory in [*STUDIES.iterdir(), *STUDIES.glob('*/directions')]:
    for row in report.read_csv(directory / 'summary.csv'):
      for y in ('top1', 'compute_epochs', 'examples_seen', 'steps'):
        if row.get(f'{y}_ci_low'):
          shown.add(_triple(*(float(row[f'{y}_{s}']) for s in ('mean', 'ci_low', 'ci_high')), y))
    for row in report.read_csv(directory / 'comparisons.csv'):
      numbers = [float(row[k]) for k in ('mean', 'ci_low', 'ci_high')]
      shown.add(_triple(*numbers, row['y'], signed=True))
    if (directory / 'how_small.csv').exists():
      for row in report.read_csv(directory / 'how_small.csv'):
        values = [float(row[k]) for k in ('k', 'k_low', 'k_high')]
        if all(math.isfinite(v) and v >= 1 for v in values):
          shown.add('{:.3g} [{:.3g}, {:.3g}]'.format(*values))
  return shown


def test_every_interval_on_the_page_is_one_the_csvs_give():
  text = DOC.read_text().replace('−', '-')
  triples = [m.group(0) for m in TRIPLE.finditer(text)]
  assert len(triples) > 50  # the tables are there
  # Paired differences outside a study's comparisons are recomputed by the headline test.
  paired = {
    figure(study, key).split(', p')[0]
    for study, table in _blocks()
    for key in re.findall(r'`(paired [^`]+)`', table)
  }
  unknown = sorted(set(triples) - _shown_triples() - paired)
  assert not unknown, f'not in docs/studies/*/: {unknown}'


@pytest.mark.parametrize(
  'directory, config',
  [
    ('dataset_size_upstream', 'dataset_size_upstream.py:mini'),
    ('dataset_size_upstream_paper', 'dataset_size_upstream.py:paper,mini'),
    ('frozen_layers_paper', 'frozen_layers.py:paper,mini'),
    ('batch_size_paper', 'batch_size.py:paper,mini'),
    ('stepwise_growth_paper', 'stepwise_growth.py:paper,mini'),
  ],
)
def test_the_docs_tables_are_what_the_report_makes_from_the_runs(tmp_path, directory, config):
  # Rebuild a study from its per-run rows alone: the comparisons (with Holm) and the how-small
  # answers committed under docs/studies/ must come out again.
  import shutil

  study = STUDIES / directory
  for table in ('results.csv', 'phases.csv', 'evals.csv'):
    shutil.copy(study / table, tmp_path / table)
  report.rebuild(tmp_path, str(REPO / 'configs' / 'sweeps' / config))
  tables = [t for t in ('comparisons.csv', 'how_small.csv') if (study / t).exists()]
  assert (tmp_path / 'how_small.csv').exists() == ('how_small.csv' in tables)
  for table in tables:
    made, committed = (report.read_csv(d / table) for d in (tmp_path, study))
    assert [list(r) for r in made] == [list(r) for r in committed]
    for new, old in zip(made, committed, strict=True):
      for key, value in old.items():
        number = report._number(value)
        if number is None or not math.isfinite(number):
          assert new[key] == value, (table, key)
        else:
          # The CSVs hold 10 digits (5e-10 each way) and the fits move by ulps between CPUs
          # (test_learning_curve), so 1e-8 is rounding with room, not a tolerance found here.
          assert float(new[key]) == pytest.approx(number, rel=1e-8), (table, key)
