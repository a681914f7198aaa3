"""What every command line (train, sweep, predict, export, fewshot) does around its `main`.

A mistake in the flags or the config file is one `ERROR:` line and exit code 2; a failure the
user must act on (`bit_jax.runtime.errors.UserError`) is one `ERROR:` line with the exit code of its
kind; a stop request (`Stopped`) is its message and exit code 0. No traceback for any of them.
TensorFlow never sees the GPUs (JAX owns them).

    if __name__ == '__main__':
      command_line.run(main)
"""

import difflib
import functools
import sys

from absl import app, flags

from bit_jax.data import data_sources
from bit_jax.recipe import defaults
from bit_jax.runtime.errors import Stopped, UserError

WHERE_FIELDS_ARE = (
  'Every field and its meaning: README.md, "Config fields" (bit_jax/recipe/settings.py).'
)


def flag_mistake(error: BaseException) -> str:
  """One line for a mistake in the flags: absl's own message or, for a misspelt
  --config.<field>, the nearest fields instead of three chained tracebacks."""
  chain = [error]
  while chain[-1].__context__ is not None and len(chain) < 10:
    chain.append(chain[-1].__context__)
  for e in chain:
    text = e.args[0] if e.args and isinstance(e.args[0], str) else ''
    if 'Did you mean' in text:
      return f'Unknown config field {text.replace(chr(10), ". ")} {WHERE_FIELDS_ARE}'
  fields = sorted(defaults.base_config())
  for e in chain:  # a name far from every field: ml_collections says only KeyError('name')
    if type(e) is KeyError and e.args and isinstance(e.args[0], str):
      name = e.args[0].strip('\'"')
      nearest = difflib.get_close_matches(name, fields, n=3, cutoff=0)
      return (
        f'Unknown config field {name!r}; the nearest are {", ".join(nearest)}. {WHERE_FIELDS_ARE}'
      )
  return ' '.join(str(error).split())


def parse_flags(argv):
  """absl's flag parsing, with any mistake (a flag, the config file) as one line, exit 2."""
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # noqa: BLE001  (any mistake in the flags or the config file)
    print(f'ERROR: {flag_mistake(e)}', file=sys.stderr, flush=True)
    sys.exit(2)


def report(error: BaseException) -> int:
  """Print a user-facing failure as one line on stderr; returns the exit code."""
  print(
    f'ERROR: {error}' if isinstance(error, UserError) else str(error), file=sys.stderr, flush=True
  )
  return error.exit_code


def one_line_errors(main):
  """`main` with UserError and Stopped printed by `report` and turned into exit codes."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except (UserError, Stopped) as e:
      sys.exit(report(e))

  return wrapped


def run(main) -> None:
  """Parse the flags and run `main`, with TensorFlow kept off the GPUs from the start: JAX
  owns the accelerators, and TF (tf.data, TFDS, the SavedModel export) would otherwise take
  their memory the first time any of it runs an op."""
  data_sources.keep_tensorflow_off_accelerators()
  app.run(one_line_errors(main), flags_parser=parse_flags)
