"""Where a run's numbers go: `metrics.jsonl`, TensorBoard summaries and a live progress line.

Only process 0 writes; the other processes get a writer that does nothing, so the loop needs
no `if process_index == 0` of its own.
"""

import contextlib
import json
import sys
import time

from etils import epath

from bit_jax.errors import RunError


class MetricWriter:
  def __init__(self, metrics_file, tensorboard_dir, *, enabled: bool = True):
    self.enabled = enabled
    self.tensorboard_dir = epath.Path(tensorboard_dir)
    self._tensorboard = None
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

  @property
  def tensorboard(self):
    if self._tensorboard is None:  # importing TensorFlow's summary ops is slow; do it lazily
      from flax.metrics import tensorboard

      self._tensorboard = tensorboard.SummaryWriter(str(self.tensorboard_dir))
    return self._tensorboard

  def write(self, step: int, **scalars) -> None:
    if not self.enabled:
      return
    record = {
      'step': step,
      **{k: v if isinstance(v, str) else float(v) for k, v in scalars.items()},
    }
    try:
      self._jsonl.write(json.dumps(record) + '\n')
      self._jsonl.flush()
      for name, value in scalars.items():
        if not isinstance(value, str):
          self.tensorboard.scalar(name, float(value), step)
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
      if self._tensorboard is not None:
        self._tensorboard.flush()
    except Exception as e:  # noqa: BLE001  (OSError, or TensorFlow's own for a full disk)
      print(f'WARNING: {self._unwritable(e)}', file=sys.stderr, flush=True)


class ProgressLine:
  """The live line: step/total, loss, lr, images/s and ETA, measured between two reports."""

  def __init__(self, total_steps: int, batch_size: int, start_step: int = 0):
    self.total, self.batch_size = total_steps, batch_size
    self._step, self._time = start_step, time.perf_counter()

  def line(self, step: int, loss: float, lr: float, prefix: str = '') -> tuple[str, float]:
    now = time.perf_counter()
    rate = (step - self._step) * self.batch_size / max(now - self._time, 1e-9)
    self._step, self._time = step, now
    eta = (self.total - step) * self.batch_size / max(rate, 1e-9)
    return (
      f'{prefix}step {step}/{self.total}  loss {loss:.4f}  lr {lr:.3g}  '
      f'{rate:.1f} img/s  ETA {time.strftime("%H:%M:%S", time.gmtime(eta))}'
    ), rate
