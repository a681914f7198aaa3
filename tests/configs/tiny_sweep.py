"""A seconds-long sweep for tests: two tiny runs (tests/configs/tiny.py), three seeds each, the
second starting from the first's weights.

    python -m bit_jax.sweep --config=tests/configs/tiny_sweep.py --workdir=/tmp/tiny_sweep
"""

import ml_collections
import tiny


def get_config(arg=''):
  del arg
  base = tiny.get_config()
  base.update(
    total_steps=2, eval_every=0, checkpoint_every=0, keep_checkpoints=1, log_every=1, shots=20
  )
  runs = (
    dict(name='first', tags={'kind': 'scratch'}),
    dict(name='second', tags={'kind': 'transfer'}, init='{workdir}/first/seed{seed}/final.npz'),
  )
  return ml_collections.ConfigDict(
    dict(
      base=base,
      runs=runs,
      seeds=3,
      report=dict(x='kind', y='top1', compare=(dict(column='kind', a='transfer', b='scratch'),)),
    )
  )
