"""Does a larger pre-training set always help, and how small can the target set be?

After Li et al. 2022: BiT-S (ImageNet-1k) and BiT-M (ImageNet-21k) R50x1, and the same network
from scratch, fine-tuned with the BiT-HyperRule on 1, 5, 10, 25, 100 images per class and on
the full training set of CIFAR-10:

    python -m bit_jax.sweep --config=configs/sweeps/dataset_size_upstream.py \
        --workdir=/tmp/dataset_size                      # full scale (TPU-sized; add ,cifar100)
    python -m bit_jax.sweep --config=configs/sweeps/dataset_size_upstream.py:mini \
        --workdir=/tmp/dataset_size_mini                 # ~55 min on 2 CPU cores

The miniature has no published checkpoints offline, so its two upstreams are two runs of the
sweep itself: R14x0.5 trained from scratch on CIFAR-10 classes 0-4, on 20% ('small') or 100%
('large', 5x more) of their training images, for the same number of steps. Every target run
then fine-tunes on classes 5-9 at 32 px, with the HyperRule schedule shortened to 60 steps of
64 (as the HyperRule gives every target set below 20k images the same 500 steps), each
repeated with 5 seeds. It prints one line per training and ends with `92 runs finished:
<workdir>/results.md, <workdir>/dataset_size_upstream.png`; the plot has the mean test top-1
and its 95% interval against images per class, one line per upstream; results.md's paired
differences say where an upstream's edge is significant after Holm's correction, and
how_small.md how few images per class reach a target (docs/studies.md has the numbers).

The paper's own protocol, `:paper` (`:paper,cifar100` for CIFAR-100), and its CPU miniature
`:paper,mini`, are the same runs but for the scratch arm, which trains with its own schedule:

    python -m bit_jax.sweep --config=configs/sweeps/dataset_size_upstream.py:paper,cifar100 \
        --workdir=/tmp/dataset_size_paper
    python -m bit_jax.sweep --config=configs/sweeps/dataset_size_upstream.py:paper,mini \
        --workdir=/tmp/dataset_size_paper_mini          # ~50 min on 2 CPU cores

`:paper,mini` is 92 trainings like `:mini`, but its 30 scratch runs train 300 steps of 64, not
60: 844,800 examples against `:mini`'s 384,000, and writes the same files. With its own scratch
recipe, scratch beats both upstreams by about 7 points from 100 images per class on, and the
upstreams lead only at 1-10 per class (docs/studies.md has the numbers).

Point by point against Li et al. 2022:

* follows: BiT-S and BiT-M R50x1 fine-tuned with the BiT-HyperRule on 1, 5, 10, 25, 100 images
  per class and the whole training set of CIFAR-10 or CIFAR-100, against the same network
  from scratch;
* the scratch arm, whose recipe the paper does not give, trains with the *upstream* recipe
  (BiT's, configs/bit_upstream.py) instead of the fine-tuning one: lr 0.03 x batch/256 (0.06
  at batch 512), weight decay 1e-4, no MixUp, for 90 epochs of the target set or the
  HyperRule's steps, whichever is longer, with the lr x0.1 at 30/60/80 of 90 of them. Not a
  grid: one recipe that is BiT's own for training from scratch, so the baseline is not
  handicapped by a fine-tuning schedule (lr 0.003, 500 steps);
* the miniature's scratch arm trains with the miniature upstream's recipe
  (`mini_upstream_run`: batch 64, lr 0.03, 300 steps) instead of the targets' 60 steps at
  lr 0.01.
"""

import math

from bit_jax.recipe import hyperrule
from bit_jax.studies.study_configs import (
  mini_base,
  mini_upstream_run,
  study_args,
  study_config,
  study_scale,
)

SHOTS = (1, 5, 10, 25, 100, None)  # None: the whole training set

SCALES = {
  # Published checkpoints, HyperRule everything (resolution 160->128, 500 steps / 10k for
  # the full 50k, batch 512, lr 0.003).
  'full': dict(
    base=dict(model='R50x1', batch_size=512, checkpoint_every=1000),
    upstreams={'bit_s': ('BiT-S', 'BiT-S-R50x1'), 'bit_m': ('BiT-M', 'BiT-M-R50x1')},
    order=('bit_m', 'bit_s', 'scratch'),
    target={},
    upstream_runs=(),
  ),
  # Two upstream runs of the sweep; 60-step HyperRule fine-tuning at 32 px.
  'mini': dict(
    base=mini_base(batch_size=64, base_lr=0.01, eval_every=0),
    upstreams={
      'small': ('small (20%)', '{workdir}/upstream_small/final.npz'),
      'large': ('large (100%)', '{workdir}/upstream_large/final.npz'),
    },
    order=('large', 'small', 'scratch'),
    target=dict(classes=(5, 6, 7, 8, 9), total_steps=60),
    upstream_runs=(
      mini_upstream_run('upstream_small', fraction=0.2),
      mini_upstream_run('upstream_large', fraction=1.0),
    ),
  ),
}


TRAIN_EXAMPLES = {'cifar10': 50_000, 'cifar100': 50_000}
NUM_CLASSES = {'cifar10': 10, 'cifar100': 100}


def scratch_recipe(scale_name: str, dataset: str, shots: int | None) -> dict:
  """The scratch arm's own schedule (`:paper`): the upstream recipe (see the docstring)."""
  if scale_name == 'mini':
    upstream = mini_upstream_run()
    return {k: upstream[k] for k in ('batch_size', 'lr', 'lr_schedule', 'total_steps')}
  if dataset not in NUM_CLASSES:
    raise ValueError(f'The scratch recipe knows {sorted(NUM_CLASSES)}; got {dataset!r}.')
  batch = 512
  examples = shots * NUM_CLASSES[dataset] if shots else TRAIN_EXAMPLES[dataset]
  steps = max(math.ceil(90 * examples / batch), hyperrule.schedule(examples).total_steps)
  return dict(
    batch_size=batch,
    lr=0.03 * batch / 256,
    weight_decay=1e-4,
    mixup_alpha=0.0,
    total_steps=steps,
    warmup_steps=round(steps * 5 / 90),
    decay_steps=tuple(round(steps * e / 90) for e in (30, 60, 80)),
  )


def get_config(arg='full'):
  protocol, scale_name, dataset = study_args(arg)
  scale, base = study_scale(
    SCALES, scale_name, 'mini, full, paper or paper,mini [,<dataset>]', dataset=dataset
  )
  runs = list(scale['upstream_runs'])
  starts = {**scale['upstreams'], 'scratch': ('none (scratch)', 'scratch')}
  for prefix, (label, init) in starts.items():
    for shots in SHOTS:
      own = (
        scratch_recipe(scale_name, base.dataset, shots)
        if protocol == 'paper' and init == 'scratch'
        else {}
      )
      runs.append(
        dict(
          name=f'{prefix}_{shots or "all"}',
          init=init,
          shots=shots,
          tags={'upstream': label},
          **{**scale['target'], **own},
        )
      )
  # The larger upstream minus the smaller, and each minus scratch, at every target size.
  (larger, _), (smaller, _), (scratch, _) = (starts[k] for k in scale['order'])
  compare = tuple(
    dict(column='upstream', a=a, b=b, by='per_class')
    for a, b in ((larger, smaller), (larger, scratch), (smaller, scratch))
  )
  return study_config(
    base,
    runs,
    dict(
      x='per_class',
      log_x=True,
      series='upstream',
      y='top1',
      compare=compare,
      xlabel='target training images per class',
      title=f'Fine-tuning vs. target images per class ({arg})',
    ),
  )
