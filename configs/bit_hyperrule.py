"""BiT-HyperRule fine-tuning of a published BiT on a TFDS dataset.

    python -m bit_jax.train --config=configs/bit_hyperrule.py:BiT-M-R50x1,cifar10 \
        --workdir=/tmp/bit_cifar10 --config.batch_size=128 --config.lr=0.001

The argument is `<model>,<dataset>[,<shots>]`. Everything the HyperRule derives (resolution
160->128 for CIFAR's 32x32 images, 10k steps with warmup 500 and /10 at 3k/6k/9k for 50k
examples, MixUp 0.1) is printed at start and written to phases.json; any field can be set with
--config.<field>=... (see bit_jax/recipe/defaults.py).

Expected (official big_transfer README): BiT-M-R50x1 on CIFAR-10 with batch 128 and lr 0.001
reaches 97.3% top-1 on the test set (about 1.3 M examples processed).
"""

from bit_jax.recipe.defaults import base_config


def get_config(arg='BiT-M-R50x1,cifar10'):
  model, dataset, *shots = arg.split(',')
  config = base_config()
  config.model = config.init = model
  config.dataset = dataset
  if shots:
    config.shots = int(shots[0])
  return config
