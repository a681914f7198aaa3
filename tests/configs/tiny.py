"""A seconds-long run for tests: R14x0.5 from scratch on 3 digit classes at 16 px.

python -m bit_jax.train --config=tests/configs/tiny.py --workdir=/tmp/tiny
"""

from bit_jax.recipe.defaults import base_config


def get_config(arg=''):
  del arg
  config = base_config()
  config.model, config.init = 'R14x0.5', 'scratch'
  config.dataset = 'sklearn_digits'
  config.classes = (0, 1, 2)
  config.resize, config.crop = 18, 16
  config.batch_size = 16
  config.lr = 0.05
  config.total_steps = 12
  config.log_every = 2
  config.eval_every = 6
  config.checkpoint_every = 4
  config.keep_checkpoints = 5
  return config
