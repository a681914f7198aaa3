"""Every command line speaks first: no C++ log line of TensorFlow/XLA before its own output.

Oracle: abseil's C++ log format (`I0000 00:00:1796156483.905642 4117 port.cc:153] ...`) and
its pre-initialisation banner, which this machine's TensorFlow prints on import unless the
command line mutes it (bit_jax/quiet_tensorflow.py).
"""

import re
import subprocess
import sys

import pytest
from conftest import REPO, user_environment

from bit_jax import command_line
from bit_jax.runtime.errors import ConfigError, RunError, Stopped

COMMAND_LINES = ['train', 'sweep', 'predict', 'export', 'fewshot', 'report']
# abseil's prefix: severity letter, MMDD, time, thread id, file:line]
_NATIVE_LOG_LINE = re.compile(r'^[IWEF]\d{4} [\d:.]+\s+\d+ \S+:\d+\]')


def _native_log_lines(text: str) -> list[str]:
  return [line for line in text.splitlines() if _NATIVE_LOG_LINE.match(line) or 'absl::' in line]


def test_the_oracle_recognises_the_lines_it_must_catch():
  seen = (
    'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n'
    'I0000 00:00:1796156483.905642    4117 port.cc:153] oneDNN custom operations are on.\n'
    'ERROR: Unknown command line flag\n'
  )
  assert len(_native_log_lines(seen)) == 2


def test_tensorflow_alone_prints_them_here_or_the_check_below_proves_nothing():
  """Where this TensorFlow is quiet on its own the test below cannot fail: say so."""
  plain = subprocess.run(
    [sys.executable, '-c', 'import tensorflow'],
    capture_output=True,
    text=True,
    timeout=300,
    env=user_environment(),
  )
  if not _native_log_lines(plain.stderr):
    pytest.skip('this TensorFlow prints no C++ log line on import here')


def test_no_command_line_prints_a_native_log_line_before_its_error():
  env = user_environment(PYTHONPATH=str(REPO))
  runs = {
    name: subprocess.Popen(
      [sys.executable, '-m', f'bit_jax.{name}', '--no_such_flag'],
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      cwd=REPO,
      env=env,
    )
    for name in COMMAND_LINES
  }
  for name, process in runs.items():
    out, err = process.communicate(timeout=300)
    assert process.returncode != 0, name
    assert not _native_log_lines(out + err), (name, err)
    # report's argparse prints its usage line before the error; absl's commands, the error.
    first = err.strip().splitlines()[-1 if name == 'report' else 0]
    assert 'no_such_flag' in first, (name, err)


def test_a_log_line_after_the_muted_import_reaches_stderr_and_no_file(tmp_path):
  """absl's log handler keeps the `sys.stderr` it was created with, during the muted import:
  its lines (orbax's warnings, say) must reach the real stderr, not the file that opens next."""
  victim = tmp_path / 'metrics.jsonl'
  script = (
    'import bit_jax.quiet_tensorflow\n'
    'from absl import app, logging\n'
    'def main(argv):\n'
    f'  with open({str(victim)!r}, "w") as f:\n'
    '    logging.warning("a warning while a file is open")\n'
    'app.run(main)\n'
  )
  done = subprocess.run(
    [sys.executable, '-c', script], capture_output=True, text=True, cwd=REPO, timeout=300
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert victim.read_text() == ''
  assert 'a warning while a file is open' in done.stderr


def test_keras_imports_as_usual_after_tensorflow_was_imported_without_it():
  # conftest imports bit_jax.quiet_tensorflow first, as every command does.
  import keras
  import tensorflow as tf

  assert tf.keras.layers.Dense is keras.layers.Dense
  assert sys.modules['keras'] is keras


@pytest.mark.parametrize(
  'error, code, line',
  [
    (ConfigError('batch_size=0'), 2, 'ERROR: batch_size=0'),
    (RunError('disk full'), 1, 'ERROR: disk full'),
    (Stopped('stopped, rerun to resume'), 0, 'stopped, rerun to resume'),
  ],
)
def test_every_command_line_turns_a_user_error_into_one_line_and_its_exit_code(
  error, code, line, capsys
):
  def main(argv):
    raise error

  with pytest.raises(SystemExit) as exit_:
    command_line.one_line_errors(main)([])
  assert exit_.value.code == code
  assert capsys.readouterr().err.splitlines() == [line]


def test_an_error_that_is_not_the_users_keeps_its_traceback():
  def main(argv):
    raise KeyError('a bug')

  with pytest.raises(KeyError):
    command_line.one_line_errors(main)([])
