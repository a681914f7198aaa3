"""Run a grid of trainings one after another and tabulate/plot them: the studies of configs/sweeps.

    python -m bit_jax.sweep --config=configs/sweeps/dataset_size_upstream.py:mini \
        --workdir=/tmp/dataset_size

A sweep config's `get_config(arg)` returns a ConfigDict with

* `base`: a full run config (`bit_jax.defaults.base_config()` plus the study's settings);
* `runs`: a sequence of dicts, each a run `name`, optional `tags` (labels for the tables and
  the plot, e.g. `{'upstream': 'BiT-M'}`) and overrides of any `base` field, `phases`
  included. The text `{workdir}` in any string value is the sweep's directory, so a run can
  start from an earlier run's weights: `init='{workdir}/upstream_small/final.npz'`;
* `report`: the plot: `x`, `y` (default 'top1'), `series` (a column whose values are the
  lines), `log_x`, `title`, `xlabel`, `points` (one point per run from results.csv (the
  default), 'phases': per phase from phases.csv, or 'evals': per evaluation from evals.csv)
  and `runs`, the names to plot (default all). Non-numeric x values are categories.

Each run trains in `<workdir>/<name>` with `run.run` (all devices, one run at a time). A run
whose results.json exists is skipped, and an interrupted one resumes where it stopped, so
rerunning the command finishes a sweep. After every run the tables and the plot are
rewritten (see `bit_jax/report.py` for their columns).
"""

import contextlib
import json
import sys
from pathlib import Path
from typing import Optional

import jax
import ml_collections
from absl import app, flags, logging
from etils import epath

from bit_jax import files, metrics, report, train
from bit_jax import run as run_lib
from bit_jax.errors import ConfigError, Stopped, UserError
from bit_jax.preemption import StopRequest
from bit_jax.run_state import Workdir

PLACEHOLDER = '{workdir}'


class SweepConfigError(ConfigError):
  """A sweep config the user must fix; `main` prints it without a traceback."""


def _substitute(value, workdir):
  if isinstance(value, str):
    return value.replace(PLACEHOLDER, str(workdir))
  if isinstance(value, (list, tuple)):
    return type(value)(_substitute(v, workdir) for v in value)
  if isinstance(value, dict):
    return {k: _substitute(v, workdir) for k, v in value.items()}
  return value


def _as_dict(value):
  return value.to_dict() if isinstance(value, ml_collections.ConfigDict) else dict(value)


def check_runs(sweep: ml_collections.ConfigDict) -> list[dict]:
  """The runs as plain dicts, after checking names, fields and references to other runs."""
  runs = [_as_dict(r) for r in sweep.runs]
  fields = set(sweep.base.to_dict())
  seen = set()
  for index, run in enumerate(runs):
    name = run.get('name')
    if not name or '/' in name or name in seen:
      raise SweepConfigError(f'Run {index} has name {name!r}; every run needs a unique name '
                             f'without "/" (it names its directory).')
    unknown = sorted(set(run) - fields - {'name', 'tags'})
    if unknown:
      raise SweepConfigError(f'Run {name!r} overrides unknown fields {unknown}; runs may set '
                             f'any field of `base` (see bit_jax/defaults.py), plus name and '
                             f'tags.')
    clashes = sorted(set(run.get('tags', {})) & (fields | {'name'}))
    if clashes:
      raise SweepConfigError(f'Run {name!r} has tags {clashes} named like config fields; '
                             f'rename them (they become columns beside the overridden fields).')
    text = json.dumps({**sweep.base.to_dict(), **run}, default=str)
    for other in {r.get('name') for r in runs} - seen - {None}:
      if f'{PLACEHOLDER}/{other}/' in text:
        raise SweepConfigError(f'Run {name!r} uses {PLACEHOLDER}/{other}/, but run {other!r} '
                               f'is not listed before it; order the runs so their inputs '
                               f'exist.')
    seen.add(name)
  return runs


def run_config(sweep, run: dict, workdir) -> ml_collections.ConfigDict:
  """The train config of one run: `base` with the run's overrides, {workdir} filled in."""
  config = sweep.base.to_dict()
  config.update({k: v for k, v in run.items() if k not in ('name', 'tags')})
  return ml_collections.ConfigDict(_substitute(config, _absolute(workdir)))


def _absolute(path) -> epath.Path:
  """A local path made absolute (runs refer to each other's files by it); others as they are."""
  return epath.Path(Path(path).resolve() if files.is_local(path) else path)


def _eval_rows(name, directory, resolved, results):
  """One row per evaluation in metrics.jsonl, placed at the examples processed by then."""
  starts, step0, seen0 = [], 0, 0
  for phase, result in zip(resolved, results['phases']):
    starts.append((step0, seen0, phase))
    step0, seen0 = step0 + result['steps'], result['examples_seen']
  evals = {}
  for line in Workdir(directory).metrics.read_text().splitlines():
    record = json.loads(line)
    if 'test_top1' in record:      # a resumed run logs some steps twice: keep the last
      evals[record['step']] = record
  rows = []
  for step, record in sorted(evals.items()):
    first, seen, phase = [s for s in starts if s[0] < step][-1]
    rows.append({'name': name, 'phase': phase['name'], 'step': step,
                 'examples_seen': seen + (step - first) * phase['batch_size'],
                 'top1': record['test_top1'], 'val_top1': record.get('val_top1')})
  return rows


def collect(runs, workdir):
  """(run rows, columns, phase rows, eval rows) from the run directories with results.json."""
  workdir = epath.Path(workdir)
  tags = list(dict.fromkeys(k for r in runs for k in r.get('tags', {})))
  swept = list(dict.fromkeys(k for r in runs for k in r if k not in ('name', 'tags', 'phases')))
  rows, phase_rows, eval_rows = [], [], []
  for run in runs:
    directory = Workdir(workdir / run['name'])
    if not directory.results.exists():
      continue
    results = files.read_json(directory.results)
    resolved = files.read_json(directory.plan)
    last = resolved[-1]
    row = {'name': run['name'], **run.get('tags', {}),
           **{k: run[k] for k in swept if k in run}}
    row.update(train_examples=last['num_examples'],
               per_class=round(last['num_examples'] / last['num_classes'], 1),
               top1=results['final'].get('test_top1'), top5=results['final'].get('test_top5'),
               steps=results['steps'], examples_seen=results['examples_seen'],
               compute_epochs=results['examples_seen'] / last['num_examples'],
               wall_time_s=results['wall_time_s'])
    rows.append(row)
    for phase, result in zip(resolved, results['phases']):
      phase_rows.append({**{k: phase.get(k) for k in report.PHASE_COLUMNS}, **result,
                         'name': run['name'], 'phase': phase['name'],
                         'init': phase['init'].replace(str(_absolute(workdir)), PLACEHOLDER)})
    eval_rows += _eval_rows(run['name'], directory.root, resolved, results)
  return rows, ['name', *tags, *swept, *report.MEASURED], phase_rows, eval_rows


def run_sweep(sweep: ml_collections.ConfigDict, workdir, name: str = 'results', *,
              stop: Optional[StopRequest] = None) -> list[dict]:
  """Train every run not finished yet, rewriting the report after each; returns the rows.

  SIGTERM is honoured at any point: the run in progress saves and stops, or the sweep stops
  before its next run (`errors.Stopped`); rerunning the command continues.
  """
  with contextlib.ExitStack() as stack:
    stop = stop or stack.enter_context(StopRequest())
    return _run_all(sweep, epath.Path(workdir), name, stop)


def _run_all(sweep, workdir, name, stop) -> list[dict]:
  workdir.mkdir(parents=True, exist_ok=True)
  runs = check_runs(sweep)
  write = metrics.is_logging_process()
  report_config = _as_dict(sweep.report)
  for index, run in enumerate(runs):
    directory = workdir / run['name']
    if Workdir(directory).results.exists():
      print(f'[{index + 1}/{len(runs)}] {run["name"]}: done before, skipped', flush=True)
      continue
    if stop.agreed():
      raise Stopped(f'Stopped on request before run {run["name"]}; rerun the same command to '
                    f'continue the sweep.')
    print(f'[{index + 1}/{len(runs)}] {run["name"]}', flush=True)
    run_lib.run(run_config(sweep, run, workdir), directory, stop=stop)
    if write:
      report.write_all(workdir, name, *collect(runs, workdir), report_config)
  tables = collect(runs, workdir)
  if write:     # also when every run was done before: the report follows the current config
    report.write_all(workdir, name, *tables, report_config)
  return tables[0]


# train.py defines --config and --workdir (absl flags are process-wide); a sweep reads them too.
_CONFIG, _WORKDIR = train._CONFIG, train._WORKDIR  # noqa: SLF001


def main(argv):
  del argv
  if not _WORKDIR.value or 'runs' not in _CONFIG.value:
    raise app.UsageError('Expected --config=configs/sweeps/<study>.py[:arg] (a config with '
                         '`base`, `runs` and `report`) and --workdir=DIR.')
  logging.set_verbosity(logging.WARNING)
  # Every run compiles the same train and eval steps again; a persistent cache turns all but
  # the first compilation into a lookup (~10 s a run on CPU).
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update('jax_compilation_cache_dir', str(epath.Path(_WORKDIR.value) / '.jax_cache'))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  train.initialize_distributed()
  name = Path(flags.FLAGS['config'].config_filename.split(':')[0]).stem
  try:
    rows = run_sweep(_CONFIG.value, _WORKDIR.value, name)
  except (UserError, Stopped) as e:
    sys.exit(train.report(e))
  if metrics.is_logging_process():
    print(f'{len(rows)} runs: {_WORKDIR.value}/results.md, {_WORKDIR.value}/{name}.png')


if __name__ == '__main__':
  app.run(main, flags_parser=train.parse_flags)
