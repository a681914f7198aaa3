"""How many pre-trained stages to freeze, as a function of the target-set size?

Our BiT variant of Soekhoe et al. 2016 (`:full`, `:mini`): fine-tune everything, or freeze the
root and the first l stages (l = 1..4; `freeze='root_block|block1'` ...) and fine-tune the rest
*from the upstream*, or train from scratch, at several numbers of images per class, without
a swap. Soekhoe's own SnT (the rest re-initialised, class halves swapped) is `:paper`.
Full scale: BiT-M-R50x1 on CIFAR-10 with the HyperRule, 50-500 per class:

    python -m bit_jax.sweep --config=configs/sweeps/frozen_layers.py --workdir=/tmp/frozen
    python -m bit_jax.sweep --config=configs/sweeps/frozen_layers.py:mini \
        --workdir=/tmp/frozen_mini                        # ~55 min on 2 CPU cores

The miniature pre-trains R14x0.5 from scratch on CIFAR-10 classes 0-4 (its 'upstream' run) and
transfers to classes 5-9 with 25 and 250 images per class, 60 steps of 64 at 32 px, each
with 5 seeds. Freezing l=4 stages leaves the final GroupNorm and the head to train. It ends
with `61 runs finished: <workdir>/results.md, <workdir>/frozen_layers.png`; the plot has the
mean test top-1 and its 95% interval for each choice, one line per target-set size.

The paper's own protocol, `:paper`, and its CPU miniature `:paper,mini`:

    python -m bit_jax.sweep --config=configs/sweeps/frozen_layers.py:paper \
        --config.base.dataset=folder:/data/tiny-imagenet-200 --workdir=/tmp/frozen_paper
    python -m bit_jax.sweep --config=configs/sweeps/frozen_layers.py:paper,mini \
        --workdir=/tmp/frozen_paper_mini

Point by point against Soekhoe et al. 2016:

* follows: one dataset's classes cut into two disjoint halves (Tiny-ImageNet: 100 + 100
  classes of 500 images at 64 px, `class_split.halves(200)`); a source network trained from
  scratch on one half; on the other half, at 500/400/300/200/100/50 images per class: *base*
  (from scratch), *FTall* (everything transferred and fine-tuned) and *SnT-n* (the first n
  layers transferred and frozen, the rest re-initialised with the scratch initialiser and
  trained: `freeze` + `reinit` from `bit_jax.models.layers.transfer_first`); every run a fixed 10k
  iterations; every result the mean of the experiment and its swap (source <-> target, the
  sweep's `swap`; each direction under <workdir>/directions/);
* cannot follow, ours instead: AlexNet's 8 layers -> BiT-R152x1, the ResNet-V2 of AlexNet's
  size (58.1M parameters against about 58M for AlexNet with a 100-class head), its "layers"
  the root block, the four stages and the head (`layers.layers(per='stage')`), so SnT has
  n = 1..5 where AlexNet has 1..7 (per='unit' gives 51 finer steps); the optimizer and its
  schedule, which we do not have from the paper -> SGD momentum 0.9, batch 128, lr 0.05,
  weight decay 1e-4, the HyperRule's shape (warmup, x0.1 at 30/60/90%) over the 10k steps,
  for the source and every target run alike; images resized to 64 and flipped at random.
* the data: an image folder laid out like Tiny-ImageNet's download, `folder:<root>` with
  <root>/train/<wnid>/images/*.JPEG as downloaded and <root>/val/<wnid>/*.JPEG, the val images
  sorted into class folders by val_annotations.txt, e.g.
  `awk '{print $1, $2}' val/val_annotations.txt | while read f c; do mkdir -p val/$c;
  mv val/images/$f val/$c/; done`; the test accuracy is on those 50 per class. MiniPlaces2
  (50 + 50) is the same config with its folder and `HALVES` of 100.

The miniature changes sizes only: R14x0.5 at 32 px on the shared CIFAR-10 subset, halves of
5 + 5 classes, the source trained 200 steps of 64 on its half, the targets at 25 images per
class, 60 steps of 32; 5 seeds: 2 sources + 7 conditions x 2 directions x 5 = 72 trainings,
33 minutes of training (the trainings' own wall times summed) on 2 CPU cores shared with
other jobs. It ends with `72 runs finished: <workdir>/results.md,
<workdir>/frozen_layers.png`. With 5 seeds (docs/studies/frozen_layers_paper/), mean of both
directions: base 32.9% [28.7, 37.1], FTall 36.5% [34.8, 38.2], SnT1-5 34.6-36.3%; no
condition differs from base significantly (p 0.072-0.42, Holm-adjusted 0.43-0.71). The
target sizes are one, 25 per class, so the miniature has no how-small answer.
"""

from bit_jax import models
from bit_jax.models import layers
from bit_jax.studies import class_split
from bit_jax.studies.study_configs import (
  mini_base,
  mini_upstream_run,
  study_args,
  study_config,
  study_scale,
)

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


CLASSES = {'cifar10': 10, 'cifar100': 100}
PAPER_SCALES = {
  'full': dict(
    base=dict(
      model='R152x1',
      dataset='folder:/data/tiny-imagenet-200',
      eval_split='val',
      resize=64,
      crop=64,
      batch_size=128,
      lr=0.05,
      total_steps=10_000,
      checkpoint_every=1000,
    ),
    num_classes=200,
    per_class=(500, 400, 300, 200, 100, 50),
  ),
  'mini': dict(
    base=mini_base(batch_size=32, lr=0.05, total_steps=60, eval_every=0),
    num_classes=10,
    source_steps=200,
    per_class=(25,),
  ),
}


def paper_config(scale_name: str, dataset: str | None):
  scale, base = study_scale(PAPER_SCALES, scale_name)
  base.update(weight_decay=1e-4, mixup_alpha=0.0, init='scratch')
  num_classes = scale['num_classes']
  if dataset:  # a TFDS dataset instead of the image folder: its own classes, its test split
    base.dataset, base.eval_split = dataset, None
    num_classes = CLASSES.get(dataset, num_classes)
  source_steps = scale.get('source_steps', base.total_steps)
  runs = [
    dict(
      name='source',
      classes='{source}',
      seeds=1,
      total_steps=source_steps,
      batch_size=64 if scale_name == 'mini' else base.batch_size,
    )
  ]
  stages = layers.layers(models.Architecture.from_name(base.model))
  conditions = [('base', 'base', 'scratch', {}), ('ftall', 'FTall', None, {})] + [
    (f'snt{n}', f'SnT{n}', None, layers.transfer_first(n, stages)) for n in range(1, len(stages))
  ]
  for shots in scale['per_class']:
    for prefix, tag, init, fields in conditions:
      runs.append(
        dict(
          name=f'{prefix}_{shots}',
          classes='{target}',
          shots=shots,
          init=init or '{workdir}/source_{direction}/final.npz',
          tags={'frozen': tag},
          **fields,
        )
      )
  compare = tuple(
    dict(column='frozen', a=tag, b='base', by='per_class') for _, tag, _, _ in conditions[1:]
  )
  config = study_config(
    base,
    runs,
    dict(
      x='frozen',
      series='per_class',
      y='top1',
      compare=compare,
      xlabel='transferred (FTall: all, fine-tuned; SnT-n: first n frozen, rest re-initialised)',
      title=f'Soekhoe et al. transfer and swap ({scale_name})',
    ),
  )
  config.swap = dict(halves=class_split.halves(num_classes, seed=0))
  return config


def get_config(arg='full'):
  protocol, scale_name, dataset = study_args(arg)
  if protocol == 'paper':
    return paper_config(scale_name, dataset)
  scale, base = study_scale(SCALES, scale_name, dataset=dataset)
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
