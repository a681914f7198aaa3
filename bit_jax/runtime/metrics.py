"""Where a run's numbers go: `metrics.jsonl`, TensorBoard summaries and a live progress line.

TensorBoard: one run per phase (`tensorboard/<phase>/`), so phases overlay on one global-step
axis; each holds the phase's resolved settings as text ('plan') and as hparams. Scalars are
written as classic `simple_value` summaries, which both `EventAccumulator(...).Scalars('loss')`
and TensorBoard's own readers (tensorboard.data, which migrates them) find; tf.summary, flax's
writer and clu's metric writers write tensor summaries, which `Scalars` does not. Counts (ints:
`test_examples`, ...) are bookkeeping: metrics.jsonl keeps them, TensorBoard does not plot them.

Only process 0 writes; the other processes get a writer that does nothing, so the loop needs
no `if process_index == 0` of its own.
"""

import contextlib
import json
import sys
import time

import numpy as np
from etils import epath

from bit_jax.runtime.errors import RunError


def is_count(value) -> bool:
  return isinstance(value, (bool, int, np.integer))


class MetricWriter:
  def __init__(self, metrics_file, tensorboard_dir, *, enabled: bool = True):
    self.enabled = enabled
    self.tensorboard_dir = epath.Path(tensorboard_dir)
    self._runs = {}  # phase name -> its TensorBoard event file writer
    self._files = contextlib.ExitStack()
    if enabled:
      metrics_file = epath.Path(metrics_file)
      metrics_file.parent.mkdir(parents=True, exist_ok=True)
      # Appended line by line and flushed, so every record is complete JSON or absent after a
      # kill. (On gs:// epath's open is a context manager; the stack keeps it open.)
      try:
        self._jsonl = self._files.enter_context(metrics_file.open('a'))
      except OSError as e:
        raise self._unwritable(e) from None

  def _run(self, phase: str):
    if phase not in self._runs:  # TensorBoard's writer: pure Python, any filesystem TF reaches
      from tensorboard.summary.writer.event_file_writer import EventFileWriter

      # Flushed every 30 s and at the end, not per record: on gs:// each flush re-uploads.
      self._runs[phase] = EventFileWriter(str(self.tensorboard_dir / phase), flush_secs=30)
    return self._runs[phase]

  def _summary(self, phase: str, step: int, values) -> None:
    from tensorboard.compat.proto import event_pb2, summary_pb2

    # The plugins' helpers build TensorFlow's proto classes when TensorFlow is installed; the
    # event writer takes TensorBoard's own, so every value is carried over as bytes.
    summary = summary_pb2.Summary(
      value=[summary_pb2.Summary.Value.FromString(v.SerializeToString()) for v in values]
    )
    self._run(phase).add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

  def write(self, step: int, *, phase: str, **scalars) -> None:
    if not self.enabled:
      return
    record = {
      'step': step,
      'phase': phase,
      **{k: int(v) if is_count(v) else float(v) for k, v in scalars.items()},
    }
    try:
      self._jsonl.write(json.dumps(record) + '\n')
      self._jsonl.flush()
      from tensorboard.compat.proto import summary_pb2

      values = [
        summary_pb2.Summary.Value(tag=name, simple_value=float(value))
        for name, value in scalars.items()
        if not is_count(value)
      ]
      self._summary(phase, step, values)
    except OSError as e:
      raise self._unwritable(e) from None
    except Exception as e:  # noqa: BLE001  (TensorBoard's summaries report a full disk as TF's own)
      import tensorflow as tf  # imported already by the summary writer

      if isinstance(e, tf.errors.OpError):
        raise self._unwritable(e) from None
      raise

  def _unwritable(self, e: Exception) -> RunError:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    full = 'No space left on device'  # TensorFlow's message wraps it in a page of context
    reason = getattr(e, 'strerror', None) or (full if full in text else text)
    return RunError(
      f'Could not write metrics to {self.tensorboard_dir.parent} '
      f'({reason}); the checkpoints are unchanged. Free space or fix '
      f'the directory, then rerun to resume.'
    )

  def write_plan(self, records: list[dict], step: int = 0) -> None:
    """Each phase's resolved settings, in its own run: a text table and hparams."""
    if not self.enabled:
      return
    from tensorboard.plugins.hparams import summary as hparams
    from tensorboard.plugins.text import summary_v2 as text

    for record in records:
      table = '| field | value |\n|---|---|\n' + '\n'.join(
        f'| {k} | {json.dumps(v)} |' for k, v in record.items()
      )
      values = list(text.text_pb('plan', table).value)
      flat = {
        k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v) for k, v in record.items()
      }
      values += list(hparams.session_start_pb(hparams=flat).value)
      self._summary(record['name'], step, values)

  def print(self, *args) -> None:
    if self.enabled:
      print(*args, flush=True)

  def close(self) -> None:
    """Flush and close; a failure (a full disk) is one warning line, never an exception that
    would hide the error that ended the run."""
    if not self.enabled:
      return
    try:
      self._files.close()
      for run in self._runs.values():
        run.close()
    except Exception as e:  # noqa: BLE001  (OSError, or TensorFlow's own for a full disk)
      print(f'WARNING: {self._unwritable(e)}', file=sys.stderr, flush=True)


class ProgressLine:
  """The live line: step/total, loss, lr, images/s and ETA, measured between two reports over
  training time only (`exclude` takes out evaluations and saves, which would otherwise halve
  the rate and double the ETA of the report after them)."""

  def __init__(self, total_steps: int, batch_size: int, start_step: int = 0):
    self.total, self.batch_size = total_steps, batch_size
    self._step, self._time = start_step, time.perf_counter()

  def exclude(self, seconds: float) -> None:
    """Leave `seconds` spent on something other than training out of the next rate."""
    self._time += seconds

  def line(self, step: int, loss: float, lr: float, prefix: str = '') -> tuple[str, float]:
    now = time.perf_counter()
    rate = (step - self._step) * self.batch_size / max(now - self._time, 1e-9)
    self._step, self._time = step, now
    eta = (self.total - step) * self.batch_size / max(rate, 1e-9)
    return (
      f'{prefix}step {step}/{self.total}  loss {loss:.4f}  lr {lr:.3g}  '
      f'{rate:.1f} img/s  ETA {time.strftime("%H:%M:%S", time.gmtime(eta))}'
    ), rate
