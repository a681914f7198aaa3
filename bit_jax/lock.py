"""One owner per workdir: a lock file naming the process that trains there.

`<workdir>/.lock` holds the owner's host, pid, start time and a heartbeat (refreshed at every
logging step). A second process refuses with a message naming the owner. A lock is stale, and
taken over, when its process is gone: on the same host its pid no longer runs; from another
host (a preempted VM comes back under a new name) its heartbeat is older than
`STALE_AFTER_S`. With several processes, process 0 owns the lock and the others learn the
outcome from it.
"""

import json
import os
import socket
import time
import uuid

from etils import epath

from bit_jax import files
from bit_jax.errors import RunError

STALE_AFTER_S = 30 * 60


class WorkdirInUse(RunError):
  """Another live process owns the workdir."""


def _pid_running(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's process: it exists
    return True
  return True


def _stale(owner: dict, now: float) -> bool:
  if owner.get('host') == socket.gethostname():
    return not _pid_running(int(owner.get('pid', -1)))
  return now - float(owner.get('heartbeat', 0)) > STALE_AFTER_S


def is_claimed(path) -> bool:
  """Whether a live process holds the lock at `path`."""
  owner = WorkdirLock(path)._read()  # noqa: SLF001  (one reader of the format)
  return owner is not None and not _stale(owner, time.time())


class WorkdirLock:
  def __init__(self, path):
    self.path = epath.Path(path)
    self.token = uuid.uuid4().hex
    self.record = None

  def acquire(self) -> str:
    """Take the lock; returns a note when a stale lock was taken over ('' otherwise)."""
    now = time.time()
    note = ''
    owner = self._read()
    if owner is not None:
      if not _stale(owner, now):
        raise WorkdirInUse(
          f'{self.path.parent} is in use by pid {owner.get("pid")} on {owner.get("host")} '
          f'(started {time.ctime(owner.get("started", 0))}, last seen '
          f'{now - owner.get("heartbeat", now):.0f} s ago). Wait for it to finish or stop '
          f'it; if it is gone, delete {self.path}.'
        )
      note = (
        f'Took over the stale lock of pid {owner.get("pid")} on {owner.get("host")} '
        f'(that process is gone).'
      )
    self.record = {
      'host': socket.gethostname(),
      'pid': os.getpid(),
      'started': now,
      'heartbeat': now,
      'token': self.token,
    }
    self._create(exclusive=owner is None)
    if (self._read() or {}).get('token') != self.token:  # another process won the race
      raise WorkdirInUse(f'{self.path.parent} was just taken by another process; see {self.path}.')
    return note

  def heartbeat(self) -> None:
    if self.record is not None:
      self.record['heartbeat'] = time.time()
      files.write_atomic(self.path, json.dumps(self.record))

  def release(self) -> None:
    if self.record is not None and (self._read() or {}).get('token') == self.token:
      self.path.unlink()
    self.record = None

  def _read(self):
    try:
      return json.loads(self.path.read_text())
    except FileNotFoundError:
      return None
    except (json.JSONDecodeError, OSError):
      return {}  # a torn lock: treated as stale (no host, no heartbeat)

  def _create(self, exclusive: bool) -> None:
    content = json.dumps(self.record)
    if exclusive and files.is_local(self.path):
      try:  # O_EXCL: of two processes starting together, exactly one creates the file
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
      except FileExistsError:
        raise WorkdirInUse(
          f'{self.path.parent} was just taken by another process; see {self.path}.'
        ) from None
      with os.fdopen(fd, 'w') as f:
        f.write(content)
    else:
      files.write_atomic(self.path, content)
