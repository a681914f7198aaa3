"""The metric writer on a full disk: one line, never a traceback that hides the run's own
error. Oracle: the error that ended the run is the one that reaches the command line."""

import contextlib
import errno

import pytest

from bit_jax.runtime import metrics
from bit_jax.runtime.errors import RunError


def test_a_failed_close_on_a_full_disk_does_not_hide_the_error_that_ended_the_run(
  tmp_path, monkeypatch, capsys
):
  writer = metrics.MetricWriter(tmp_path / 'metrics.jsonl', tmp_path / 'tensorboard')
  writer.write(1, phase='phase0', loss=0.5)

  def full():
    raise OSError(errno.ENOSPC, 'No space left on device')

  monkeypatch.setattr(writer._files, 'close', full)  # noqa: SLF001  (the file's final flush)
  with pytest.raises(RunError, match='the save that failed'):
    with contextlib.ExitStack() as stack:
      stack.callback(writer.close)
      raise RunError('the save that failed')
  [line] = capsys.readouterr().err.splitlines()
  assert line.startswith('WARNING: Could not write metrics to') and 'No space left' in line


def test_a_metrics_file_that_cannot_be_opened_is_one_line(tmp_path):
  (tmp_path / 'metrics.jsonl').mkdir()  # where the file should go: as unopenable as a full disk
  with pytest.raises(RunError, match='Could not write metrics to'):
    metrics.MetricWriter(tmp_path / 'metrics.jsonl', tmp_path / 'tensorboard')
