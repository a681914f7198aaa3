"""How many pre-trained stages to freeze, as a function of the target-set size?

After Soekhoe et al. 2016: fine-tune everything, or freeze the root and the first l stages
(l = 1..4; `freeze='root_block|block1'` ...), or train from scratch, at several numbers of
images per class. Full scale: BiT-M-R50x1 on CIFAR-10 with the HyperRule, 50-500 per class:

    python -m bit_jax.sweep --config=configs/sweeps/frozen_layers.py --workdir=/tmp/frozen
    python -m bit_jax.sweep --config=configs/sweeps/frozen_layers.py:mini \
        --workdir=/tmp/frozen_mini                        # ~25 min on 2 CPU cores

The miniature pre-trains R14x0.5 from scratch on CIFAR-10 classes 0-4 (its 'upstream' run) and
transfers to classes 5-9 with 25 and 250 images per class, 60 steps of 64 at 32 px, each
with 5 seeds. Freezing l=4 stages leaves the final GroupNorm and the head to train. It ends
with `61 runs finished: <workdir>/results.md, <workdir>/frozen_layers.png`; the plot has the
mean test top-1 and its 95% interval for each choice, one line per target-set size.
"""

from bit_jax.defaults import mini_base, mini_upstream_run, study_config, study_scale

# (run name prefix, tag: what is frozen, start from the upstream?, freeze regex)
FROZEN = [('scratch', 'scratch', False, ''), ('tune_all', 'none', True, '')] + [
  (
    f'freeze{depth}',
    'root+1' if depth == 1 else f'root+1-{depth}',
    True,
    '|'.join(['root_block'] + [f'block{s}' for s in range(1, depth + 1)]),
  )
  for depth in range(1, 5)
]

SCALES = {
  'full': dict(
    base=dict(model='R50x1', batch_size=512, checkpoint_every=1000),
    upstream='BiT-M-R50x1',
    per_class=(50, 100, 250, 500),
    target={},
    upstream_runs=(),
  ),
  'mini': dict(
    base=mini_base(batch_size=64, base_lr=0.01, eval_every=0),
    upstream='{workdir}/upstream/final.npz',
    per_class=(25, 250),
    target=dict(classes=(5, 6, 7, 8, 9), total_steps=60),
    upstream_runs=(mini_upstream_run(),),
  ),
}


def get_config(arg='full'):
  scale, base = study_scale(SCALES, arg)
  runs = list(scale['upstream_runs'])
  for shots in scale['per_class']:
    for prefix, tag, pretrained, freeze in FROZEN:
      runs.append(
        dict(
          name=f'{prefix}_{shots}',
          shots=shots,
          freeze=freeze,
          init=scale['upstream'] if pretrained else 'scratch',
          tags={'frozen': tag},
          **scale['target'],
        )
      )
  # Each choice minus fine-tuning everything, at every target size.
  compare = tuple(
    dict(column='frozen', a=tag, b='none', by='per_class')
    for _, tag, _, _ in FROZEN
    if tag != 'none'
  )
  return study_config(
    base,
    runs,
    dict(
      x='frozen',
      series='per_class',
      y='top1',
      compare=compare,
      xlabel='frozen during fine-tuning (root block + stages)',
      title=f'Frozen stages vs. images per class ({arg})',
    ),
  )
