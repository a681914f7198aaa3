"""A disk with 0-32 KB free, wherever the first write strikes (the lock, the ids, metrics,
TensorBoard, a checkpoint): one ERROR line, exit 1, no traceback, no empty lock. Oracle: the
exit codes of errors.py and what the command line prints."""

import concurrent.futures
import subprocess

import pytest
from test_robustness import cli


@pytest.fixture
def small_disks(tmp_path):
  mounts = []
  for free_kb in (0, 8, 16, 32):
    mount = tmp_path / f'free{free_kb}k'
    mount.mkdir()
    if subprocess.run(
      ['mount', '-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', str(mount)], capture_output=True
    ).returncode:
      pytest.skip('cannot mount a small tmpfs here')
    mounts.append(mount)
    with open(mount / 'filler', 'wb') as f:
      f.write(b'\0' * (256 - free_kb) * 1024)
  yield mounts
  for mount in mounts:
    subprocess.run(['umount', '-l', str(mount)], capture_output=True)


@pytest.mark.slow
def test_a_nearly_full_disk_is_one_line_wherever_it_strikes(small_disks):
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    done = list(pool.map(lambda m: cli(workdir=m / 'run'), small_disks))
  for mount, result in zip(small_disks, done):
    assert result.returncode == 1, (mount.name, result.stderr[-3000:])
    assert 'Traceback' not in result.stderr, (mount.name, result.stderr[-3000:])
    [line] = [x for x in result.stderr.splitlines() if x.startswith('ERROR:')]
    assert 'No space left on device' in line and str(mount / 'run') in line, line
    assert not (mount / 'run' / '.lock').exists()
