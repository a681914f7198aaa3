"""orbax checkpoints of a run: the train state plus the `RunState` as JSON.

Checkpoint folders are named by the run's global step (`checkpoints/<step>`), as orbax and the
Flax examples name them. The loop saves a step at most once (the end of a phase, with its final
evaluation, is saved only by `PhaseLoop.finish`) and steps only grow, so a number is never
reused and a save never has to delete the checkpoint it replaces. orbax commits a new
checkpoint before it removes the oldest beyond `keep`, so with any `keep` a kill at any moment
leaves at least one restorable checkpoint. Every process calls `save`/`restore`, as orbax requires on several
hosts.

The state is data-parallel, so every process holds all of it: it is saved as host (numpy)
arrays, written once, and restored as numpy for the caller to place on the devices. (Saving
the replicated device arrays made orbax compile a slicing program per array shape: ~15 s for
the first save of even a small model on CPU.)
"""

import errno
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from bit_jax.runtime import files
from bit_jax.runtime.errors import RunError
from bit_jax.training.run_state import RunState


class Checkpoints:
  """The newest `keep` checkpoints under `directory`."""

  def __init__(self, directory, keep: int = 2):
    # Synchronous saves: the train step donates the state's buffers, and on CPU an async save
    # may still be reading zero-copy views of them when the next step overwrites them.
    self.directory = epath.Path(directory)
    self.manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=False
      ),
      item_names=('state', 'progress'),
    )
    self._last = self.manager.latest_step()

  def latest(self) -> tuple[int, RunState] | None:
    """(global step, run state) of the newest checkpoint, or None."""
    if self._last is None:
      return None
    record = self.manager.restore(
      self._last, args=ocp.args.Composite(progress=ocp.args.JsonRestore())
    )['progress']
    return self._last, RunState.from_json(record)

  def save(self, train_state, run_state: RunState) -> int:
    """Save as `checkpoints/<global step>`; returns the step. (A workdir from before
    checkpoints were named by step holds smaller save numbers: the new ones follow them.)"""
    number = max(run_state.global_step, (self._last or 0) + 1)
    state = jax.device_get(train_state)
    try:
      self._check_space(state)
      self.manager.save(
        number,
        args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), progress=ocp.args.JsonSave(run_state.to_json())
        ),
        force=True,
      )
    except (OSError, ValueError) as e:
      good = (
        'no checkpoint was saved before'
        if self._last is None
        else f'the checkpoint of step {self.latest()[1].global_step} is intact and a '
        f'rerun resumes from it'
      )
      raise RunError(
        f'Could not save the checkpoint of step {run_state.global_step} in {self.directory} '
        f'({type(e).__name__}: {e}); {good}. Free space or fix the directory, '
        f'then rerun.'
      ) from e
    self._last = number
    return number

  def _check_space(self, state) -> None:
    """On a local disk, refuse a save that cannot fit before orbax starts it (orbax's writer
    threads report a full disk as pages of tracebacks)."""
    if not files.is_local(self.directory):
      return
    needed = sum(np.asarray(x).nbytes for x in jax.tree.leaves(state)) + (1 << 20)
    free = shutil.disk_usage(self.directory).free
    if free < needed:
      raise OSError(
        errno.ENOSPC,
        f'No space left on device: the checkpoint needs '
        f'{needed / 2**20:.1f} MiB, {free / 2**20:.1f} MiB are free',
      )

  def restore(self, number: int, state_shapes):
    """The train state saved as `number`, as numpy arrays shaped like `state_shapes` (a tree
    of `jax.ShapeDtypeStruct`)."""
    target = jax.tree.map(lambda s: np.empty(s.shape, s.dtype), state_shapes)
    return self.manager.restore(
      number, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
    )['state']

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
