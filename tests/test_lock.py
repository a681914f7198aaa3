"""The workdir lock knows its owner. Oracles: processes started here (live, gone, or an
unrelated one that reuses a pid), /proc, and a race of two creators that exactly one wins, on
the local disk and on a Cloud Storage emulator (tests/gcs_emulator.py)."""

import errno
import json
import os
import socket
import subprocess
import sys
import threading
import time

import gcs_emulator
import pytest
from test_gcs import gcs  # noqa: F401  (the emulator fixture)

from bit_jax.runtime import lock
from bit_jax.runtime.errors import RunError


def write(path, **record):
  path.write_text(json.dumps({'host': socket.gethostname(), 'started': 0, **record}))


@pytest.fixture
def sleeper():
  """A live process that is not this one (and holds no lock)."""
  process = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])
  yield process
  process.kill()
  process.wait()


def test_a_restarted_process_with_the_old_pid_is_not_blocked_by_its_own_lock(tmp_path):
  # After a container restart the new process has the old one's pid; the lock it finds
  # names that pid, but another start (or none), and a heartbeat of 0.
  path = tmp_path / '.lock'
  for start in ('0:12345', None):
    write(path, pid=os.getpid(), process_start=start, heartbeat=0)
    held = lock.WorkdirLock(path)
    assert 'Took over the stale lock of pid' in held.acquire()
    assert json.loads(path.read_text())['token'] == held.token
    held.release()


def test_an_unrelated_process_reusing_the_pid_does_not_hold_the_lock(tmp_path, sleeper):
  path = tmp_path / '.lock'
  live = lock.process_start(sleeper.pid)
  assert live is not None and live != lock.process_start(os.getpid())
  # The pid runs, but it is another process than the one that wrote the lock.
  write(path, pid=sleeper.pid, process_start=live + '0', heartbeat=time.time())
  assert 'stale' in lock.WorkdirLock(path).acquire()
  # A lock of the old format (no start recorded), its pid reused, its heartbeat 2 hours old.
  write(path, pid=sleeper.pid, heartbeat=time.time() - 7206)
  assert 'stale' in lock.WorkdirLock(path).acquire()
  # The real owner, alive: refused, however old its heartbeat (a long compile beats rarely).
  write(path, pid=sleeper.pid, process_start=live, heartbeat=0)
  with pytest.raises(RunError, match=f'in use by pid {sleeper.pid}'):
    lock.WorkdirLock(path).acquire()
  assert lock.is_claimed(path)
  sleeper.kill()
  sleeper.wait()
  assert not lock.is_claimed(path)


def test_a_lock_from_another_host_lives_by_its_heartbeat(tmp_path):
  path = tmp_path / '.lock'
  write(path, host='elsewhere', pid=os.getpid(), heartbeat=time.time() - 10)
  with pytest.raises(RunError, match='in use by pid .* on elsewhere'):
    lock.WorkdirLock(path).acquire()
  write(path, host='elsewhere', pid=1, heartbeat=time.time() - lock.STALE_AFTER_S - 1)
  assert 'stale' in lock.WorkdirLock(path).acquire()


def test_a_full_disk_while_locking_is_one_line_and_leaves_no_empty_lock(tmp_path, monkeypatch):
  def full(fd, mode):
    os.close(fd)
    raise OSError(errno.ENOSPC, 'No space left on device')

  monkeypatch.setattr(lock.os, 'fdopen', full)
  path = tmp_path / '.lock'
  with pytest.raises(RunError, match=f'Could not write the lock {path} .No space left'):
    lock.WorkdirLock(path).acquire()
  assert not path.exists()


def race(path, monkeypatch) -> list:
  """Two creators that both read the lock before either writes: what each got."""
  both_read = threading.Barrier(2, timeout=60)
  read = lock.WorkdirLock._read_versioned

  def read_then_wait(self):
    seen = read(self)
    both_read.wait()
    return seen

  monkeypatch.setattr(lock.WorkdirLock, '_read_versioned', read_then_wait)
  outcomes = [None, None]

  def attempt(i):
    try:
      outcomes[i] = lock.WorkdirLock(path).acquire() or 'won'
    except lock.WorkdirInUse as e:
      outcomes[i] = e

  threads = [threading.Thread(target=attempt, args=(i,)) for i in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  return outcomes


def test_two_creators_on_cloud_storage_exactly_one_wins(gcs, monkeypatch):  # noqa: F811
  for key, value in gcs.items():
    monkeypatch.setenv(key, value)
  path = f'gs://{gcs_emulator.BUCKET}/race/.lock'
  outcomes = race(path, monkeypatch)
  assert sorted(isinstance(o, lock.WorkdirInUse) for o in outcomes) == [False, True], outcomes
  assert 'just taken by another process' in str(next(o for o in outcomes if o != 'won'))
  # Taking over a stale lock: both read the same stale version, one replaces it.
  stale = {'host': 'elsewhere', 'pid': 1, 'started': 0, 'heartbeat': 0}
  lock._blob(path).upload_from_string(json.dumps(stale))  # noqa: SLF001
  outcomes = race(path, monkeypatch)
  assert sorted(isinstance(o, lock.WorkdirInUse) for o in outcomes) == [False, True], outcomes


def test_two_creators_on_a_local_disk_exactly_one_wins(tmp_path, monkeypatch):
  outcomes = race(tmp_path / '.lock', monkeypatch)
  assert sorted(isinstance(o, lock.WorkdirInUse) for o in outcomes) == [False, True], outcomes
