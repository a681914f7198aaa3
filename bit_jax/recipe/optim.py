"""optax for BiT: SGD with momentum, optional weight decay, parameters frozen by regex.

The learning rate is applied by the train step (`updates * -lr`), not inside optax: the host
computes it per step (HyperRule staircase, per-phase rules, reduce-on-plateau), and it reaches
the jitted step as an array argument, so changing it never recompiles. With momentum applied
first and the lr last, this is PyTorch/official-BiT SGD: buf = m * buf + g; p -= lr * buf.
"""

import re

import optax
from flax import traverse_util


def frozen_mask(params, freeze: str, field: str = 'freeze'):
  """Tree of bools: True where the '/'-joined path (e.g. 'block1/unit01/conv1/kernel') matches
  the regex `freeze` (searched, so 'root_block|block1' freezes the root and stage 1). `field`
  names the setting in the error (the same matching selects `reinit`)."""
  pattern = re.compile(freeze) if freeze else None
  flat = traverse_util.flatten_dict(params)
  mask = {path: bool(pattern and pattern.search('/'.join(path))) for path in flat}
  if pattern and not any(mask.values()):
    # Every top-level name: the first few paths of a jitted init's (sorted) tree would
    # never show 'root_block'.
    tops = ', '.join(sorted({path[0] for path in flat}))
    raise ValueError(
      f'{field}={freeze!r} matches no parameter. Paths start with {tops} '
      f'(e.g. {"/".join(next(iter(flat)))}).'
    )
  return traverse_util.unflatten_dict(mask)


def make_optimizer(
  params, *, momentum: float = 0.9, weight_decay: float = 0.0, freeze: str = ''
) -> optax.GradientTransformation:
  """Momentum SGD direction (lr applied by the caller). Weight decay is coupled, as in SGD,
  and touches kernels only, not GroupNorm scales/biases or the head bias. Frozen parameters
  get zero updates and no momentum buffer, so they stay bit-identical."""
  steps = []
  if weight_decay:
    kernels = traverse_util.path_aware_map(lambda path, _: path[-1] == 'kernel', params)
    steps.append(optax.add_decayed_weights(weight_decay, mask=kernels))
  steps.append(optax.trace(decay=momentum))
  sgd = optax.chain(*steps)
  if not freeze:
    return sgd
  labels = traverse_util.path_aware_map(lambda path, _: path, params)
  mask = traverse_util.flatten_dict(frozen_mask(params, freeze))
  labels = traverse_util.unflatten_dict(
    {path: 'frozen' if mask[path] else 'trained' for path in traverse_util.flatten_dict(labels)}
  )
  return optax.multi_transform({'trained': sgd, 'frozen': optax.set_to_zero()}, labels)
