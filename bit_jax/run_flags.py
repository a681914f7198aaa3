"""The flags of the two commands that train, `train` and `sweep`: the config file, the workdir
and how several processes find each other; and `jax.distributed` started from them.

absl flags are process-wide and defined once: `train` defines these when it is imported (its
`main` runs in tests with them), `sweep` only when it runs as a script, so a process that
imports both (a test session) defines them once.
"""

import dataclasses
import os

import jax
from absl import flags
from ml_collections import config_flags


@dataclasses.dataclass(frozen=True)
class RunFlags:
  """The defined flags; `.value` of each is its parsed value."""

  config: flags.FlagHolder
  workdir: flags.FlagHolder
  coordinator_address: flags.FlagHolder
  num_processes: flags.FlagHolder
  process_id: flags.FlagHolder


def define(config_default: str | None, config_help: str, workdir_help: str) -> RunFlags:
  """Defines --config (a config file, `path[:arg]`, overridable by --config.<field>),
  --workdir and the flags of several processes (off Cloud TPU)."""
  return RunFlags(
    config=config_flags.DEFINE_config_file('config', config_default, config_help, lock_config=True),
    workdir=flags.DEFINE_string('workdir', None, workdir_help),
    coordinator_address=flags.DEFINE_string(
      'coordinator_address', None, 'host:port of process 0, for several processes off Cloud TPU.'
    ),
    num_processes=flags.DEFINE_integer('num_processes', None, 'Processes in the run.'),
    process_id=flags.DEFINE_integer('process_id', None, 'This process (0-based).'),
  )


def initialize_distributed(run_flags: RunFlags) -> None:
  """`jax.distributed` across the processes the flags name, or a Cloud TPU pod's own."""
  if run_flags.coordinator_address.value:
    jax.distributed.initialize(
      run_flags.coordinator_address.value,
      run_flags.num_processes.value,
      run_flags.process_id.value,
    )
  elif ',' in os.environ.get('TPU_WORKER_HOSTNAMES', ''):  # a multi-host Cloud TPU VM slice
    jax.distributed.initialize()
