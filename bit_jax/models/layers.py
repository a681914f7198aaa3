"""BiT's "layers" in input-to-output order, as regexes over parameter paths: how a paper's
"the first n layers" maps onto a ResNet-V2 (Soekhoe et al.'s SnT: the first n layers
transferred and frozen, the rest re-initialised and trained).

AlexNet's 8 layers (5 conv, 3 fully connected) have no one-to-one counterpart in a ResNet-V2.
Two readings are offered:

* per='stage': the root block, the four stages, and the head (with the final GroupNorm
  before it): 6 layers, so SnT has n = 1..5;
* per='unit': the root block, every residual unit of every stage, and the head: 1 + 16 + 1
  layers for R50 (3 + 4 + 6 + 3 units), finer where a stage is too coarse a step.

`transfer_first(n, layers)` gives the phase fields of SnT-n: `freeze` (the first n, kept as
loaded) and `reinit` (the rest, drawn by the scratch initialiser, see bit_jax/training/weights.py).
"""

from bit_jax import models

PER = ('stage', 'unit')
HEAD = '^(pre_head_norm|head)/'


def layers(architecture: models.Architecture, per: str = 'stage') -> tuple[str, ...]:
  """The layers of `architecture`, input first, each a regex searched in parameter paths."""
  if per not in PER:
    raise ValueError(f'Expected per in {PER}; got {per!r}.')
  body = []
  for stage, units in enumerate(architecture.units, start=1):
    if per == 'stage':
      body.append(f'^block{stage}/')
    else:
      body += [f'^block{stage}/unit{unit:02d}/' for unit in range(1, units + 1)]
  return ('^root_block/', *body, HEAD)


def transfer_first(n: int, layer_regexes) -> dict:
  """{'freeze', 'reinit'} of SnT-n: the first `n` layers frozen as transferred, the others
  re-initialised (n = 0: everything re-initialised, i.e. from scratch)."""
  if not 0 <= n < len(layer_regexes):
    raise ValueError(
      f'Expected 0 <= n < {len(layer_regexes)} (the last layer, the head, is always new); '
      f'got n={n}.'
    )
  return dict(freeze='|'.join(layer_regexes[:n]), reinit='|'.join(layer_regexes[n:]))
