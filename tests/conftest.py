"""Shared test setup: 2 virtual CPU devices for the data-parallel tests, paths to test data."""

import os
import pathlib
import sys
import tempfile

# jax sets TF_CPP_MIN_LOG_LEVEL=1 in os.environ when it is imported and the variable is unset,
# and every process the tests start inherits that: TensorFlow's INFO lines (all that some
# machines' TensorFlow prints on import) would be hidden from the checks that a command prints
# no C++ log line, which must see what a user's shell gives (`user_environment`). Recorded
# before anything imports jax, once: pytest-xdist's workers inherit it from the controller,
# whose conftest has imported jax by the time it starts them.
os.environ.setdefault('BIT_JAX_TESTS_TF_LOG_LEVEL', os.environ.get('TF_CPP_MIN_LOG_LEVEL', 'unset'))

# Must be set before jax initialises its backend; single-device code is unaffected.
# Two devices take every data-parallel path (a sharded batch, the gradient all-reduce, data
# shards); on the 2 CPU cores CI has, each device more than the cores costs every training
# step thread hand-offs (a tiny run's steps: 3x the CPU time at 8 devices). A test that needs
# eight runs itself again in a process that has them (tests/on_devices.py).
# The suite's programs are small and most are compiled once and run a few steps, so compiling
# is most of its CPU time: LLVM at optimisation level 1 instead of XLA's default halves that
# and runs these programs as fast, and XLA's loop emitter instead of its MLIR fusion emitters
# (which build an MLIR context per fusion) takes a tiny model's train step from 7 s to 4-5 s of
# compiling on a 2.45 GHz EPYC, its steps no slower. Float semantics are the same (XLA turns on
# no fast-math in either), so every numerical check means what it does at the defaults; the
# benchmarks (tools/benchmark.py) keep XLA's defaults.
os.environ.setdefault(
  'XLA_FLAGS',
  '--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=1'
  ' --xla_cpu_use_fusion_emitters=false',
)
# Many tests train the same tiny model: a compilation cache shared by the session (and the
# command lines it starts, which inherit the environment) compiles each program once.
# pytest-xdist's workers share one cache: they run the same few programs.
_RUN = os.environ.get('PYTEST_XDIST_TESTRUNUID')
_CACHE = (
  os.path.join(tempfile.gettempdir(), f'bit_jax_jit_{_RUN}')
  if _RUN
  else tempfile.mkdtemp(prefix='bit_jax_jit_')
)
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', _CACHE)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')

import pytest  # noqa: E402

# TensorFlow as every command imports it (tests/in_process.py runs commands in this process).
import bit_jax.quiet_tensorflow  # noqa: E402, F401

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'tools'))  # timm_oracle, benchmark_steps: tools, not the package
sys.path.insert(0, str(REPO / 'tests' / 'configs'))  # tiny.py, tiny_sweep.py
TEST_DATA = REPO / 'tests' / 'data'
# The real-data tests read a TFDS data_dir holding the CIFAR-10 subset: BIT_JAX_TEST_DATA, else
# ../shared/data/tfds beside the clone (where CI has it).
SHARED_TFDS = pathlib.Path(
  os.environ.get('BIT_JAX_TEST_DATA') or REPO.parent / 'shared' / 'data' / 'tfds'
)


def user_environment(**extra) -> dict:
  """os.environ with `extra`, and TensorFlow's log level as the shell that ran pytest had it."""
  env = {**os.environ, **extra}
  level = os.environ['BIT_JAX_TESTS_TF_LOG_LEVEL']
  if level == 'unset':
    env.pop('TF_CPP_MIN_LOG_LEVEL', None)
  else:
    env['TF_CPP_MIN_LOG_LEVEL'] = level
  return env


@pytest.fixture
def shared_tfds():
  """The real CIFAR-10 subset prepared for TFDS (CI has ../shared beside the clone)."""
  if not (SHARED_TFDS / 'cifar10').exists():
    pytest.skip(f'real CIFAR-10 subset not found at {SHARED_TFDS} (set BIT_JAX_TEST_DATA)')
  return SHARED_TFDS
