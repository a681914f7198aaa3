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
differences say where an upstream's edge is significant (docs/studies.md has the numbers).
"""

from bit_jax.defaults import mini_base, mini_upstream_run, study_config, study_scale

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


def get_config(arg='full'):
  scale_name, *dataset = arg.split(',')
  scale, base = study_scale(SCALES, scale_name, 'mini, full or full,<dataset>')
  if dataset:
    base.dataset = dataset[0]
  runs = list(scale['upstream_runs'])
  starts = {**scale['upstreams'], 'scratch': ('none (scratch)', 'scratch')}
  for prefix, (label, init) in starts.items():
    for shots in SHOTS:
      runs.append(
        dict(
          name=f'{prefix}_{shots or "all"}',
          init=init,
          shots=shots,
          tags={'upstream': label},
          **scale['target'],
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
      title=f'Fine-tuning vs. target images per class ({scale_name})',
    ),
  )
