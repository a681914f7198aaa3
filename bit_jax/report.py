"""A sweep's tables and plot: results.csv, summary.csv, comparisons.csv, phases.csv, evals.csv,
results.md and `<name>.png`.

`bit_jax.sweep` calls `write_all` after every repeat. Standalone, it re-plots a results.csv,
answers "how small can the target set be?" for a finished sweep over images per class
(bit_jax/studies/how_small.py), or rewrites every table and plot of a sweep directory from its CSV
files with its config's report settings (nothing retrained):

    python -m bit_jax.report DIR/results.csv --x=per_class --log_x --series=upstream \
        --title='Transfer vs. target-set size'
    python -m bit_jax.report --how_small DIR [--series=upstream] [--within=1] [--target=55]
    python -m bit_jax.report --rebuild DIR --config=configs/sweeps/<study>.py:mini

* results.csv: one row per finished repeat: the run `name`, `seed_index`, its tags (labels such
  as `upstream`), every top-level field the sweep overrides, then the measured
  `subset_seed`, `train_examples` and `per_class` (final phase), `top1`, `top5`, `steps`,
  `examples_seen`, `compute_epochs` (examples_seen / train_examples: compute in passes over
  the final training set M) and `wall_time_s`.
* summary.csv: one row per run (a point of the study): `n` repeats and, for each of
  `SUMMARY_METRICS`, its `_mean`, `_std` and 95% interval `_ci_low`/`_ci_high` (Student's t,
  see bit_jax/studies/stats.py). The plot draws the means with these intervals as error bars.
* comparisons.csv: the `report.compare` entries of the sweep config, each
  `{'column', 'a', 'b', 'by', 'y'}`: for every value of `by` (or once), the runs whose
  `column` is `a` minus those whose `column` is `b`, paired by seed_index, for each metric in
  `y` (default ('top1',)): mean difference, its interval, the paired t test's p-value, that
  p-value Holm-adjusted over every comparison of the sweep (`p_holm`, bit_jax/studies/stats.py), and
  `significant`: p_holm < 0.05, i.e. significant after the correction. The intervals are each
  comparison's own 95% interval (not adjusted), so one can exclude 0 where the verdict is
  "not significant".
* how_small.csv, how_small.md, how_small.png: where `x` or `series` is `per_class`, the
  learning-curve answers to "how small can the target set be?" (bit_jax/studies/how_small.py).
* phases.csv: one row per phase of every repeat; evals.csv: one row per evaluation of the test
  set (metrics.jsonl), with the examples processed by then.

Report config (`report` in a sweep config): `x`, `y` (default 'top1'), `series` (a column
whose values are the lines), `log_x`, `title`, `xlabel`, `points` ('runs', the default: the
summary, mean and 95% interval; 'phases' or 'evals': the rows of phases.csv/evals.csv, one
thin line per seed), `runs` (the names
to plot; default all) and `compare`. Non-numeric x values are categories.
"""

# isort: off
import bit_jax.quiet_tensorflow  # noqa: F401  (first: TensorFlow logs C++ lines on import)
# isort: on

import argparse
import importlib.util
import io
import pathlib
import re

import matplotlib
from etils import epath

from bit_jax.runtime import files, metric_names
from bit_jax.studies import how_small, stats
from bit_jax.studies.tables import cell as _cell
from bit_jax.studies.tables import markdown_table, read_csv, typed, write_csv
from bit_jax.studies.tables import number as _number

matplotlib.use('Agg')  # files only: the sweep runs headless
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

MEASURED = (
  'subset_seed',
  'train_examples',
  'per_class',
  'top1',
  'top5',
  'steps',
  'examples_seen',
  'compute_epochs',
  'wall_time_s',
)
SUMMARY_METRICS = ('top1', 'top5', 'steps', 'examples_seen', 'compute_epochs')
STAT_FIELDS = ('mean', 'std', 'ci_low', 'ci_high')
PHASE_COLUMNS = (
  'name',
  'seed_index',
  'phase',
  'batch_size',
  'lr',
  'lr_schedule',
  'shots',
  'fraction',
  'freeze',
  'init',
  'head',
  'num_examples',
  metric_names.TEST_TOP1,
  metric_names.TEST_TOP5,
  metric_names.VAL_TOP1,
  'steps',
  'examples_seen',
)
EVAL_COLUMNS = (
  'name',
  'seed_index',
  'phase',
  'step',
  'examples_seen',
  'top1',
  metric_names.VAL_TOP1,
)
COMPARISON_COLUMNS = (
  'y',
  'column',
  'a',
  'b',
  'by',
  'at',
  'n',
  'mean',
  'ci_low',
  'ci_high',
  'p_value',
  'p_holm',
  'significant',
)


# --- statistics over repeats ---------------------------------------------------------------


def summarise(rows, columns) -> tuple[list[dict], list[str]]:
  """One row per run name: its constant columns, `n`, and mean/std/95% interval of each of
  `SUMMARY_METRICS` over its repeats."""
  groups = {}
  for row in rows:
    groups.setdefault(row['name'], []).append(row)
  constant = [
    c
    for c in columns
    if c not in ('seed_index', 'subset_seed', 'wall_time_s') and c not in SUMMARY_METRICS
  ]
  metrics = [m for m in SUMMARY_METRICS if any(_number(r.get(m)) is not None for r in rows)]
  summary = []
  for group in groups.values():
    out = {c: group[0].get(c) for c in constant}
    out['n'] = len(group)
    for metric in metrics:
      values = [_number(r.get(metric)) for r in group if _number(r.get(metric)) is not None]
      if values:
        out.update({f'{metric}_{k}': v for k, v in stats.summary(values).items() if k != 'n'})
    summary.append(out)
  return summary, [*constant, 'n', *[f'{m}_{k}' for m in metrics for k in STAT_FIELDS]]


def compare(rows, spec) -> list[dict]:
  """Paired differences `a - b` of the rows whose `spec['column']` is a and b (see module)."""
  column, a, b, by = spec['column'], str(spec['a']), str(spec['b']), spec.get('by')
  out = []
  at_values = list(dict.fromkeys(_cell(r.get(by)) for r in rows)) if by else [None]
  for at in at_values:

    def side(value):
      matched = {}
      for r in rows:
        if _cell(r.get(column)) == value and (by is None or _cell(r.get(by)) == at):
          seed = _cell(r['seed_index'])
          if seed in matched and matched[seed]['name'] != r['name']:
            # Pairing would pick one of them silently; the spec has to say which run it means.
            raise ValueError(
              f'compare: {column}={value} names more than one run ({matched[seed]["name"]!r},'
              f' {r["name"]!r}); compare a tag that only the compared runs carry'
            )
          matched[seed] = r
      return matched

    left, right = side(a), side(b)
    seeds = sorted(set(left) & set(right), key=lambda s: _number(s) or 0)
    if not seeds:
      continue
    for y in spec.get('y', ('top1',)):
      pairs = [(_number(left[s].get(y)), _number(right[s].get(y))) for s in seeds]
      pairs = [p for p in pairs if None not in p]
      if not pairs:
        continue
      result = stats.paired([p[0] for p in pairs], [p[1] for p in pairs])
      out.append({'y': y, 'column': column, 'a': a, 'b': b, 'by': by, 'at': at, **result})
  return out


def with_holm(comparisons) -> list[dict]:
  """The comparisons with `p_holm` over all of them (the study is the family) and
  `significant` after that correction."""
  adjusted = stats.holm([c['p_value'] for c in comparisons])
  return [
    {**c, 'p_holm': p, 'significant': None if p is None else p < 1 - stats.LEVEL}
    for c, p in zip(comparisons, adjusted)
  ]


def _interval(row, metric, scale=1.0):
  """'55.1 [52.0, 58.2]' (mean and 95% interval), or the mean alone where it does not vary."""
  mean, low, high = (_number(row.get(f'{metric}_{k}')) for k in ('mean', 'ci_low', 'ci_high'))
  if mean is None:
    return ''
  if low is None or low == high:
    return f'{mean * scale:.3g}'
  return f'{mean * scale:.3g} [{low * scale:.3g}, {high * scale:.3g}]'


def _points(value: float, y: str) -> float:
  return 100 * value if y.startswith('top') else value


def _filled(rows, columns) -> list[str]:
  """The columns that hold a value in some row (a study's many unset fields left out)."""
  return [c for c in columns if any(_cell(r.get(c)) for r in rows)]


# --- the plot ------------------------------------------------------------------------------


def lines_of(rows, x, y, series=None):
  """{series value: [(x, y, row), ...]}; rows missing x, y or the series value (e.g. the
  upstream runs of a transfer study) are left out. Non-numeric x values (e.g. 'scratch',
  'block1') are categories, placed at 0, 1, ... in the order they first appear."""
  rows = [
    r
    for r in rows
    if r.get(x) not in ('', None)
    and _number(r.get(y)) is not None
    and (not series or r.get(series) not in ('', None))
  ]
  categories = None
  if any(_number(r[x]) is None for r in rows):
    categories = list(dict.fromkeys(_cell(r[x]) for r in rows))
  lines = {}
  for row in rows:
    xv = categories.index(_cell(row[x])) if categories else _number(row[x])
    lines.setdefault(_cell(row[series]) if series else y, []).append((xv, _number(row[y]), row))
  return lines, categories


def plot(
  rows,
  path,
  *,
  x,
  y='top1',
  series=None,
  log_x=False,
  title='',
  xlabel=None,
  interval=None,
  repeats=None,
):
  """One line per value of `series` (or one line), y against x; with `interval` (a metric of
  summary rows) y is its mean and the error bars its 95% interval. With `repeats` (a column,
  e.g. 'seed_index') each series draws one thin line per repeat, in the series' colour: curves
  whose x differs between repeats (evaluations until early stopping) have no mean to draw."""
  y_column = f'{interval}_mean' if interval else y
  lines, categories = lines_of(rows, x, y_column, series)
  if not lines:
    raise ValueError(
      f'Nothing to plot: no row has numbers in both {x!r} and {y_column!r}'
      + (f' and a {series!r} value' if series else '')
      + f'. Columns present: {sorted(rows[0]) if rows else "none (no rows)"}.'
    )
  fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
  for label, points in lines.items():
    points.sort(key=lambda p: p[0])
    if interval:
      _draw_with_interval(ax, label, points, interval)
    elif repeats:
      _draw_repeats(ax, label, points, repeats)
    else:
      ax.plot([p[0] for p in points], [p[1] for p in points], 'o-', label=label)
  _set_x_axis(ax, lines, categories, log_x)
  ax.set_xlabel(xlabel or x.replace('_', ' '))
  ax.set_ylabel(_y_label(y, interval, repeats))
  ax.set_title(title, fontsize=10)
  ax.grid(True, alpha=0.3, which='both')
  if series or len(lines) > 1:
    ax.legend(title=series and series.replace('_', ' '), fontsize=8)
  fig.tight_layout()
  image = io.BytesIO()
  fig.savefig(image, format='png')
  plt.close(fig)
  files.write_atomic(path, image.getvalue())


def _draw_with_interval(ax, label, points, interval) -> None:
  """The means, with error bars to the 95% interval of each (none where it is unknown)."""
  xs, ys = [p[0] for p in points], [p[1] for p in points]
  low = [_number(p[2].get(f'{interval}_ci_low')) for p in points]
  high = [_number(p[2].get(f'{interval}_ci_high')) for p in points]
  err = [
    [0 if lo is None else yv - lo for yv, lo in zip(ys, low)],
    [0 if hi is None else hi - yv for yv, hi in zip(ys, high)],
  ]
  ax.errorbar(xs, ys, yerr=err, fmt='o-', capsize=3, label=label)


def _draw_repeats(ax, label, points, repeats) -> None:
  """One thin line per value of the column `repeats`, all in the first one's colour, the
  series named once in the legend."""
  colour = None
  for k in dict.fromkeys(_cell(p[2].get(repeats)) for p in points):
    mine = [p for p in points if _cell(p[2].get(repeats)) == k]
    (line,) = ax.plot(
      [p[0] for p in mine],
      [p[1] for p in mine],
      '.-',
      color=colour,
      linewidth=1,
      alpha=0.7,
      label=label if colour is None else None,
    )
    colour = line.get_color()


def _set_x_axis(ax, lines, categories, log_x: bool) -> None:
  """Category names as ticks, or a log scale whose few sizes are labelled as numbers."""
  if categories:
    ax.set_xticks(range(len(categories)), categories, rotation=20, fontsize=8)
  elif log_x:
    ax.set_xscale('log')
    values = sorted({p[0] for points in lines.values() for p in points})
    if len(values) <= 10:  # few sizes: label each one (1, 5, 25, 504.8) rather than 10^k
      ax.set_xticks(values, [f'{v:g}' for v in values])
      ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def _y_label(y: str, interval, repeats) -> str:
  label = (interval or y).replace('_', ' ') + (
    ' (test)' if (interval or y).startswith('top') else ''
  )
  return label + (
    ', mean and 95% interval' if interval else ', one line per seed' if repeats else ''
  )


def plot_name(title):
  return re.sub(r'[^A-Za-z0-9]+', '_', title).strip('_').lower() or 'results'


# --- everything a sweep writes -------------------------------------------------------------


def _comparison_row(c: dict) -> dict:
  if c['ci_low'] is None:
    interval = ''
  else:
    interval = f'[{_points(c["ci_low"], c["y"]):+.3g}, {_points(c["ci_high"], c["y"]):+.3g}]'
  verdict = {None: '', True: 'significant', False: 'not significant'}[c['significant']]
  if c.get('p_holm') is None:  # a comparison made before the correction: its own p decides
    verdict = verdict and verdict + ' (uncorrected)'
  return {
    **c,
    'difference': f'{_points(c["mean"], c["y"]):+.3g}',
    'interval': interval,
    'verdict': verdict,
  }


def _markdown(
  name, report, rows, columns, summary, summary_columns, comparisons, phase_rows, small
):
  y = report.get('y', 'top1')
  shown = [c for c in summary_columns if c in columns and c not in MEASURED] + ['per_class', 'n']
  table = [
    {
      **{c: s.get(c) for c in shown},
      **{m: _interval(s, m, _points(1, m)) for m in (y, 'examples_seen')},
    }
    for s in summary
  ]
  text = [
    f'# {report.get("title") or name}',
    '',
    f"Mean over the n repeats of each run and its 95% interval (Student's t); {y} in %.",
    '',
    markdown_table(table, _filled(table, shown + [y, 'examples_seen'])),
  ]
  if comparisons:
    compared = [_comparison_row(c) for c in comparisons]
    headers = ['y', 'a', 'b', 'at', 'n', 'difference', 'interval', 'p_value', 'p_holm', 'verdict']
    text += [
      '',
      '## Paired differences (a - b, same subsets and seeds; top-1 in points)',
      '',
      f'p_holm: the p-value Holm-adjusted over the {len(compared)} comparisons of this study; '
      'the verdict is significant when p_holm < 0.05. Each interval is its own 95% interval, '
      'not adjusted.',
      '',
      markdown_table(compared, _filled(compared, headers)),
    ]
  if small:
    text += ['', '## How small can the target set be? (how_small.png)', '', small]
  text += ['', '## Every repeat', '', markdown_table(rows, _filled(rows, columns))]
  if any(r['phase'] != 'phase0' for r in phase_rows):
    text += [
      '',
      '## Phases (examples_seen is cumulative within a run)',
      '',
      markdown_table(phase_rows, _filled(phase_rows, PHASE_COLUMNS)),
    ]
  return '\n'.join(text) + '\n'


def write_all(directory, name, rows, columns, phase_rows, eval_rows, report):
  """Every table and the plot of a sweep's finished repeats, in `directory`."""
  directory = epath.Path(directory)
  summary, summary_columns = summarise(rows, columns)
  comparisons = [c for spec in report.get('compare', ()) for c in compare(rows, dict(spec))]
  comparisons = with_holm(comparisons)
  small = None
  if 'per_class' in (report.get('x'), report.get('series')):
    column = report['series'] if report.get('x') == 'per_class' else report['x']
    small = how_small.write(directory, rows, column, title=report.get('title', name))
  write_csv(directory / 'results.csv', rows, columns)
  write_csv(directory / 'summary.csv', summary, summary_columns)
  write_csv(directory / 'comparisons.csv', comparisons, COMPARISON_COLUMNS)
  write_csv(directory / 'phases.csv', phase_rows, PHASE_COLUMNS)
  write_csv(directory / 'evals.csv', eval_rows, EVAL_COLUMNS)
  files.write_atomic(
    directory / 'results.md',
    _markdown(
      name, report, rows, columns, summary, summary_columns, comparisons, phase_rows, small
    ),
  )
  points = report.get('points', 'runs')
  source = {'phases': phase_rows, 'evals': eval_rows}[points] if points != 'runs' else summary
  source = [
    {k: _cell(v) for k, v in r.items()}
    for r in source
    if r['name'] in report.get('runs', [r['name']])
  ]
  y, series = report.get('y', 'top1'), report.get('series')
  interval = y if points == 'runs' else None
  if lines_of(source, report['x'], f'{y}_mean' if interval else y, series)[0]:
    plot(
      source,
      directory / f'{name}.png',
      x=report['x'],
      y=y,
      series=series,
      log_x=report.get('log_x', False),
      title=report.get('title', name),
      xlabel=report.get('xlabel'),
      repeats=None if points == 'runs' else 'seed_index',
      interval=interval,
    )


def _load_report(spec: str) -> dict:
  """The `report` of a sweep config given as path[:arg], as `bit_jax.sweep` would load it."""
  path, _, arg = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(arg) if arg else module.get_config()
  return config.report.to_dict()


def rebuild(directory, config_spec: str) -> None:
  """Every table and plot of a finished sweep rewritten from its CSV files, with the report
  settings of its config (no run directory needed, nothing retrained)."""
  directory = epath.Path(directory)
  rows = [{k: typed(v) for k, v in r.items()} for r in read_csv(directory / 'results.csv')]
  columns = list(rows[0]) if rows else []
  phases, evals = (
    [{k: typed(v) for k, v in r.items()} for r in read_csv(directory / f'{table}.csv')]
    for table in ('phases', 'evals')
  )
  name = pathlib.Path(config_spec.partition(':')[0]).stem
  write_all(directory, name, rows, columns, phases, evals, _load_report(config_spec))


def _plot_csv(args) -> None:
  rows = read_csv(args.csv)
  summary, _ = summarise(rows, list(rows[0]) if rows else [])
  out = epath.Path(args.csv).parent / f'{plot_name(args.title)}.png'
  plot(
    [{k: _cell(v) for k, v in r.items()} for r in summary],
    out,
    x=args.x,
    y=args.y,
    series=args.series,
    log_x=args.log_x,
    title=args.title,
    xlabel=args.xlabel,
    interval=args.y,
  )
  print(out)


def _how_small(args) -> None:
  directory = epath.Path(args.how_small)
  rows = read_csv(directory / 'results.csv')
  column = args.series or how_small.infer_series_column(rows, list(rows[0]) if rows else [])
  text = how_small.write(
    directory, rows, column, within=args.within, target=args.target, scratch=args.scratch
  )
  if text is None:
    raise SystemExit(f'{directory}: no series of {column!r} has runs at two sizes or more.')
  print(f'series: {column}\n\n{text}\n\n{directory}/how_small.csv, .md, .png')


def main():
  parser = argparse.ArgumentParser(
    description='Re-plot a sweep results.csv, answer "how small" for a sweep directory, or '
    "rebuild a sweep directory's tables from its CSV files."
  )
  parser.add_argument('csv', nargs='?', help='a results.csv to plot (with --x)')
  parser.add_argument('--x')
  parser.add_argument('--y', default='top1')
  parser.add_argument('--series', help='the lines; with --how_small, the series column')
  parser.add_argument('--log_x', action='store_true')
  parser.add_argument('--title', default='')
  parser.add_argument('--xlabel')
  parser.add_argument('--how_small', metavar='DIR', help='a finished sweep over per_class')
  parser.add_argument('--within', type=float, default=1.0, help='points below the full data')
  parser.add_argument('--target', type=float, help='a top-1 to reach, in %%')
  parser.add_argument('--scratch', help='the series of scratch runs (default: init=scratch)')
  parser.add_argument('--rebuild', metavar='DIR', help="rewrite DIR's tables (with --config)")
  parser.add_argument('--config', help='the sweep config of --rebuild, path[:arg]')
  args = parser.parse_args()
  if args.how_small:
    _how_small(args)
  elif args.rebuild:
    if not args.config:
      parser.error('--rebuild needs --config=configs/sweeps/<study>.py[:arg]')
    rebuild(args.rebuild, args.config)
    print(f'{args.rebuild}: tables and plots rewritten')
  elif args.csv and args.x:
    _plot_csv(args)
  else:
    parser.error('expected results.csv --x=..., --how_small=DIR or --rebuild=DIR --config=...')


if __name__ == '__main__':
  main()
