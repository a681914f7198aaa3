"""`python -m bit_jax.fewshot`: the few-shot linear probe (bit_jax/training/linear_probe.py) of a
checkpoint's frozen pre-logits, or of features saved by `bit_jax.predict --features`.

    python -m bit_jax.fewshot --model=BiT-M-R50x1 --dataset=cifar10 --shots=1,5,10,25
    python -m bit_jax.fewshot --model=/tmp/sweep/upstream_large/final.npz --dataset=cifar10 \
        --data_dir=../shared/data/tfds --classes=5,6,7,8,9 --shots=1,5,10,25,100 --crop=32

prints one line per k: the k-shot training set size and the test top-1 of the probe.
"""

# isort: off
import bit_jax.quiet_tensorflow  # noqa: F401  (first: TensorFlow logs C++ lines on import)
# isort: on

from absl import app, flags, logging
from absl.flags import FLAGS

from bit_jax import command_line
from bit_jax.data import data_sources
from bit_jax.models import pretrained
from bit_jax.recipe import hyperrule
from bit_jax.runtime.errors import ConfigError
from bit_jax.training.linear_probe import L2, accuracies_of_features, fewshot_accuracies


def define_flags():
  """The command line's flags; defined only when run as a script, so that importing this
  module (e.g. from train.py) adds no flags to other programs."""
  flags.DEFINE_string(
    'model', None, "Published BiT name or official-layout .npz (e.g. a run's final.npz)."
  )
  flags.DEFINE_string('dataset', 'cifar10', 'Dataset name (see bit_jax/data/data_sources.py).')
  flags.DEFINE_string('data_dir', None, 'TFDS data_dir.')
  flags.DEFINE_list('classes', None, 'Keep these classes only (e.g. 5,6,7,8,9).')
  flags.DEFINE_list('shots', ['1', '5', '10', '25'], 'Images per class to fit on.')
  flags.DEFINE_integer('crop', None, 'Image side; default: the HyperRule crop.')
  flags.DEFINE_integer('seed', 0, 'Seed of the k-shot subsets.')
  flags.DEFINE_float('l2', L2, 'Ridge penalty.')
  flags.DEFINE_string('train_split', 'train', 'Split the probe is fitted on.')
  flags.DEFINE_string('eval_split', 'test', 'Split the probe is tested on.')
  flags.DEFINE_string(
    'features',
    None,
    'Instead of --model and --dataset: features written by '
    '`bit_jax.predict --features`, to fit the probe on.',
  )
  flags.DEFINE_string('test_features', None, 'With --features: the features to test it on.')


def main(argv):
  del argv
  shots = [int(k) for k in FLAGS.shots]
  if FLAGS.features:
    if not FLAGS.test_features:
      raise app.UsageError('--features needs --test_features (the features to test on).')
    accuracies = accuracies_of_features(
      FLAGS.features, FLAGS.test_features, shots, FLAGS.seed, FLAGS.l2
    )
    print(f'{FLAGS.features} -> {FLAGS.test_features} (l2 {FLAGS.l2:g}, seed {FLAGS.seed}):')
    print(f'{"shots":>6} {"top-1":>7}')
    for k in shots:
      print(f'{k:>6} {accuracies[k]:>7.4f}')
    return
  if not FLAGS.model:
    raise app.UsageError('--model is required: a published BiT name or a .npz path.')
  logging.set_verbosity(logging.WARNING)  # TFDS logs every dataset it opens at INFO
  classes = tuple(int(c) for c in FLAGS.classes) if FLAGS.classes else None
  train_source, test_source = (
    data_sources.get_source(FLAGS.dataset, split, data_dir=FLAGS.data_dir, classes=classes)
    for split in (FLAGS.train_split, FLAGS.eval_split)
  )
  crop = FLAGS.crop
  if crop is None:
    image_hw = hyperrule.image_size(FLAGS.dataset, FLAGS.data_dir)
    if image_hw is None:
      raise app.UsageError(f'Cannot tell the image size of {FLAGS.dataset}; pass --crop.')
    crop = hyperrule.resolution(image_hw)[1]
  try:
    model, params = pretrained.load_pretrained(FLAGS.model, num_classes=0)
  except (FileNotFoundError, pretrained.CheckpointMismatchError, RuntimeError) as e:
    raise ConfigError(f'cannot load --model={FLAGS.model}: {e}') from None
  accuracies = fewshot_accuracies(
    model, params, train_source, test_source, shots, crop, FLAGS.seed, l2=FLAGS.l2
  )
  print(
    f'{FLAGS.model} on {FLAGS.dataset} ({train_source.num_classes} classes, {crop} px, '
    f'l2 {FLAGS.l2:g}, seed {FLAGS.seed}); tested on {FLAGS.eval_split}:'
  )
  print(f'{"shots":>6} {"train":>6} {"top-1":>7}')
  for k in shots:
    print(f'{k:>6} {k * train_source.num_classes:>6} {accuracies[k]:>7.4f}')


def cli():
  """The `bit-jax-fewshot` script."""
  define_flags()
  command_line.run(main)


if __name__ == '__main__':
  cli()
