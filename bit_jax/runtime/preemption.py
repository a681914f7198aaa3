"""Stop requests: SIGTERM (a preempted TPU VM, `kill`, a SLURM time limit) and Ctrl-C (SIGINT,
a person at a terminal) become a flag that the loop and the sweep runner check at safe
points, where they save and stop. A second Ctrl-C aborts at once (`KeyboardInterrupt`), for
the person who cannot wait for the save.

    with StopRequest() as stop:
      ... if stop.agreed(): save and raise errors.Stopped

The handlers are installed for the `with` block only and the previous ones restored after, so
a notebook or a sweep that calls `run` keeps its own. Nested blocks share the outer request.
"""

import signal
import sys
import threading

from bit_jax.runtime import parallel

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
  def __init__(self):
    self.requested = False
    self._previous = {}
    self._installed = False

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self.requested:
      signal.signal(signal.SIGINT, signal.default_int_handler)
      raise KeyboardInterrupt
    if signum == signal.SIGINT:
      print(
        'Ctrl-C: stopping at the next safe point, after a save (press Ctrl-C again to abort '
        'without saving).',
        file=sys.stderr,
        flush=True,
      )
    self.requested = True

  def __enter__(self):
    # Only the main thread may set handlers; elsewhere a stop can still be requested by hand.
    if threading.current_thread() is threading.main_thread():
      self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
      self._installed = True
    return self

  def __exit__(self, *exc):
    if self._installed:
      for s, previous in self._previous.items():
        signal.signal(s, previous)
      self._installed = False
    return False

  def agreed(self) -> bool:
    """Whether any process was asked to stop. Signals reach processes at different times;
    every process must call this at the same points."""
    return parallel.any_process(self.requested)
