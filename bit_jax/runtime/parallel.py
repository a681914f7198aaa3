"""Data parallelism the pjit way: one `Mesh` over every device with a 'data' axis; parameters
and optimizer state replicated, batches sharded along their first axis. Each process feeds
its own part of the global batch (`global_batch`)."""

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec


class DataParallel:
  def __init__(self, devices=None):
    self.mesh = Mesh(np.array(devices or jax.devices()), ('data',))
    self.replicated = NamedSharding(self.mesh, PartitionSpec())
    self.sharded = NamedSharding(self.mesh, PartitionSpec('data'))

  # Equal meshes are one DataParallel, so programs jitted for one are reused by another
  # (bit_jax/training/programs.py keys its caches on it).
  def __eq__(self, other):
    return isinstance(other, DataParallel) and self.mesh == other.mesh

  def __hash__(self):
    return hash(self.mesh)

  def global_batch(self, local_batch: dict) -> dict:
    """This process's numpy batch -> global arrays sharded over the mesh ('id' stays here)."""
    return {
      k: jax.make_array_from_process_local_data(self.sharded, v)
      for k, v in local_batch.items()
      if k != 'id'
    }

  def jit_train_step(self, train_step):
    """`train_step(state, batch, lr, rng)` with the state donated: updated in place."""
    return jax.jit(
      train_step,
      in_shardings=(self.replicated, self.sharded, None, None),
      out_shardings=(self.replicated, self.replicated),
      donate_argnums=0,
    )

  def jit_eval_step(self, eval_step):
    return jax.jit(
      eval_step, in_shardings=(self.replicated, self.sharded), out_shardings=self.replicated
    )


def broadcast_text(text: str, limit: int = 4096) -> str:
  """Process 0's `text` on every process (all processes must call it)."""
  data = np.zeros(limit, np.uint8)
  encoded = text.encode()[:limit]
  data[: len(encoded)] = np.frombuffer(encoded, np.uint8)
  return bytes(multihost_utils.broadcast_one_to_all(data)).rstrip(b'\0').decode(errors='replace')


def any_process(flag: bool) -> bool:
  """True on every process when `flag` is True on any (all processes must call it)."""
  if jax.process_count() == 1:
    return flag
  return bool(np.max(multihost_utils.process_allgather(np.int32(flag))))
