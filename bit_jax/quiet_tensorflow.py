"""Imported first by every command line: loads TensorFlow with its C++ start-up logs muted,
and without the Keras import it does not need.

TensorFlow (tf.data, TFDS) logs through abseil before anything has initialised abseil's
logging, and abseil then writes every message to stderr whatever TF_CPP_MIN_LOG_LEVEL says:
"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
"I0000 ... oneDNN custom operations are on ...", "This TensorFlow binary is optimized ...".
Those lines would stand in front of every command's output and of its one-line `ERROR:`.
They are written to file descriptor 2 by C++ during the import, so the import runs with that
descriptor pointed at /dev/null; Python-level errors of the import still raise normally and
print after it is restored.

TensorFlow's import also imports Keras 3 (about 2 s of CPU, a quarter of a command's start),
only so that Keras' optimizers are registered for loading Keras SavedModels; no command loads
one. While TensorFlow imports, `keras` is made unimportable, which TensorFlow tolerates (it
catches the ImportError); afterwards `import keras` and `tf.keras` work as usual.

Research code that imports bit_jax is not affected by either.
"""

import contextlib
import os
import sys


@contextlib.contextmanager
def native_stderr_muted():
  """Points file descriptor 2 at /dev/null for the block (C++ writes there directly), while
  Python's `sys.stderr` keeps writing where it did: a warning, or the message of a stop
  requested during the import (train.py's start-up handler), still reaches the user."""
  sys.stderr.flush()
  # The copy of the real stderr stays open for the life of the process: what the import keeps
  # of `sys.stderr` (absl's log handler keeps the stream it was created with) must go on
  # writing to the real stderr, not into whatever file later reuses a closed descriptor's
  # number (a run's metrics.jsonl, say).
  real_stderr = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  python_stderr = sys.stderr
  try:
    sys.stderr = os.fdopen(real_stderr, 'w', buffering=1, closefd=False)
    os.dup2(devnull, 2)
    yield
  finally:
    sys.stderr.flush()
    os.dup2(real_stderr, 2)
    sys.stderr = python_stderr
    os.close(devnull)


@contextlib.contextmanager
def keras_unimportable():
  """`import keras` raises ImportError inside the block, unless Keras is already loaded."""
  loaded = 'keras' in sys.modules
  if not loaded:
    sys.modules['keras'] = None  # the import system's "not importable" marker
  try:
    yield
  finally:
    if not loaded:
      sys.modules.pop('keras', None)


with native_stderr_muted(), keras_unimportable():
  import tensorflow  # noqa: F401  (the import is the point: later imports find it loaded)
