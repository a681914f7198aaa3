"""A command line run inside the test process: `bit_jax.<command>.cli()`, the function its
`python -m` and its `bit-jax-<command>` script call, with the given arguments.

A fresh Python spends ~10 s of CPU importing TensorFlow and JAX before a command does anything;
the tests that check what a command prints, its exit code and what it writes run it here
instead, where those imports are done. What only a fresh process shows stays in subprocesses:
native log lines at start-up (tests/test_command_lines.py, the plan-error line in
tests/test_train.py), signals, kill -9, several processes, environment variables read at import.
"""

import contextlib
import dataclasses
import importlib
import io
import sys

from absl import flags


@dataclasses.dataclass(frozen=True)
class Done:
  """What `subprocess.run(..., capture_output=True, text=True)` would have returned."""

  returncode: int
  stdout: str
  stderr: str


def _exit_code(code) -> tuple[int, str]:
  """SystemExit's code as a process's exit status, and what Python would print for it."""
  if code is None:
    return 0, ''
  if isinstance(code, int):
    return code, ''
  return 1, f'{code}\n'


def run(command: str, *argv) -> Done:
  """Runs `python -m bit_jax.<command> *argv` here; its stdout and stderr come back as text.

  absl's flags are process-wide: those the command defines when it starts (and the
  `--config.<field>` overrides ml_collections defines while parsing) are removed afterwards and
  every flag is reset to its default, so each run parses its own arguments only.
  """
  module = importlib.import_module(f'bit_jax.{command}')
  defined_before = set(flags.FLAGS)
  stdout, stderr = io.StringIO(), io.StringIO()
  saved_argv, sys.argv = sys.argv, [f'bit_jax.{command}', *map(str, argv)]
  returncode, message = 0, ''
  try:
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
      module.cli()
  except SystemExit as e:
    returncode, message = _exit_code(e.code)
  finally:
    sys.argv = saved_argv
    for name in set(flags.FLAGS) - defined_before:
      delattr(flags.FLAGS, name)
    flags.FLAGS.unparse_flags()
  return Done(returncode, stdout.getvalue(), stderr.getvalue() + message)
