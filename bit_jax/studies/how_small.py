"""How small can my target set be? A learning curve through a sweep over images per class,
and the sizes it says are enough, with 95% intervals.

    python -m bit_jax.report --how_small DIR [--series=upstream] [--within=1] [--target=50]

reads DIR/results.csv of any finished sweep whose runs differ in `per_class` and writes
DIR/how_small.csv, DIR/how_small.md and DIR/how_small.png. A sweep whose report has
`per_class` as its x or its series writes them too, and results.md gets the table.

For every series (e.g. each upstream) the curve error = a * k**-b + c is fitted to the mean
test top-1 at each size k (`bit_jax/studies/learning_curve.py`), on the seeds the sweep ran and on
`DRAWS` bootstrap resamples of them. A resample draws seeds, not single runs, and draws the
same seeds for every series, because repeat i of every run shares its subsets and seeds.
Three questions are answered per series:

* `within`: the k at which the fitted curve comes within `within` points (default 1) of its
  own value at the largest size (the full data where the sweep has an 'all' point). The curve
  rather than the noisy last mean is the reference, so the answer always lies on the grid.
* `target`: the k at which the curve reaches a given top-1 (`--target`, in %).
* `beats scratch`: the k at which the curve reaches the mean top-1 of the scratch series (its
  runs start from `init='scratch'`; `--scratch` names it otherwise) at its largest size.

Each answer has a 95% interval (see `learning_curve.expanded_interval`); answers and interval
ends outside the sizes the sweep measured are extrapolations and are marked so. With only two
sizes, the curve is a pure power law (c = 0) through them, noted in the table.
"""

import dataclasses
import io
import math

import matplotlib
import numpy as np
from etils import epath
from scipy import stats as scipy_stats

from bit_jax.runtime import files
from bit_jax.studies import learning_curve as lc
from bit_jax.studies.tables import cell, markdown_table, number, write_csv

matplotlib.use('Agg')  # files only: sweeps run headless
import matplotlib.pyplot as plt  # noqa: E402

DRAWS = 2000
COLUMNS = (
  'series',
  'question',
  'target_top1',
  'k',
  'k_low',
  'k_high',
  'beyond_grid',
  'grid_min',
  'grid_max',
  'sizes',
  'n',
  'a',
  'b',
  'c',
)
IGNORED = ('name', 'seed_index', 'per_class', 'subset_seed', 'train_examples', 'top1', 'top5')


@dataclasses.dataclass(frozen=True)
class Series:
  label: str
  k: np.ndarray  # (K,) images per class, ascending
  top1: np.ndarray  # (n, K): the seeds every run of the study shares
  scratch: bool


def infer_series_column(rows, columns) -> str:
  """The first column (tags come first) that, with per_class, tells every run apart."""
  for column in columns:
    if column in IGNORED:
      continue
    runs, labels = {}, set()
    for r in rows:
      if cell(r.get(column)) and number(r.get('per_class')) is not None:
        runs.setdefault((cell(r[column]), cell(r['per_class'])), set()).add(r['name'])
        labels.add(cell(r[column]))
    if len(labels) > 1 and all(len(names) == 1 for names in runs.values()):
      return column
  raise ValueError(
    'how_small: no column tells the runs of this sweep apart beside per_class; '
    f'name one with --series (columns: {", ".join(columns)}).'
  )


def series_of(rows, column, scratch=None) -> list[Series]:
  """Every series of `column` with at least two distinct sizes, on the seeds all of them share."""
  runs = {}
  for r in rows:
    label = cell(r.get(column))
    if label and number(r.get('per_class')) is not None and number(r.get('top1')) is not None:
      runs.setdefault(label, {}).setdefault(r['name'], []).append(r)
  if not runs:  # e.g. a report written before any run of a series has finished
    return []
  seeds = set.intersection(
    *[{cell(r['seed_index']) for r in group} for named in runs.values() for group in named.values()]
  )
  seeds = sorted(seeds, key=lambda s: number(s) or 0)
  out = []
  for label, named in runs.items():
    size = lambda g: np.mean([number(r['per_class']) for r in g])
    groups = sorted(named.values(), key=size)
    # Two runs at one size (e.g. a class split's two directions) are no curve: sizes must differ.
    if len({size(g) for g in groups}) < 2 or not seeds:
      continue
    by_seed = [{cell(r['seed_index']): number(r['top1']) for r in g} for g in groups]
    is_scratch = (
      label == scratch
      if scratch
      else all(cell(r.get('init')) == 'scratch' for g in groups for r in g)
    )
    out.append(
      Series(
        label,
        np.array([np.mean([number(r['per_class']) for r in g]) for g in groups]),
        np.array([[s[seed] for s in by_seed] for seed in seeds]),
        is_scratch,
      )
    )
  return out


def _answer(series, question, params, target_error, n) -> dict:
  """One row of how_small.csv: the k where the curves `params` (1 + draws, 3) reach the
  target errors (1 + draws,): the seeds' own fit first, then the resamples."""
  ks = lc.k_reaching(params, target_error)
  low, high = lc.expanded_interval(ks[0], ks[1:], n, log=True)
  grid = (series.k[0], series.k[-1])
  inside = lambda v: grid[0] * (1 - 1e-9) <= v <= grid[1] * (1 + 1e-9)
  beyond = '' if inside(ks[0]) else 'estimate'
  if not beyond and not (inside(low) and inside(high)):
    beyond = 'interval'
  a, b, c = params[0]
  return {
    'series': series.label,
    'question': question,
    'target_top1': 100 * (1 - float(target_error[0])),
    'k': float(ks[0]),
    'k_low': float(low),
    'k_high': float(high),
    'beyond_grid': beyond,
    'grid_min': float(grid[0]),
    'grid_max': float(grid[1]),
    'sizes': len(series.k),
    'n': n,
    'a': float(a),
    'b': float(b),
    'c': float(c),
  }


def estimate(series, *, within=1.0, target=None, draws=DRAWS, seed=0):
  """(rows of how_small.csv, {label: (means, params)} for the plot) for a list of `Series`
  sharing their seeds; `within` in points, `target` a top-1 in %."""
  n = series[0].top1.shape[0]
  index = np.random.default_rng(seed).integers(0, n, size=(draws, n))

  def means(s):  # the seeds' own means, then each resample's
    return np.concatenate([s.top1.mean(0)[None], s.top1[index].mean(1)])

  fitted = {s.label: (means(s), lc.fit(s.k, 1 - means(s))) for s in series}
  scratch = [s for s in series if s.scratch]
  reference = means(scratch[0])[:, -1] if scratch else None
  rows = []
  for s in series:
    _, params = fitted[s.label]
    at_largest = lc.error_at(params, s.k[-1:])[:, 0]
    question = f'within {within:g} point of top-1 at {s.k[-1]:g}'
    rows.append(_answer(s, question, params, at_largest + within / 100, n))
    if target is not None:
      rows.append(_answer(s, f'top-1 {target:g}%', params, np.full(draws + 1, 1 - target / 100), n))
    if reference is not None and not s.scratch:
      question = f'beats {scratch[0].label} at {scratch[0].k[-1]:g}'
      rows.append(_answer(s, question, params, 1 - reference, n))
  return rows, fitted


def _k_text(row, key) -> str:
  value = row[key]
  if math.isinf(value):
    return 'never'
  return f'{value:.3g}' if value >= 1 else '<1'  # below one image per class: no target set


def markdown(rows) -> str:
  """The answers as a markdown table with a note on how to read it."""
  table = [
    {
      'series': r['series'],
      'question': r['question'],
      'target': f'{r["target_top1"]:.3g}',
      'images per class': f'{_k_text(r, "k")} [{_k_text(r, "k_low")}, {_k_text(r, "k_high")}]'
      + {'': '', 'interval': ' †', 'estimate': ' ‡'}[r['beyond_grid']],
      'curve': f'{r["a"]:.3g}·k^-{r["b"]:.3g} + {r["c"]:.3g}'
      + (' (c = 0)' if r['sizes'] < 3 else ''),
      'sizes, seeds': f'{r["sizes"]} in [{r["grid_min"]:g}, {r["grid_max"]:g}], {r["n"]}',
    }
    for r in rows
  ]
  columns = list(table[0]) if table else []
  return '\n'.join(
    [
      'How small can the target set be: the images per class at which the fitted learning '
      'curve (error = a·k^-b + c) reaches each target top-1 (%), with a 95% interval over '
      'bootstrap resamples of the seeds. † the interval reaches beyond the sizes measured; '
      '‡ so does the estimate itself: extrapolated by the curve. "never": the curve levels '
      'off below the target. With two sizes the curve is a power law through them (c = 0).',
      '',
      markdown_table(table, columns),
    ]
  )


def _draw_series(ax, s, means, params, answers):
  """Means with their t intervals, the fitted curve (dotted beyond the grid), its 95% band
  and the answers as horizontal interval bars at their targets, in one colour."""
  n = s.top1.shape[0]
  mine = [r for r in answers if r['series'] == s.label and math.isfinite(r['k']) and r['k'] > 0]
  # The curve runs a little past the grid, and on to any answer within 100x of it (but not
  # below one image per class, where there is no target set to draw).
  low_end = max(s.k[0] / 100, min(1.0, s.k[0] / 2))
  ends = [s.k[0] / 2, s.k[-1] * 2, *[np.clip(r['k'], low_end, s.k[-1] * 100) for r in mine]]
  k = np.geomspace(min(ends), max(ends), 121)
  top1 = 100 * (1 - lc.error_at(params, k))
  low, high = lc.expanded_interval(top1[0], top1[1:], n)
  inside = (k >= s.k[0]) & (k <= s.k[-1])
  (line,) = ax.plot(k[inside], top1[0][inside], '-', label=s.label)
  colour = line.get_color()
  ax.plot(k, top1[0], ':', color=colour)
  ax.fill_between(k, low, high, color=colour, alpha=0.15, linewidth=0)
  half = scipy_stats.t.ppf(0.975, n - 1) * s.top1.std(0, ddof=1) / math.sqrt(n) if n > 1 else 0
  ax.errorbar(s.k, 100 * means[0], yerr=100 * half, fmt='o', ms=3, capsize=2, color=colour)
  for r in mine:
    centre, low, high = np.clip([r['k'], r['k_low'], r['k_high']], k[0], k[-1])
    xerr = [[max(centre - low, 0)], [max(high - centre, 0)]]
    ax.errorbar([centre], [r['target_top1']], xerr=xerr, fmt='|', color=colour, capsize=3)


def plot(series, fitted, answers, path, title=''):
  fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
  for s in series:
    _draw_series(ax, s, *fitted[s.label], answers)
  ax.set_xscale('log')
  ax.set_xlabel('target training images per class')
  ax.set_ylabel('top-1 (test, %): means, fitted curve, 95% band')
  ax.set_title(title or 'How small can the target set be?', fontsize=10)
  ax.grid(True, alpha=0.3, which='both')
  ax.legend(fontsize=8)
  fig.text(
    0.01, 0.01, 'bars: images per class for each target (95%); dotted: beyond the grid', fontsize=7
  )
  fig.tight_layout()
  image = io.BytesIO()
  fig.savefig(image, format='png')
  plt.close(fig)
  files.write_atomic(path, image.getvalue())


def write(directory, rows, column, *, within=1.0, target=None, scratch=None, title=''):
  """how_small.csv, .md and .png in `directory` for the series of `column` in `rows`; returns
  the markdown table, or None where no series has two sizes."""
  series = series_of(rows, column, scratch)
  if not series:
    return None
  answers, fitted = estimate(series, within=within, target=target)
  directory = epath.Path(directory)
  write_csv(directory / 'how_small.csv', answers, COLUMNS)
  text = markdown(answers)
  files.write_atomic(directory / 'how_small.md', f'# {title or "How small"}\n\n{text}\n')
  plot(series, fitted, answers, directory / 'how_small.png', title)
  return text
