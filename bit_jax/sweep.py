"""Run a grid of trainings, each several times, and tabulate/plot them with confidence
intervals: the studies of configs/sweeps.

    python -m bit_jax.sweep --config=configs/sweeps/dataset_size_upstream.py:mini \
        --workdir=/tmp/dataset_size
    python -m bit_jax.sweep ... --shard=0/4     # one of 4 jobs (a SLURM array, 4 TPU VMs)

A sweep config's `get_config(arg)` returns a ConfigDict with

* `base`: a full run config (`bit_jax.recipe.defaults.base_config()` plus the study's settings);
* `runs`: a sequence of dicts, each a run `name`, optional `tags` (labels for the tables and
  the plot, e.g. `{'upstream': 'BiT-M'}`), optional `seeds` (this run's repeats) and
  overrides of any `base` field, `phases` included. The text `{workdir}` in any string value
  is the sweep's directory, so a run can start from an earlier run's weights:
  `init='{workdir}/upstream_small/final.npz'`; `{seed}` is the repeat's index;
* `seeds` (default 1): how often every run is repeated. Repeat k trains with `seed + k`
  (initialisation, data order, augmentation, MixUp) and `subset_seed + k` (which images a
  k-shot, fraction or holdout draws), so its k-th repeat of every run shares the subsets and
  seeds of every other run's k-th: the pairs `report.compare` tests. `hold_subset=True`
  keeps `subset_seed` (every repeat trains on the same images);
* `report`: see `bit_jax/report.py` (plot, summary with 95% intervals, comparisons);
* `swap` (optional): `dict(halves=(A, B))`, two disjoint class tuples: every run that names
  '{source}', '{target}' or '{direction}' runs in both directions, and the report is of
  their mean, each direction's under `<workdir>/directions/` (see bit_jax/studies/class_split.py).

Each repeat trains with `run.run` in `<workdir>/<name>/seed<k>` when the sweep names
`seeds`, or in `<workdir>/<name>` for a run without repeats (no `seeds` in the sweep, or the
run's own `seeds=1`, e.g. an upstream every repeat starts from). Finished repeats are skipped and interrupted ones resume, so rerunning the
command finishes a sweep. With `--shard=i/n` a job trains every n-th repeat (in order);
n jobs share one sweep directory. A repeat another job is training (its workdir lock is
live) is left to it; one whose inputs (another run's final.npz) are not there yet is waited
for, or trained here if no job has claimed it. After every repeat the tables and plots are
rewritten from whatever has finished.
"""

# isort: off
import bit_jax.quiet_tensorflow  # noqa: F401  (first: TensorFlow logs C++ lines on import)
# isort: on

import contextlib
import dataclasses
import json
import time
from pathlib import Path

import jax
import ml_collections
from absl import app, flags, logging
from etils import epath

from bit_jax import command_line, report, run_flags
from bit_jax.runtime import files, metric_names
from bit_jax.runtime.errors import ConfigError, Stopped
from bit_jax.runtime.lock import WorkdirInUse, is_claimed
from bit_jax.runtime.preemption import StopRequest
from bit_jax.studies import class_split
from bit_jax.training import run as run_lib
from bit_jax.training.run_state import Workdir

PLACEHOLDER, SEED = '{workdir}', '{seed}'
RUN_KEYS = ('name', 'tags', 'seeds')  # in a run dict, but not config fields
WAIT_S = 10.0


class SweepConfigError(ConfigError):
  """A sweep config the user must fix; `main` prints it without a traceback."""


@dataclasses.dataclass(frozen=True)
class Repeat:
  """One training of a sweep: run `name` at repeat `seed`, in `directory`."""

  name: str
  seed: int
  directory: epath.Path
  config: ml_collections.ConfigDict
  inputs: tuple[epath.Path, ...]  # directories of repeats whose files it reads
  given: tuple[str, ...] = ()  # the fields the run sets over `base`


def _substitute(value, replacements: dict):
  if isinstance(value, str):
    for key, new in replacements.items():
      value = value.replace(key, str(new))
    return value
  if isinstance(value, (list, tuple)):
    return type(value)(_substitute(v, replacements) for v in value)
  if isinstance(value, dict):
    return {k: _substitute(v, replacements) for k, v in value.items()}
  return value


def _as_dict(value):
  return value.to_dict() if isinstance(value, ml_collections.ConfigDict) else dict(value)


def _absolute(path) -> epath.Path:
  """A local path made absolute (runs refer to each other's files by it); others as they are."""
  return epath.Path(Path(path).resolve() if files.is_local(path) else path)


def check_runs(sweep: ml_collections.ConfigDict) -> list[dict]:
  """The runs as plain dicts, after checking names, fields and references to other runs."""
  try:
    runs = class_split.expand([_as_dict(r) for r in sweep.runs], _swap(sweep))
  except ValueError as e:
    raise SweepConfigError(str(e)) from None
  fields = set(sweep.base.to_dict())
  seen = set()
  for index, run in enumerate(runs):
    name = run.get('name')
    if not name or '/' in name or name in seen:
      raise SweepConfigError(
        f'Run {index} has name {name!r}; every run needs a unique name '
        f'without "/" (it names its directory).'
      )
    unknown = sorted(set(run) - fields - set(RUN_KEYS))
    if unknown:
      raise SweepConfigError(
        f'Run {name!r} overrides unknown fields {unknown}; runs may set '
        f'any field of `base` (README.md, "Config fields"), plus '
        f'{", ".join(RUN_KEYS)}.'
      )
    clashes = sorted(set(run.get('tags', {})) & (fields | {'name', 'seed_index'}))
    if clashes:
      raise SweepConfigError(
        f'Run {name!r} has tags {clashes} named like config fields; '
        f'rename them (they become columns beside the overridden fields).'
      )
    if not isinstance(run.get('seeds', 1), int) or run.get('seeds', 1) < 1:
      raise SweepConfigError(f'Run {name!r} has seeds={run["seeds"]!r}; expected an int >= 1.')
    text = json.dumps({**sweep.base.to_dict(), **run}, default=str)
    for other in {r.get('name') for r in runs} - seen - {None}:
      if f'{PLACEHOLDER}/{other}/' in text:
        raise SweepConfigError(
          f'Run {name!r} uses {PLACEHOLDER}/{other}/, but run {other!r} '
          f'is not listed before it; order the runs so their inputs '
          f'exist.'
        )
    seen.add(name)
  return runs


def _swap(sweep) -> dict | None:
  swap = sweep.get('swap')
  return _as_dict(swap) if swap else None


def write_reports(sweep, workdir, name: str) -> None:
  """The sweep's tables and plot; with a class swap, those of the two directions' means, and
  each direction's own summary under `<workdir>/directions/` (no comparisons or plot there:
  the compared tags name a run of each direction)."""
  rows, columns, phase_rows, eval_rows = collect(sweep, workdir)
  spec = _as_dict(sweep.report)
  if not _swap(sweep):
    report.write_all(workdir, name, rows, columns, phase_rows, eval_rows, spec)
    return
  means = class_split.direction_means(rows)
  report.write_all(workdir, name, means, columns, phase_rows, eval_rows, spec)
  directions = epath.Path(workdir) / 'directions'
  directions.mkdir(parents=True, exist_ok=True)
  each = {k: v for k, v in spec.items() if k != 'compare'} | {'runs': ()}
  report.write_all(directions, name, rows, columns, phase_rows, eval_rows, each)


def repeats(sweep: ml_collections.ConfigDict, workdir) -> list[Repeat]:
  """Every training of the sweep, in order: each run's repeats, seed 0 first."""
  workdir = _absolute(workdir)
  default_seeds, hold_subset = sweep.get('seeds'), sweep.get('hold_subset', False)
  out = []
  for run in check_runs(sweep):
    seeds = run.get('seeds', default_seeds or 1)
    # A run repeated by the sweep's `seeds` keeps each repeat in seed<k>/, even when that is
    # one (the layout, and paths such as '{workdir}/up/seed{seed}/...', do not depend on it).
    per_seed = 'seeds' not in run and default_seeds is not None or seeds > 1
    for k in range(seeds):
      config = sweep.base.to_dict()
      config.update({key: v for key, v in run.items() if key not in RUN_KEYS})
      config = _substitute(config, {PLACEHOLDER: workdir, SEED: k})
      config['seed'] += k
      config['subset_seed'] += 0 if hold_subset else k
      directory = workdir / run['name'] / f'seed{k}' if per_seed else workdir / run['name']
      text = json.dumps(config, default=str)
      inputs = tuple(r.directory for r in out if f'{r.directory}/' in text)
      given = tuple(key for key in run if key not in (*RUN_KEYS, 'phases'))
      config = ml_collections.ConfigDict(config)
      out.append(Repeat(run['name'], k, directory, config, inputs, given))
  return out


def _done(directory) -> bool:
  return Workdir(directory).results.exists()


def _wait_for_inputs(repeat: Repeat, everything: dict, stop: StopRequest, train_here) -> None:
  """Block until every input of `repeat` is finished: train an unclaimed one here, wait for
  one that another job is training."""
  for directory in repeat.inputs:
    announced = False
    while not _done(directory):
      if stop.agreed():
        raise Stopped(f'Stopped on request while waiting for {directory}; rerun to continue.')
      if not is_claimed(Workdir(directory).lock):
        train_here(everything[directory])
        continue
      if not announced:
        print(f'  waiting for {directory}, which another job is training', flush=True)
        announced = True
      time.sleep(WAIT_S)


def run_sweep(
  sweep: ml_collections.ConfigDict,
  workdir,
  name: str = 'results',
  *,
  stop: StopRequest | None = None,
  shard: tuple[int, int] = (0, 1),
) -> list[dict]:
  """Train this shard's unfinished repeats, rewriting the report after each; returns the rows
  of every finished repeat.

  SIGTERM is honoured at any point: the repeat in progress saves and stops, or the sweep
  stops before its next one (`errors.Stopped`); rerunning the command continues.
  """
  with contextlib.ExitStack() as stack:
    stop = stop or stack.enter_context(StopRequest())
    return _run_shard(sweep, epath.Path(workdir), name, stop, shard)


def _run_shard(sweep, workdir, name, stop, shard) -> list[dict]:
  workdir.mkdir(parents=True, exist_ok=True)
  everything = repeats(sweep, workdir)
  by_directory = {r.directory: r for r in everything}
  index, count = shard
  mine = everything[index::count]
  tag = f'[shard {index}/{count}] ' if count > 1 else ''

  def write_report():
    if jax.process_index() == 0:
      write_reports(sweep, workdir, name)

  def train_here(repeat: Repeat) -> None:
    if stop.agreed():
      raise Stopped(
        f'Stopped on request before {repeat.directory}; rerun the same command '
        f'to continue the sweep.'
      )
    _wait_for_inputs(repeat, by_directory, stop, train_here)
    position = everything.index(repeat) + 1
    try:
      with run_lib.claimed(repeat.directory) as claim:
        if _done(repeat.directory):  # finished by another job since we looked
          return
        print(f'{tag}[{position}/{len(everything)}] {repeat.name} seed {repeat.seed}', flush=True)
        run_lib.run(
          repeat.config,
          repeat.directory,
          stop=stop,
          claim=claim,
          given=repeat.given,
          shared_top=True,
        )
    except WorkdirInUse:
      print(f'{tag}  {repeat.directory} is being trained by another job; left to it', flush=True)
      return
    write_report()

  for repeat in mine:
    if _done(repeat.directory):
      print(f'{tag}{repeat.name} seed {repeat.seed}: done before, skipped', flush=True)
      continue
    train_here(repeat)
  write_report()  # also when every run was done before: the report follows the config
  return collect(sweep, workdir)[0]


def _eval_rows(base_row, directory, resolved, results):
  """One row per evaluation in metrics.jsonl, placed at the examples processed by then."""
  starts, step0, seen0 = [], 0, 0
  for phase, result in zip(resolved, results['phases']):
    starts.append((step0, seen0, phase))
    step0, seen0 = step0 + result['steps'], result['examples_seen']
  evals = {}
  for line in Workdir(directory).metrics.read_text().splitlines():
    record = json.loads(line)
    if metric_names.TEST_TOP1 in record:  # a resumed run logs some steps twice: keep the last
      evals[record['step']] = record
  rows = []
  for step, record in sorted(evals.items()):
    first, seen, phase = [s for s in starts if s[0] < step][-1]
    rows.append(
      {
        **base_row,
        'phase': phase['name'],
        'step': step,
        'examples_seen': seen + (step - first) * phase['batch_size'],
        'top1': record[metric_names.TEST_TOP1],
        metric_names.VAL_TOP1: record.get(metric_names.VAL_TOP1),
      }
    )
  return rows


def collect(sweep, workdir):
  """(rows, columns, phase rows, eval rows) of every finished repeat: one row each."""
  workdir = _absolute(workdir)
  runs = check_runs(sweep)
  tags = list(dict.fromkeys(k for r in runs for k in r.get('tags', {})))
  swept = list(dict.fromkeys(k for r in runs for k in r if k not in (*RUN_KEYS, 'phases')))
  overrides = {r['name']: r for r in runs}
  rows, phase_rows, eval_rows = [], [], []
  for repeat in repeats(sweep, workdir):
    directory = Workdir(repeat.directory)
    if not directory.results.exists():
      continue
    results = files.read_json(directory.results)
    resolved = files.read_json(directory.plan)
    last, run = resolved[-1], overrides[repeat.name]
    row = {
      'name': repeat.name,
      'seed_index': repeat.seed,
      **run.get('tags', {}),
      **{k: run[k] for k in swept if k in run},
    }
    row.update(
      subset_seed=last['subset_seed'],
      train_examples=last['num_examples'],
      per_class=round(last['num_examples'] / last['num_classes'], 1),
      top1=results['final'].get(metric_names.TEST_TOP1),
      top5=results['final'].get(metric_names.TEST_TOP5),
      steps=results['steps'],
      examples_seen=results['examples_seen'],
      compute_epochs=results['examples_seen'] / last['num_examples'],
      wall_time_s=results['wall_time_s'],
    )
    rows.append(row)
    for phase, result in zip(resolved, results['phases']):
      phase_rows.append(
        {
          **{k: phase.get(k) for k in report.PHASE_COLUMNS},
          **result,
          'name': repeat.name,
          'seed_index': repeat.seed,
          'phase': phase['name'],
          'init': phase['init'].replace(str(workdir), PLACEHOLDER),
        }
      )
    eval_rows += _eval_rows(
      {'name': repeat.name, 'seed_index': repeat.seed}, directory.root, resolved, results
    )
  return rows, ['name', 'seed_index', *tags, *swept, *report.MEASURED], phase_rows, eval_rows


def define_flags() -> tuple[run_flags.RunFlags, flags.FlagHolder]:
  """The command line's flags (`run_flags` and --shard); defined only when run as a script,
  so that importing this module beside `train` defines no flag twice."""
  defined = run_flags.define(
    None,
    'A sweep config, configs/sweeps/<study>.py[:arg] (see this module).',
    'The sweep directory: one workdir per run and repeat, the tables and plots.',
  )
  shard = flags.DEFINE_string(
    'shard',
    '0/1',
    'i/n: train every n-th repeat, from the i-th '
    '(0-based), as one of n jobs sharing the sweep directory.',
  )
  flags.adopt_module_key_flags(run_flags)  # --help lists them as this command's own
  return defined, shard


def parse_shard(text: str) -> tuple[int, int]:
  try:
    index, count = (int(part) for part in text.split('/'))
  except ValueError:
    index, count = -1, 0
  if not 0 <= index < count:
    raise SweepConfigError(f'--shard={text!r}: expected i/n with 0 <= i < n, e.g. 0/4.')
  return index, count


def main(argv, defined: run_flags.RunFlags, shard: flags.FlagHolder):
  del argv
  config, workdir = defined.config.value, defined.workdir.value
  if not workdir or config is None or 'runs' not in config:
    raise app.UsageError(
      'Expected --config=configs/sweeps/<study>.py[:arg] (a config with '
      '`base`, `runs` and `report`) and --workdir=DIR.'
    )
  logging.set_verbosity(logging.WARNING)
  # Every run compiles the same train and eval steps again; a persistent cache turns all but
  # the first compilation into a lookup (~10 s a run on CPU).
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update('jax_compilation_cache_dir', str(epath.Path(workdir) / '.jax_cache'))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  run_flags.initialize_distributed(defined)
  name = Path(flags.FLAGS['config'].config_filename.split(':')[0]).stem
  rows = run_sweep(config, workdir, name, shard=parse_shard(shard.value))
  if jax.process_index() == 0:
    print(f'{len(rows)} runs finished: {workdir}/results.md, {workdir}/{name}.png')


def cli():
  """The `bit-jax-sweep` script."""
  sweep_flags = define_flags()
  command_line.run(lambda argv: main(argv, *sweep_flags))


if __name__ == '__main__':
  cli()
