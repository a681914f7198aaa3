"""One owner per workdir: a lock file naming the process that trains there.

`<workdir>/.lock` holds the owner's host, pid, the identity of that process's start (on
Linux: the boot id and the start time in /proc/<pid>/stat), the time it took the lock and a
heartbeat (refreshed at every logging step). A second process refuses with a message naming
the owner. A lock is stale, and taken over, when its process is gone:

* on the same host, when no running process has that pid *and* that start: after a container
  restart the new process often gets the old one's pid (pid 1), and an unrelated process may
  reuse it, so the pid alone cannot tell. The current process is never its own blocker. A
  lock without a start identity (no /proc) is live while its pid runs and beats;
* from another host (a preempted VM comes back under a new name), when its heartbeat is older
  than `STALE_AFTER_S`.

The lock is created atomically: with O_EXCL on a local disk, and on gs:// with a write that
Cloud Storage accepts only if the object does not exist (`if_generation_match=0`), or, taking
over a stale lock, only if it is still the version read. Of two processes starting together
exactly one wins. With several processes, process 0 owns the lock and the others learn the
outcome from it.
"""

import json
import os
import socket
import time
import uuid
from pathlib import Path

from etils import epath

from bit_jax.runtime import files
from bit_jax.runtime.errors import RunError

STALE_AFTER_S = 30 * 60


class WorkdirInUse(RunError):
  """Another live process owns the workdir."""


def process_start(pid: int) -> str | None:
  """Who process `pid` is, beyond its pid: the boot id and its start time in clock ticks
  (field 22 of /proc/<pid>/stat). None when no such process runs, or off Linux."""
  try:
    stat = Path(f'/proc/{pid}/stat').read_text()
    boot = Path('/proc/sys/kernel/random/boot_id').read_text().strip()
  except (OSError, ValueError):
    return None
  return f'{boot}:{stat.rpartition(")")[2].split()[19]}'  # fields after the name start at 3


def _pid_running(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's process: it exists
    return True
  except (OverflowError, ValueError):
    return False
  return True


def _stale(owner: dict, now: float) -> bool:
  beat_is_old = now - float(owner.get('heartbeat', 0)) > STALE_AFTER_S
  if owner.get('host') != socket.gethostname():
    return beat_is_old
  pid = int(owner.get('pid', -1))
  if pid == os.getpid():  # this process holds no lock it does not know of
    return True
  if owner.get('process_start') and process_start(os.getpid()) is not None:
    return process_start(pid) != owner['process_start']
  return not _pid_running(pid) or beat_is_old


def is_claimed(path) -> bool:
  """Whether a live process holds the lock at `path`."""
  owner = WorkdirLock(path)._read()  # noqa: SLF001  (one reader of the format)
  return owner is not None and not _stale(owner, time.time())


def _blob(path):
  """The google-cloud-storage blob of a gs:// path (its client honours
  STORAGE_EMULATOR_HOST)."""
  from google.auth import exceptions
  from google.cloud import storage

  bucket, _, name = os.fspath(path).removeprefix('gs://').partition('/')
  try:
    return storage.Client().bucket(bucket).blob(name)
  except exceptions.DefaultCredentialsError as e:
    raise RunError(
      f'Cannot lock {path}: no Google Cloud credentials ({e}). Run `gcloud auth '
      f'application-default login`, or run where the VM has a service account.'
    ) from None


class WorkdirLock:
  def __init__(self, path):
    self.path = epath.Path(path)
    self.token = uuid.uuid4().hex
    self.record = None

  def _taken(self) -> WorkdirInUse:
    return WorkdirInUse(f'{self.path.parent} was just taken by another process; see {self.path}.')

  def acquire(self) -> str:
    """Take the lock; returns a note when a stale lock was taken over ('' otherwise)."""
    now = time.time()
    note = ''
    owner, generation = self._read_versioned()
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
      'process_start': process_start(os.getpid()),
      'started': now,
      'heartbeat': now,
      'token': self.token,
    }
    try:
      self._create(owner is None, generation)
      if generation is None and (self._read() or {}).get('token') != self.token:
        raise self._taken()  # another process overwrote the same stale lock
    except WorkdirInUse:
      self.record = None
      raise
    return note

  def heartbeat(self) -> None:
    if self.record is not None:
      self.record['heartbeat'] = time.time()
      files.write_atomic(self.path, json.dumps(self.record), tidy=False)

  def release(self) -> None:
    if self.record is not None and (self._read() or {}).get('token') == self.token:
      self.path.unlink()
    self.record = None

  def _read(self):
    if not files.is_local(self.path):  # one client for the lock on Cloud Storage
      return self._read_versioned()[0]
    try:
      return json.loads(self.path.read_text())
    except FileNotFoundError:
      return None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
      return {}  # a torn lock: treated as stale (no host, no heartbeat)

  def _read_versioned(self) -> tuple[dict | None, int | None]:
    """(owner record or None, its Cloud Storage generation: 0 when absent; None locally)."""
    if files.is_local(self.path):
      return self._read(), None
    from google.api_core import exceptions

    blob = _blob(self.path)
    try:  # one request: the content and the generation it is (from the response headers)
      text = blob.download_as_text()
    except exceptions.NotFound:
      return None, 0
    try:
      return json.loads(text), blob.generation
    except json.JSONDecodeError:
      return {}, blob.generation

  def _create(self, exclusive: bool, generation: int | None) -> None:
    content = json.dumps(self.record)
    if generation is not None:  # Cloud Storage: the write succeeds only on that version
      from google.api_core import exceptions

      try:
        _blob(self.path).upload_from_string(content, if_generation_match=generation)
      except exceptions.PreconditionFailed:
        raise self._taken() from None
    elif exclusive:
      self._create_local(content)
    else:  # (not tidy: another process may be taking over the same stale lock)
      files.write_atomic(self.path, content, tidy=False)

  def _create_local(self, content: str) -> None:
    try:  # O_EXCL: of two processes starting together, exactly one creates the file
      fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
      raise self._taken() from None
    except OSError as e:
      raise self._unwritable(e) from None
    try:
      with os.fdopen(fd, 'w') as f:
        f.write(content)
    except OSError as e:  # a full disk: no empty lock left behind
      os.unlink(self.path)
      raise self._unwritable(e) from None

  def _unwritable(self, e: OSError) -> RunError:
    return RunError(
      f'Could not write the lock {self.path} ({e.strerror or e}). Free space on that '
      f'disk, then rerun.'
    )
