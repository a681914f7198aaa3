"""Which batch size for fine-tuning, with the learning rate scaled to it?

After Ahmad & Shin: batch sizes 32..512 with lr = base_lr * batch / 512 (the linear scaling
rule they study, `lr_scaling='linear'`; official BiT keeps 0.003 at any batch),
each run in two phases: the head alone (`freeze='^(?!head/)'`), then the whole network, both
with reduce-on-plateau and early stopping on a validation split (10% of each class, held out
of the training images), evaluated once an epoch:

    python -m bit_jax.sweep --config=configs/sweeps/batch_size.py --workdir=/tmp/batch
    python -m bit_jax.sweep --config=configs/sweeps/batch_size.py:mini \
        --workdir=/tmp/batch_mini                         # ~25 min on 2 CPU cores

Full scale: BiT-M-R50x1 on 500 CIFAR-10 images per class at the HyperRule resolution, batch
32..512, at most 5 + 30 epochs. The miniature pre-trains R14x0.5 on CIFAR-10 classes 0-4 (its
'upstream' run), then fine-tunes on 100 images per class of classes 5-9 at 32 px with batch
16..256 (the training set is 500 images), at most 3 + 12 epochs, each with 5 seeds. It ends
with `26 runs finished: <workdir>/results.md, <workdir>/batch_size.png`: mean test top-1 and
its 95% interval against the batch size; results.md pairs every batch size with the smallest,
and its phases table shows where early stopping ended each phase.
"""

import math

from bit_jax.defaults import mini_base, mini_upstream_run, study_config, study_scale

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


def get_config(arg='full'):
  scale, base = study_scale(SCALES, arg)
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
    steps_per_epoch = math.ceil(scale['shots'] * scale['num_classes'] / batch)
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
  # Each batch size minus the smallest: accuracy, and passes over the data until it stopped.
  # By tag, not by `batch_size`: the upstream run has a batch size too.
  compare = tuple(
    dict(column='batch', a=batch, b=scale['batches'][0], y=('top1', 'compute_epochs'))
    for batch in scale['batches'][1:]
  )
  return study_config(
    base,
    runs,
    dict(
      x='batch',
      log_x=True,
      y='top1',
      compare=compare,
      runs=tuple(r['name'] for r in runs if r['name'].startswith('batch')),
      xlabel='batch size (lr = base_lr * batch / 512)',
      title=f'Fine-tuning: head, then all, vs. batch size ({arg})',
    ),
  )
