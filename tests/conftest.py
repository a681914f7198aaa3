"""Shared test setup: 8 virtual CPU devices for the data-parallel tests, paths to test data."""

import os
import pathlib
import sys

# Must be set before jax initialises its backend; single-device code is unaffected.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'tools'))   # timm_oracle, benchmark_steps: tools, not the package
TEST_DATA = REPO / 'tests' / 'data'
SHARED_TFDS = REPO.parent / 'shared' / 'data' / 'tfds'


@pytest.fixture
def shared_tfds():
  """The real CIFAR-10 subset prepared for TFDS (CI has ../shared beside the clone)."""
  if not (SHARED_TFDS / 'cifar10').exists():
    pytest.skip(f'real CIFAR-10 subset not found at {SHARED_TFDS}')
  return SHARED_TFDS
