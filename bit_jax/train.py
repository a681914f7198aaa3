"""Train and evaluate: `python -m bit_jax.train --config=configs/bit_hyperrule.py --workdir=DIR`.

The command line of `bit_jax.training.run`: flags, several processes, and errors as one message.
`--dry_run` resolves and checks every phase (data, HyperRule values, init, freeze, batch
sizes), prints the plan, each phase's whole schedule (warmup, decays, total) and the
HyperRule regime its data put it in (and why), and exits, before anything is trained. Exit
codes: 0 done (or stopped by SIGTERM or Ctrl-C after saving: rerun to resume), 2 a config
error (nothing ran), 1 a failure while running (the message says what was kept), 130 a second
Ctrl-C (not saved).

Several processes: on Cloud TPU VM pods `jax.distributed` initialises itself; elsewhere pass
--coordinator_address, --num_processes and --process_id.
"""

import os
import signal
import sys


def _stopped_starting(signum, frame):
  del frame
  print(
    f'Stopped ({signal.Signals(signum).name}) while starting, before anything was written; '
    f'rerun the same command to start.',
    file=sys.stderr,
    flush=True,
  )
  os._exit(0)  # not SystemExit: raised inside a garbage-collector callback, it is ignored


if __name__ == '__main__':  # importing JAX and TensorFlow takes seconds: a stop then is clean
  for _signal in (signal.SIGTERM, signal.SIGINT):
    signal.signal(_signal, _stopped_starting)

# isort: off
import bit_jax.quiet_tensorflow  # noqa: E402, F401  (first: TensorFlow logs C++ lines on import)
# isort: on

import errno  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from bit_jax import command_line, run_flags  # noqa: E402
from bit_jax.recipe import fields, hyperrule  # noqa: E402
from bit_jax.recipe import plan as plan_lib  # noqa: E402
from bit_jax.runtime import metric_names  # noqa: E402
from bit_jax.runtime.errors import ConfigError, Stopped  # noqa: E402
from bit_jax.runtime.preemption import StopRequest  # noqa: E402
from bit_jax.training import run as run_lib  # noqa: E402


def _demo_config() -> Path:
  """configs/demo.py of a clone, else the copy an installed package ships (bit_jax/configs)."""
  here = Path(__file__).resolve()
  beside = here.parents[1] / 'configs' / 'demo.py'
  return beside if beside.exists() else here.parent / 'configs' / 'demo.py'


DEMO_CONFIG = str(_demo_config())

_RUN = run_flags.define(
  DEMO_CONFIG,
  'Path to a config file, optionally with ":arg" (see configs/).',
  'Run directory (resumes what is there).',
)
flags.adopt_module_key_flags(run_flags)  # --help lists them as this command's own
_DRY_RUN = flags.DEFINE_bool(
  'dry_run', False, 'Print the resolved plan of every phase and exit without training.'
)
_PHASE = flags.DEFINE_multi_string(
  'phase',
  [],
  'Override a field of one phase: --phase=<phase name>.<field>=<value>, e.g. '
  '--phase=transfer.lr=0.01 (a top-level --config.<field> is refused where a phase sets it).',
)
_ACCEPT_CHANGES = flags.DEFINE_list(
  'accept_changes',
  [],
  'Resume a workdir although these fields of the config changed (e.g. '
  'total_steps), on purpose; the change is recorded in plan_changes.json.',
)


def print_results(results: dict, workdir: str) -> None:
  for result in results['phases']:
    accuracy = '  '.join(f'{k} {v:.4f}' for k, v in result.items() if metric_names.is_accuracy(k))
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
    lines.append(f'{s.name}: {hyperrule.describe(s)}')
    lines.append(f'{" " * len(s.name)}  {hyperrule.note(s, image_hw)}')
  return '\n'.join(lines)


def given_fields() -> set[str]:
  """The top-level config fields set on the command line (--config.<field>=...)."""
  overrides = config_flags.get_override_values(flags.FLAGS['config'])
  return {key.split('.')[0] for key in overrides}


def plan_and_run(stop: StopRequest) -> dict | None:
  """results.json's content, or None for a dry run (which prints the plan)."""
  if not flags.FLAGS['config'].present and not Path(DEMO_CONFIG).exists():
    raise ConfigError(
      f'No --config given and the demo config is not installed ({DEMO_CONFIG}). Pass '
      f'--config=<a config .py>, e.g. configs/demo.py or configs/bit_hyperrule.py of a '
      f'clone of bit_jax.'
    )
  if not _DRY_RUN.value:
    run_lib.check_writable(_RUN.workdir.value)
  config = fields.with_phase_overrides(_RUN.config.value, _PHASE.value)
  plan = plan_lib.resolve(config, given=given_fields())
  if _DRY_RUN.value:
    print(plan.table())
    print(schedule_lines(plan))
    print(
      f'\nEvery field (README.md, "Config fields", says what each means):\n{plan.settings_table()}'
    )
    return None
  if stop.requested:
    raise Stopped('Stopped on request while planning, before anything was written; rerun.')
  return run_lib.execute(plan, _RUN.workdir.value, stop=stop, accept_changes=_ACCEPT_CHANGES.value)


def main(argv):
  del argv
  if not _RUN.workdir.value and not _DRY_RUN.value:
    raise app.UsageError('--workdir is required (a directory for checkpoints and metrics).')
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  run_flags.initialize_distributed(_RUN)
  try:
    with StopRequest() as stop:  # SIGTERM or Ctrl-C while planning: stopped, nothing written
      results = plan_and_run(stop)
  except OSError as e:
    if e.errno != errno.ENOSPC:
      raise
    # A full disk that struck where no message names it (a library's own write).
    print(
      f'ERROR: No space left on device writing {e.filename or _RUN.workdir.value}; what was saved '
      f'before is intact. Free space, then rerun to resume.',
      file=sys.stderr,
      flush=True,
    )
    sys.exit(1)
  except KeyboardInterrupt:
    print(
      'ERROR: aborted by a second Ctrl-C, without saving; the last saved checkpoint is '
      'intact and a rerun resumes from it.',
      file=sys.stderr,
      flush=True,
    )
    sys.exit(130)
  if results is None:
    return
  if jax.process_index() == 0:
    print_results(results, _RUN.workdir.value)


def cli():
  """The `bit-jax-train` script."""
  command_line.run(main)


if __name__ == '__main__':
  cli()
