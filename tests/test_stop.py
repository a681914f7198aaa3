"""Ctrl-C and SIGTERM are stop requests, at any moment of a run's life. Oracles: the signal
handlers before and after, the exit code and the one message a person reads, the checkpoint
left behind."""

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO
from test_train import TINY, wait_for_checkpoint

from bit_jax.runtime.preemption import StopRequest


def test_first_ctrl_c_requests_a_stop_and_a_second_aborts(capsys):
  before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
  with StopRequest() as stop:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.1)  # the handler runs between bytecodes of the main thread
    assert stop.requested
    assert 'press Ctrl-C again to abort' in capsys.readouterr().err
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(1)
  assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def train(workdir, *flags):
  return subprocess.Popen(
    [sys.executable, '-m', 'bit_jax.train', f'--config={TINY}', f'--workdir={workdir}', *flags],
    cwd=REPO,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


@pytest.mark.slow
def test_ctrl_c_saves_and_exits_0_and_a_stop_while_starting_is_a_message(tmp_path):
  running = train(tmp_path / 'running', '--config.total_steps=100000', '--config.eval_every=0')
  starting = train(tmp_path / 'starting')
  try:
    time.sleep(1.5)  # still importing JAX (seconds)
    starting.send_signal(signal.SIGTERM)
    wait_for_checkpoint(tmp_path / 'running', running)
    running.send_signal(signal.SIGINT)
    out, err = running.communicate(timeout=300)
    early_out, early_err = starting.communicate(timeout=300)
  finally:
    running.kill()
    starting.kill()
  assert running.returncode == 0, err[-3000:]
  assert 'Traceback' not in err and 'Ctrl-C: stopping at the next safe point' in err
  [line] = [x for x in (out + err).splitlines() if x.startswith('Stopped on request at step')]
  assert 'rerun the same command to resume' in line
  assert not (tmp_path / 'running' / 'results.json').exists()
  assert not (tmp_path / 'running' / '.lock').exists()
  assert starting.returncode == 0, early_err[-3000:]
  assert 'Traceback' not in early_err
  assert [x for x in early_err.splitlines() if x.startswith('Stopped')], early_err[-3000:]
  assert not (tmp_path / 'starting' / 'phases.json').exists()
