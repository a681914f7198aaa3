"""Stop requests: SIGTERM (a preempted TPU VM, `kill`, a SLURM time limit) becomes a flag that
the loop and the sweep runner check at safe points, where they save and stop.

    with StopRequest() as stop:
      ... if stop.agreed(): save and raise errors.Stopped

The handler is installed for the `with` block only and the previous one restored after, so a
notebook or a sweep that calls `run` keeps its own. Nested blocks share the outer request.
"""

import signal
import threading

from bit_jax import parallel


class StopRequest:
  def __init__(self):
    self.requested = False
    self._previous = None
    self._installed = False

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __enter__(self):
    # Only the main thread may set handlers; elsewhere a stop can still be requested by hand.
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
      self._installed = True
    return self

  def __exit__(self, *exc):
    if self._installed:
      signal.signal(signal.SIGTERM, self._previous)
      self._installed = False
    return False

  def agreed(self) -> bool:
    """Whether any process was asked to stop. SIGTERM reaches processes at different times;
    every process must call this at the same points."""
    return parallel.any_process(self.requested)
