"""A sweep's tables and plot: results.csv, phases.csv, evals.csv, results.md, `<name>.png`.

`bit_jax.sweep` calls `write_all` after every run. Standalone, it re-plots any results.csv:

    python -m bit_jax.report DIR/results.csv --x=per_class --log_x --series=upstream \
        --title='Transfer vs. target-set size'

which writes DIR/<title or 'results'>.png. Columns of results.csv: the run `name`, its tags
(labels such as `upstream`), every top-level field the sweep overrides, then the measured
`train_examples` and `per_class` (final phase), `top1`, `top5`, `steps`, `examples_seen`,
`compute_epochs` (examples_seen / train_examples: compute in passes over the final training
set M) and `wall_time_s`. phases.csv has one row per phase of every run (cumulative
`examples_seen`), from results.json and phases.json; evals.csv one row per evaluation of the
test set (metrics.jsonl), with the examples processed by then.
"""

import argparse
import csv
import io
import re
from pathlib import Path

from etils import epath

from bit_jax import files

import matplotlib

matplotlib.use('Agg')     # files only: the sweep runs headless
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

MEASURED = ('train_examples', 'per_class', 'top1', 'top5', 'steps', 'examples_seen',
            'compute_epochs', 'wall_time_s')
PHASE_COLUMNS = ('name', 'phase', 'batch_size', 'lr', 'lr_schedule', 'shots', 'fraction',
                 'freeze', 'init', 'head', 'num_examples', 'test_top1', 'test_top5', 'val_top1',
                 'steps', 'examples_seen')
EVAL_COLUMNS = ('name', 'phase', 'step', 'examples_seen', 'top1', 'val_top1')


def _cell(value):
  if isinstance(value, float):
    return f'{value:.4g}'
  return '' if value is None else str(value)


def write_csv(path, rows, columns):
  text = io.StringIO(newline='')
  writer = csv.DictWriter(text, columns, extrasaction='ignore')
  writer.writeheader()
  writer.writerows({k: _cell(row.get(k)) for k in columns} for row in rows)
  files.write_atomic(path, text.getvalue())


def read_csv(path):
  return list(csv.DictReader(io.StringIO(epath.Path(path).read_text(), newline='')))


def markdown_table(rows, columns):
  lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
  lines += ['| ' + ' | '.join(_cell(row.get(k)).replace('|', '\\|') for k in columns) + ' |'
            for row in rows]
  return '\n'.join(lines)


def _number(text):
  try:
    return float(text)
  except (TypeError, ValueError):
    return None


def lines_of(rows, x, y, series=None):
  """{series value: [(x, y), ...]}; rows missing x, y or the series value (e.g. the upstream
  runs of a transfer study) are left out. Non-numeric x values (e.g. 'scratch', 'block1') are
  categories, placed at 0, 1, ... in the order they first appear."""
  rows = [r for r in rows if r.get(x) not in ('', None) and _number(r.get(y)) is not None
          and (not series or r.get(series) not in ('', None))]
  categories = None
  if any(_number(r[x]) is None for r in rows):
    categories = list(dict.fromkeys(r[x] for r in rows))
  lines = {}
  for row in rows:
    xv = categories.index(row[x]) if categories else _number(row[x])
    lines.setdefault(row[series] if series else y, []).append((xv, _number(row[y])))
  return lines, categories


def plot(rows, path, *, x, y='top1', series=None, log_x=False, title='', xlabel=None):
  """One line per value of `series` (or one line), y against x."""
  lines, categories = lines_of(rows, x, y, series)
  if not lines:
    raise ValueError(f'Nothing to plot: no row has numbers in both {x!r} and {y!r}'
                     + (f' and a {series!r} value' if series else '') +
                     f'. Columns present: {sorted(rows[0]) if rows else "none (no rows)"}.')
  fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
  for label, points in lines.items():
    points.sort()
    ax.plot([p[0] for p in points], [p[1] for p in points], 'o-', label=label)
  if categories:
    ax.set_xticks(range(len(categories)), categories, rotation=20, fontsize=8)
  elif log_x:
    ax.set_xscale('log')
    values = sorted({p[0] for points in lines.values() for p in points})
    if len(values) <= 10:      # few sizes: label each one (1, 5, 25, 504.8) rather than 10^k
      ax.set_xticks(values, [f'{v:g}' for v in values])
      ax.xaxis.set_minor_formatter(ticker.NullFormatter())
  ax.set_xlabel(xlabel or x.replace('_', ' '))
  ax.set_ylabel(y.replace('_', ' ') + (' (test)' if y.startswith('top') else ''))
  ax.set_title(title, fontsize=10)
  ax.grid(True, alpha=0.3, which='both')
  if series or len(lines) > 1:
    ax.legend(title=series and series.replace('_', ' '), fontsize=8)
  fig.tight_layout()
  image = io.BytesIO()
  fig.savefig(image, format='png')
  plt.close(fig)
  files.write_atomic(path, image.getvalue())


def plot_name(title):
  return re.sub(r'[^A-Za-z0-9]+', '_', title).strip('_').lower() or 'results'


def write_all(directory, name, rows, columns, phase_rows, eval_rows, report):
  """results.csv, phases.csv, evals.csv, results.md and `<name>.png` in `directory`."""
  directory = epath.Path(directory)
  write_csv(directory / 'results.csv', rows, columns)
  write_csv(directory / 'phases.csv', phase_rows, PHASE_COLUMNS)
  write_csv(directory / 'evals.csv', eval_rows, EVAL_COLUMNS)
  text = [f'# {report.get("title") or name}', '', markdown_table(rows, columns)]
  if any(r['phase'] != 'phase0' for r in phase_rows):
    text += ['', '## Phases (examples_seen is cumulative within a run)', '',
             markdown_table(phase_rows, PHASE_COLUMNS)]
  files.write_atomic(directory / 'results.md', '\n'.join(text) + '\n')
  points = {'phases': phase_rows, 'evals': eval_rows}.get(report.get('points'), rows)
  source = [{k: _cell(v) for k, v in r.items()} for r in points
            if r['name'] in report.get('runs', [r['name']])]
  y, series = report.get('y', 'top1'), report.get('series')
  if lines_of(source, report['x'], y, series)[0]:    # not yet, while only upstream runs are done
    plot(source, directory / f'{name}.png', x=report['x'], y=y, series=series,
         log_x=report.get('log_x', False), title=report.get('title', name),
         xlabel=report.get('xlabel'))


def main():
  parser = argparse.ArgumentParser(description='Plot a column of a sweep results.csv.')
  parser.add_argument('csv', type=Path)
  parser.add_argument('--x', required=True)
  parser.add_argument('--y', default='top1')
  parser.add_argument('--series')
  parser.add_argument('--log_x', action='store_true')
  parser.add_argument('--title', default='')
  parser.add_argument('--xlabel')
  args = parser.parse_args()
  out = args.csv.parent / f'{plot_name(args.title)}.png'
  plot(read_csv(args.csv), out, x=args.x, y=args.y, series=args.series, log_x=args.log_x,
       title=args.title, xlabel=args.xlabel)
  print(out)


if __name__ == '__main__':
  main()
