"""One test in a fresh process with more virtual CPU devices than the suite's two (conftest).

XLA fixes the number of host devices when the backend starts, so a test that needs eight runs
again, whole, in a pytest of its own started with eight.
"""

import os
import re
import subprocess
import sys

import jax


def rerun_with_devices(count: int, request) -> bool:
  """True once the requesting test has passed in a fresh process with `count` CPU devices;
  False if this process has them already (the test then runs here)."""
  if jax.device_count() == count:
    return False
  others = re.sub(
    r'--xla_force_host_platform_device_count=\d+', '', os.environ.get('XLA_FLAGS', '')
  )
  env = {**os.environ, 'XLA_FLAGS': f'--xla_force_host_platform_device_count={count} {others}'}
  done = subprocess.run(
    [
      sys.executable,
      '-m',
      'pytest',
      '-q',
      '-p',
      'no:xdist',
      '-p',
      'no:cacheprovider',
      request.node.nodeid,
    ],
    cwd=request.config.rootpath,
    env=env,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
  return True
