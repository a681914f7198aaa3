"""Files a run writes for people: on any filesystem epath reaches (local disk, gs://, ...),
never seen half-written.

A file is written under a temporary name beside its final one and then renamed over it, so a
kill or a full disk leaves the previous version (or nothing), never a torn file that a later
reader chokes on. On object stores (gs://) the rename is a server-side copy: the final object
appears whole or not at all.
"""

import glob
import io
import json
import os
import uuid

import numpy as np
from etils import epath

from bit_jax.runtime.errors import RunError


def remove_leftovers(path) -> None:
  """Remove the temporary files that killed writes of `path` left beside it: whoever
  rewrites `path` owns them (one process owns a workdir)."""
  path = epath.Path(path)
  if path.parent.exists():
    for leftover in path.parent.glob(f'.{glob.escape(path.name)}.*.tmp'):
      leftover.unlink(missing_ok=True)


def write_atomic(path, content, *, tidy: bool = True) -> None:
  """Write `content` (str or bytes) to `path` through a temporary file and a rename; with
  `tidy`, the leftovers of earlier killed writes of `path` are removed first."""
  path = epath.Path(path)
  temporary = path.with_name(f'.{path.name}.{uuid.uuid4().hex[:8]}.tmp')
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    if tidy:
      remove_leftovers(path)
    if isinstance(content, str):
      temporary.write_text(content)
    else:
      temporary.write_bytes(content)
    temporary.replace(path)
  except OSError as e:
    if temporary.exists():
      temporary.unlink()
    raise RunError(
      f'Could not write {path} ({e.strerror or e}); the previous version, if any, '
      f'is unchanged. Free space or fix permissions, then rerun.'
    ) from e


def write_json(path, value) -> None:
  write_atomic(path, json.dumps(value, indent=1, default=str) + '\n')


def read_json(path):
  """The JSON in `path`; a torn or foreign file is a `RunError` that names it."""
  path = epath.Path(path)
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise RunError(
      f'{path} is not valid JSON ({e}); it was cut short or edited. Delete it '
      f'to have it written again.'
    ) from None


def write_npz(path, arrays: dict) -> None:
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  write_atomic(path, buffer.getvalue())


def is_local(path) -> bool:
  return '://' not in os.fspath(path)
