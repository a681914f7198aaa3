"""Train and evaluate: `python -m bit_jax.train --config=configs/bit_hyperrule.py --workdir=DIR`.

The command line of `bit_jax.run`: flags, several processes, and errors as one message.
`--dry_run` resolves and checks every phase (data, HyperRule values, init, freeze, batch
sizes), prints the plan, each phase's whole schedule (warmup, decays, total) and the HyperRule
regime its data put it in (and why), and exits, before anything is trained. Exit codes: 0 done (or stopped
by SIGTERM after saving: rerun to resume), 2 a config error (nothing ran), 1 a failure while
running (the message says what was kept).

Several processes: on Cloud TPU VM pods `jax.distributed` initialises itself; elsewhere pass
--coordinator_address, --num_processes and --process_id.
"""

import os
import sys
from pathlib import Path

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from bit_jax import hyperrule, metrics, schedules
from bit_jax import plan as plan_lib
from bit_jax import run as run_lib
from bit_jax.errors import ConfigError, Stopped, UserError


def _demo_config() -> Path:
  """configs/demo.py of a clone, else the copy an installed package ships (bit_jax/configs)."""
  here = Path(__file__).resolve()
  beside = here.parents[1] / 'configs' / 'demo.py'
  return beside if beside.exists() else here.parent / 'configs' / 'demo.py'


DEMO_CONFIG = str(_demo_config())

_CONFIG = config_flags.DEFINE_config_file(
  'config',
  DEMO_CONFIG,
  'Path to a config file, optionally with ":arg" (see configs/).',
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (resumes what is there).')
_DRY_RUN = flags.DEFINE_bool(
  'dry_run', False, 'Print the resolved plan of every phase and exit without training.'
)
_COORDINATOR = flags.DEFINE_string(
  'coordinator_address', None, 'host:port of process 0, for several processes off Cloud TPU.'
)
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in the run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process (0-based).')
_ACCEPT_CHANGES = flags.DEFINE_list(
  'accept_changes',
  [],
  'Resume a workdir although these fields of the config changed (e.g. '
  'total_steps), on purpose; the change is recorded in plan_changes.json.',
)


def _flag_mistake(error: BaseException) -> str:
  """One line for a mistake in the flags: absl's own message, or for a misspelt
  --config.<field> the config's suggestion instead of three chained tracebacks."""
  chain = [error]
  while chain[-1].__context__ is not None and len(chain) < 10:
    chain.append(chain[-1].__context__)
  for e in chain:
    text = e.args[0] if e.args and isinstance(e.args[0], str) else ''
    if 'Did you mean' in text:
      return f'Unknown config field {text.replace(chr(10), ". ")} See bit_jax/defaults.py.'
  return ' '.join(str(error).split())


def parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # noqa: BLE001  (any mistake in the flags or the config file)
    print(f'ERROR: {_flag_mistake(e)}', file=sys.stderr, flush=True)
    sys.exit(2)


def initialize_distributed():
  if _COORDINATOR.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  elif ',' in os.environ.get('TPU_WORKER_HOSTNAMES', ''):  # a multi-host Cloud TPU VM slice
    jax.distributed.initialize()


def report(error: BaseException) -> int:
  """Print a user-facing failure as one line on stderr; returns the exit code."""
  print(
    f'ERROR: {error}' if isinstance(error, UserError) else str(error), file=sys.stderr, flush=True
  )
  return error.exit_code


def print_results(results: dict, workdir: str) -> None:
  for result in results['phases']:
    accuracy = '  '.join(
      f'{k} {v:.4f}'
      for k, v in result.items()
      if k.startswith('test_') and isinstance(v, float) and 'loss' not in k
    )
    print(f'{result["phase"]:>12}: {accuracy}  ({result["steps"]} steps)')
  print(
    f'Done in {results["wall_time_s"]:.0f} s: {results["steps"]} steps, '
    f'{results["examples_seen"]} examples processed. {workdir}/results.json'
  )


def schedule_lines(plan) -> str:
  """Per phase: its whole schedule, and the HyperRule regime its data put it in, and why."""
  lines = []
  for phase in plan.phases:
    s = phase.settings
    image_hw = hyperrule.image_size(s.dataset, s.data_dir)  # metadata only; None: not shown
    lines.append(f'{s.name}: {schedules.describe(s)}')
    lines.append(f'{" " * len(s.name)}  {schedules.hyperrule_note(s, image_hw)}')
  return '\n'.join(lines)


def main(argv):
  del argv
  if not _WORKDIR.value and not _DRY_RUN.value:
    raise app.UsageError('--workdir is required (a directory for checkpoints and metrics).')
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  initialize_distributed()
  try:
    if not flags.FLAGS['config'].present and not Path(DEMO_CONFIG).exists():
      raise ConfigError(
        f'No --config given and the demo config is not installed ({DEMO_CONFIG}). Pass '
        f'--config=<a config .py>, e.g. configs/demo.py or configs/bit_hyperrule.py of a '
        f'clone of bit_jax.'
      )
    if not _DRY_RUN.value:
      run_lib.check_writable(_WORKDIR.value)
    plan = plan_lib.resolve(_CONFIG.value)
    if _DRY_RUN.value:
      print(plan.table())
      print(schedule_lines(plan))
      return
    results = run_lib.execute(plan, _WORKDIR.value, accept_changes=_ACCEPT_CHANGES.value)
  except (UserError, Stopped) as e:
    sys.exit(report(e))
  if metrics.is_logging_process():
    print_results(results, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
