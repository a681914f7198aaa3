"""Which batch size for fine-tuning: as good, in fewer epochs?

Our BiT variant of Ahmad & Shin (`:full`, `:mini`; `:full,cifar100`): batch sizes 32..512 with
lr = base_lr * batch / 512 (`lr_scaling='linear'`, a choice of ours: Ahmad & Shin keep the
learning rates fixed, as `:paper` below does; official BiT keeps 0.003 at any batch), on 500
CIFAR-10 images per class, stopping on the validation loss, each run in two phases: the head
alone (`freeze='^(?!head/)'`), then the whole network, both with reduce-on-plateau and early
stopping on a validation split (10% of each class, held out of the training images),
evaluated once an epoch:

    python -m bit_jax.sweep --config=configs/sweeps/batch_size.py --workdir=/tmp/batch
    python -m bit_jax.sweep --config=configs/sweeps/batch_size.py:mini \
        --workdir=/tmp/batch_mini                         # ~22 min on 2 CPU cores

Full scale: BiT-M-R50x1 on 500 CIFAR-10 images per class at the HyperRule resolution, batch
32..512, at most 5 + 30 epochs. The miniature pre-trains R14x0.5 on CIFAR-10 classes 0-4 (its
'upstream' run), then fine-tunes on 100 images per class of classes 5-9 at 32 px with batch
16..256 (the training set is 500 images), at most 3 + 12 epochs, each with 5 seeds. It ends
with `26 runs finished: <workdir>/results.md, <workdir>/batch_size.png`: mean test top-1 and
its 95% interval against the batch size; results.md pairs every batch size with the smallest,
and its phases table shows where early stopping ended each phase. This variant scales the lr
with the batch; Ahmad & Shin do not.

The paper's own protocol, `:paper` (CIFAR-10) or `:paper,cifar100`, and its CPU miniature
`:paper,mini`:

    python -m bit_jax.sweep --config=configs/sweeps/batch_size.py:paper,cifar100 \
        --workdir=/tmp/batch_paper_c100
    python -m bit_jax.sweep --config=configs/sweeps/batch_size.py:paper,mini \
        --workdir=/tmp/batch_paper_mini

Point by point against Ahmad & Shin:

* follows: two stages, the head alone for 20 epochs at lr 1e-2, then everything for 100
  epochs at lr 1e-4, the same rates at every batch size (32, 64, 128, 256, 512); each stage
  with reduce-on-plateau (x0.1) and early stopping, both on validation accuracy
  (`monitor='val_top1'`), evaluated once an epoch; 10% of the training set held out; the
  whole training set of CIFAR-10 or CIFAR-100 at 160 px; dropout 0.5 before the classifier;
  results: test top-1 and the epochs each batch size ran (`compute_epochs`); their Table I,
  what full scale is to be held against, has 93.5-94.0% on CIFAR-10 and 74.3-77.0% on
  CIFAR-100 over the five batch sizes;
* cannot follow, ours instead: MobileNetV2 (ImageNet-1k) -> BiT-S-R50x1, the ImageNet-1k
  BiT of the nearest role (no MobileNetV2 here); the optimizer and the patiences, which the
  text does not state -> SGD momentum 0.9, plateau patience 3, early-stopping patience 5;
  images resized to 160 and flipped at random, not cropped (crop = resize = 160).

The miniature changes sizes only: the studies' R14x0.5 upstream (scratch on classes 0-4, no
checkpoint offline), 50 images per class of classes 5-9 at 32 px, batch 8..128, 2 + 6 epochs,
patiences 1 and 2, 5 seeds: 26 trainings, 35 minutes of training (the trainings' own wall
times summed) on 2 CPU cores shared with other jobs. It ends with `26 runs finished:
<workdir>/results.md, <workdir>/batch_size.png`. With 5 seeds
(docs/studies/batch_size_paper/): batch 8, 16, 32 at 52.1%, 53.0%, 51.5% test top-1, batch 64
and 128 at 48.4% and 47.4% (128 - 8: -4.7 points, p 0.012 alone, Holm-adjusted 0.093: not
significant after the correction); the epochs run do not differ significantly.
"""

import math

from bit_jax.studies.study_configs import (
  mini_base,
  mini_upstream_run,
  study_args,
  study_config,
  study_scale,
)

HEAD_ONLY = '^(?!head/)'  # every parameter but the head's

SCALES = {
  'full': dict(
    base=dict(model='R50x1', init='BiT-M-R50x1', checkpoint_every=1000),
    batches=(32, 64, 128, 256, 512),
    shots=500,
    num_classes=10,
    epochs=(5, 30),
    target={},
    upstream_runs=(),
  ),
  'mini': dict(
    base=mini_base(init='{workdir}/upstream/final.npz', base_lr=0.08),
    batches=(16, 32, 64, 128, 256),
    shots=100,
    num_classes=5,
    epochs=(3, 12),
    target=dict(classes=(5, 6, 7, 8, 9)),
    upstream_runs=(mini_upstream_run(),),
  ),
}


CLASSES = {'cifar10': 10, 'cifar100': 100}

# Ahmad & Shin's protocol at its size and its miniature: (stage, epochs, lr) are the paper's,
# the rest is the size of the run.
PAPER_SCALES = {
  'full': dict(
    base=dict(model='R50x1', init='BiT-S-R50x1', resize=160, crop=160, checkpoint_every=1000),
    batches=(32, 64, 128, 256, 512),
    shots=None,
    train_examples=45_000,  # the training split minus the 10% holdout
    epochs=(20, 100),
    patience=(3, 5),
    target={},
    upstream_runs=(),
  ),
  'mini': dict(
    base=mini_base(init='{workdir}/upstream/final.npz'),
    batches=(8, 16, 32, 64, 128),
    shots=50,
    train_examples=250,  # 50 per class, drawn outside the holdout
    epochs=(2, 6),
    patience=(1, 2),
    target=dict(classes=(5, 6, 7, 8, 9)),
    upstream_runs=(mini_upstream_run(),),
  ),
}
PAPER_LRS = (1e-2, 1e-4)  # head, then everything


def paper_config(scale_name: str, dataset: str | None):
  scale, base = study_scale(PAPER_SCALES, scale_name)
  base.update(
    val_fraction=0.1,
    lr_schedule='plateau',
    monitor='val_top1',
    plateau_factor=0.1,
    plateau_patience=scale['patience'][0],
    early_stopping_patience=scale['patience'][1],
    dropout=0.5,
    mixup_alpha=0.0,
    warmup_steps=0,
  )
  if dataset:
    base.dataset = dataset
  runs = list(scale['upstream_runs'])
  for batch in scale['batches']:
    steps_per_epoch = math.ceil(scale['train_examples'] / batch)
    runs.append(
      dict(
        name=f'batch{batch}',
        batch_size=batch,
        shots=scale['shots'],
        tags={'batch': batch},
        eval_every=steps_per_epoch,
        **scale['target'],
        phases=tuple(
          dict(name=name, freeze=freeze, epochs=float(epochs), lr=lr)
          for name, freeze, epochs, lr in zip(
            ('head', 'all'), (HEAD_ONLY, ''), scale['epochs'], PAPER_LRS
          )
        ),
      )
    )
  return study_config(
    base, runs, _report(scale, runs, f'paper, {scale_name}', 'batch size (lr fixed)')
  )


def _report(scale, runs, arg: str, xlabel: str) -> dict:
  # Each batch size minus the smallest: accuracy, and passes over the data until it stopped.
  # By tag, not by `batch_size`: the upstream run has a batch size too.
  compare = tuple(
    dict(column='batch', a=batch, b=scale['batches'][0], y=('top1', 'compute_epochs'))
    for batch in scale['batches'][1:]
  )
  return dict(
    x='batch',
    log_x=True,
    y='top1',
    compare=compare,
    runs=tuple(r['name'] for r in runs if r['name'].startswith('batch')),
    xlabel=xlabel,
    title=f'Fine-tuning: head, then all, vs. batch size ({arg})',
  )


def get_config(arg='full'):
  protocol, scale_name, dataset = study_args(arg)
  if protocol == 'paper':
    return paper_config(scale_name, dataset)
  scale, base = study_scale(SCALES, scale_name, dataset=dataset)
  num_classes = CLASSES.get(base.dataset, scale['num_classes'])
  base.update(
    val_fraction=0.1,
    lr_schedule='plateau',
    plateau_patience=2,
    early_stopping_patience=3,
    lr_scaling='linear',
  )
  head_epochs, all_epochs = scale['epochs']
  runs = list(scale['upstream_runs'])
  for batch in scale['batches']:
    steps_per_epoch = math.ceil(scale['shots'] * num_classes / batch)
    runs.append(
      dict(
        name=f'batch{batch}',
        batch_size=batch,
        shots=scale['shots'],
        tags={'batch': batch},
        eval_every=steps_per_epoch,
        **scale['target'],
        phases=(
          dict(name='head', freeze=HEAD_ONLY, epochs=head_epochs),
          dict(name='all', freeze='', epochs=all_epochs),
        ),
      )
    )
  return study_config(
    base, runs, _report(scale, runs, arg, 'batch size (lr = base_lr * batch / 512)')
  )
