"""Upstream pre-training with the BiT recipe (BiT-S on ImageNet-1k, BiT-M on ImageNet-21k).

    python -m bit_jax.train --config=configs/bit_upstream.py:BiT-S-R50x1 --workdir=gs://.../bit_s
    python -m bit_jax.train --config=configs/bit_upstream.py:BiT-M-R50x1 --workdir=gs://.../bit_m

Recipe (Kolesnikov et al. 2020, section 3.1): from scratch, SGD momentum 0.9, lr 0.03 x
batch/256 (batch 4096 -> 0.48), weight decay 1e-4, 90 epochs with lr /10 at epochs 30, 60 and 80,
linear warmup of 5,000 steps, Inception-style random crop to 224 + random flip. BiT-S trains on
ImageNet-1k with softmax cross-entropy; BiT-M on ImageNet-21k with sigmoid cross-entropy
(multi-label). Both datasets need TFDS's manual download (`imagenet2012`; ImageNet-21k as a
TFDS dataset named `imagenet21k` with a 'labels' feature, as big_vision prepares it).

Expected: BiT-S-R50x1 reaches about 76-77% ImageNet top-1 upstream (paper, Table 1 shows
fine-tuned numbers); this needs a TPU pod (about 1.5 M steps x images: 90 epochs of 1.28 M).
`final.npz` in the workdir is the official checkpoint layout, ready for bit_hyperrule.py.
"""

from bit_jax.recipe.defaults import base_config


def get_config(arg='BiT-S-R50x1'):
  upstream, _, arch = arg.partition('-R')
  if upstream not in ('BiT-S', 'BiT-M') or not arch:
    raise ValueError(f'Expected BiT-S-R<depth>x<width> or BiT-M-R<depth>x<width>, got {arg!r}.')
  config = base_config()
  config.model, config.init = f'R{arch}', 'scratch'
  if upstream == 'BiT-S':
    config.dataset, config.train_split, config.eval_split = 'imagenet2012', 'train', 'validation'
    config.loss = 'softmax'
  else:
    config.dataset, config.label_key, config.loss = 'imagenet21k', 'labels', 'sigmoid'
    config.train_split, config.eval_split = 'full[51200:]', 'full[:51200]'  # minival held out
  config.preprocess, config.crop = 'inception', 224
  config.resize = 224  # unused by the Inception crop; set so the HyperRule is not asked
  config.batch_size = 4096
  config.base_lr, config.base_batch, config.lr_scaling = 0.03, 256, 'linear'
  config.weight_decay = 1e-4
  config.mixup_alpha = 0.0
  config.epochs = 90.0
  config.warmup_steps = 5000
  config.decay_epochs = (30.0, 60.0, 80.0)
  config.eval_every = 5000
  config.checkpoint_every = 1000
  config.log_every = 100
  return config
