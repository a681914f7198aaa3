"""orbax checkpoints of a run: the train state plus a JSON record of where the run stands.

The JSON part (phase index, step within the phase, plateau/early-stopping state, finished
phases' results, examples seen) is what makes resume exact: together with the data pipeline's
`start_step` and rngs derived from the step, a restarted run replays the same stream.
Every process calls `save`/`restore`, as orbax requires on several hosts.
"""

from pathlib import Path
from typing import Optional

import orbax.checkpoint as ocp


class Checkpoints:
  """Periodic + final checkpoints under `workdir/checkpoints`, keeping the newest `keep`."""

  def __init__(self, workdir, keep: int = 2):
    # Synchronous saves: the train step donates the state's buffers, and on CPU an async save
    # may still be reading zero-copy views of them when the next step overwrites them.
    self.manager = ocp.CheckpointManager(
        Path(workdir).absolute() / 'checkpoints',
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=False),
        item_names=('state', 'progress'))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state, progress: dict) -> None:
    """Save at `step`, replacing a checkpoint of the same step (a periodic save at a phase's
    last step, then the phase-end save with the phase marked done)."""
    if step in self.manager.all_steps():
      self.manager.wait_until_finished()
      self.manager.delete(step)
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), progress=ocp.args.JsonSave(progress)), force=True)

  def progress(self, step: int) -> dict:
    """The JSON record saved at `step` (read first: it says which phase's state to expect)."""
    return self.manager.restore(step, args=ocp.args.Composite(
        progress=ocp.args.JsonRestore()))['progress']

  def restore(self, step: int, abstract_state):
    """The state saved at `step`, shaped and sharded like `abstract_state`
    (a tree of `jax.ShapeDtypeStruct` with shardings)."""
    return self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state)))['state']

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
