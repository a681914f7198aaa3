"""Progress bars that suit where they are shown: live on a terminal, a line now and then in a log.

tqdm redraws its bar in place with carriage returns, which a log file (stdout or stderr not a
terminal: a batch job, `| tee`, CI) keeps as one endless line of every redraw. There, the bar
writes one plain line at most every `LOG_INTERVAL_S` seconds, and its final state.
"""

import io
import sys

import tqdm

LOG_INTERVAL_S = 30.0


class _Lines(io.TextIOBase):
  """A log's view of a bar: each redraw on a line of its own, no carriage returns."""

  def __init__(self, stream):
    super().__init__()
    self.stream = stream

  def write(self, text: str) -> int:
    line = text.replace('\r', '').strip()
    if line:
      self.stream.write(line + '\n')
    return len(text)

  def flush(self) -> None:
    self.stream.flush()


def bar(iterable=None, *, quiet: bool = False, file=None, **kwargs) -> tqdm.tqdm:
  """`tqdm.tqdm(iterable, **kwargs)` on `file` (stderr): live on a terminal, else in lines."""
  file = file or sys.stderr
  if not getattr(file, 'isatty', lambda: False)():
    kwargs.setdefault('mininterval', LOG_INTERVAL_S)
    file = _Lines(file)
  return tqdm.tqdm(iterable, disable=quiet, file=file, **kwargs)
