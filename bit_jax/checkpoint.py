"""orbax checkpoints of a run: the train state plus the `RunState` as JSON.

Checkpoints are numbered by save (1, 2, 3, ...), not by step: a number is never reused, so a
save never has to delete the checkpoint it replaces. orbax commits a new checkpoint before it
removes the oldest beyond `keep`, so with any `keep` a kill at any moment leaves at least one
restorable checkpoint. Every process calls `save`/`restore`, as orbax requires on several
hosts.
"""

from typing import Optional

import orbax.checkpoint as ocp
from etils import epath

from bit_jax.errors import RunError
from bit_jax.run_state import RunState


class Checkpoints:
  """The newest `keep` checkpoints under `directory`."""

  def __init__(self, directory, keep: int = 2):
    # Synchronous saves: the train step donates the state's buffers, and on CPU an async save
    # may still be reading zero-copy views of them when the next step overwrites them.
    self.directory = epath.Path(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=False),
        item_names=('state', 'progress'))
    self._last = self.manager.latest_step()

  def latest(self) -> Optional[tuple[int, RunState]]:
    """(number, run state) of the newest checkpoint, or None."""
    if self._last is None:
      return None
    record = self.manager.restore(self._last, args=ocp.args.Composite(
        progress=ocp.args.JsonRestore()))['progress']
    return self._last, RunState.from_json(record)

  def save(self, train_state, run_state: RunState) -> int:
    """Save under the next number; returns it."""
    number = (self._last or 0) + 1
    try:
      self.manager.save(number, args=ocp.args.Composite(
          state=ocp.args.StandardSave(train_state),
          progress=ocp.args.JsonSave(run_state.to_json())), force=True)
    except (OSError, ValueError) as e:
      good = ('no checkpoint was saved before' if self._last is None else
              f'checkpoint {self._last} (step {self.latest()[1].global_step}) is intact and a '
              f'rerun resumes from it')
      raise RunError(f'Could not save checkpoint {number} in {self.directory} '
                     f'({type(e).__name__}: {e}); {good}. Free space or fix the directory, '
                     f'then rerun.') from e
    self._last = number
    return number

  def restore(self, number: int, abstract_state):
    """The train state saved as `number`, shaped and sharded like `abstract_state`
    (a tree of `jax.ShapeDtypeStruct` with shardings)."""
    return self.manager.restore(number, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state)))['state']

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
