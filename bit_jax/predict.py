"""Classify images with a trained model, or write their features.

    python -m bit_jax.predict --model=/tmp/run --images=photos/ --out=predictions.csv
    python -m bit_jax.predict --model=/tmp/run --images='photos/*.jpg'
    python -m bit_jax.predict --model=/tmp/run --images=tfds:cifar10/test --data_dir=...
    python -m bit_jax.predict --model=/tmp/run --images=train/ --features=train_features.npz

`--model`: a run's workdir (its final.npz, the last phase's weights), `<workdir>:<phase>` (that
phase's, e.g. `/tmp/bit_demo:transfer`), an .npz, a timm folder, a published BiT name or an
hf-hub: name.
`--images`: a folder (searched recursively), a glob, or a TFDS split (`tfds:<name>/<split>`).
Preprocessing is the run's evaluation: the image resized to the crop the model was trained
at (stored in a run's final.npz; `--crop` otherwise, 224 for published checkpoints), values
scaled to [-1, 1]. An image that cannot be decoded is listed and skipped.

It writes a CSV (image, label where known, then the top-k class names and probabilities) and
prints a summary. Labels are known for a TFDS split and for images in folders named like the
model's classes (e.g. a test split laid out as `<split>/<class>/...`); then it also prints
top-1/top-5 and writes a confusion matrix next to the CSV. `--features` writes the
pre-logits (or `--layer`) with the image ids and labels to an .npz that
`python -m bit_jax.fewshot --features=... --test_features=...` reads.
"""

# isort: off
import bit_jax.quiet_tensorflow  # noqa: F401  (first: TensorFlow logs C++ lines on import)
# isort: on

import csv
import dataclasses
import glob as glob_lib
import io
import os

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
from absl import app, flags, logging
from etils import epath

from bit_jax import command_line
from bit_jax.data import data_sources, input_pipeline
from bit_jax.runtime import files, progress
from bit_jax.runtime.errors import ConfigError
from bit_jax.serving import fine_tuned

LAYERS = ('pre_logits', 'logits', 'stem', 'stage1', 'stage2', 'stage3', 'stage4')


def _image_paths(spec: str) -> list[str]:
  if any(c in spec for c in '*?['):
    found = glob_lib.glob(spec, recursive=True) if '://' not in spec else tf.io.gfile.glob(spec)
    return sorted(p for p in found if os.path.splitext(p)[1].lower() in data_sources.IMAGE_SUFFIXES)
  root = epath.Path(spec)
  if not root.is_dir():
    raise ConfigError(
      f'--images={spec}: no such folder (give a folder, a glob or tfds:<name>/<split>).'
    )
  return [str(p) for p in data_sources.images_under(root)]


def image_source(spec: str, class_names, data_dir=None):
  """(source, the name of each example, the unreadable files skipped) for `--images`; labels
  follow the model's class names (-1 where an image's folder is not one of them)."""
  if spec.startswith('tfds:'):
    return _tfds_images(spec, class_names, data_dir)
  paths = _image_paths(spec)
  if not paths:
    raise ConfigError(f'--images={spec}: found no {"/".join(data_sources.IMAGE_SUFFIXES)} files.')
  readable, skipped = data_sources.decodable(paths)
  paths = [p for p, ok in zip(paths, readable) if ok]
  folder = lambda p: os.path.basename(os.path.dirname(p))
  labels = [class_names.index(folder(p)) if folder(p) in class_names else -1 for p in paths]
  return data_sources.file_source(spec, paths, labels, class_names), paths, skipped


def _tfds_images(spec: str, class_names, data_dir):
  """`image_source` of `tfds:<name>/<split>`: its labels renumbered as the model's classes."""
  name, _, split = spec.removeprefix('tfds:').rpartition('/')
  try:
    source = data_sources.tfds_source(name, split, data_dir=data_dir)
  except (ValueError, FileNotFoundError) as e:
    raise ConfigError(f'--images={spec}: {e}') from None
  lookup = np.array(
    [class_names.index(c) if c in class_names else -1 for c in source.class_names or ()], np.int32
  )
  table = tf.constant(lookup)
  relabelled = dataclasses.replace(
    source,
    name=spec,
    num_classes=len(class_names),
    undecoded_records=lambda: source.undecoded_records().map(
      lambda r: {**r, 'label': tf.gather(table, r['label'])}
    ),
    labels=lambda: lookup[source.labels()],
    class_names=class_names,
  )
  return relabelled, [f'{spec}#{i}' for i in range(source.num_examples)], ()


def infer(model, params, source, *, crop, layer='pre_logits', batch_size=64, quiet=False):
  """(logits [n, K], features [n, ...] of `layer`, labels [n]) of every example, in id order."""
  apply = jax.jit(lambda p, x: model.apply({'params': p}, x, return_intermediates=True))
  batches = input_pipeline.eval_data(
    source, global_batch_size=batch_size, crop=crop, process_index=0, process_count=1
  )
  logits, features, labels, ids = [], [], [], []
  for batch in progress.bar(batches, total=len(batches), desc='predict', unit='batch', quiet=quiet):
    out, intermediates = apply(params, jnp.asarray(batch['image']))
    mask = batch['mask']
    logits.append(np.asarray(out, np.float32)[mask])
    features.append(np.asarray(intermediates[layer], np.float32)[mask])
    labels.append(batch['label'][mask])
    ids.append(batch['id'][mask])
  order = np.argsort(np.concatenate(ids))
  return tuple(np.concatenate(part)[order] for part in (logits, features, labels))


def predictions_csv(names, logits, labels, class_names, top_k: int) -> str:
  """The CSV `--out` gets; the csv module quotes names with commas, quotes or newlines."""
  probabilities = np.asarray(jax.nn.softmax(logits, axis=-1))
  top = np.argsort(-probabilities, axis=1)[:, :top_k]
  header = ['image', 'label'] + [
    f'{kind}{i}' for i in range(1, top_k + 1) for kind in ('class', 'probability')
  ]
  text = io.StringIO()
  writer = csv.writer(text, lineterminator='\n')
  writer.writerow(header)
  for name, label, row, p in zip(names, labels, top, probabilities):
    cells = [name, class_names[label] if label >= 0 else '']
    writer.writerow(cells + [v for c in row for v in (class_names[c], f'{p[c]:.6f}')])
  return text.getvalue()


def accuracy(logits, labels, k: int) -> float:
  top = np.argsort(-logits, axis=1)[:, :k]
  return float(np.mean(np.any(top == labels[:, None], axis=1)))


def confusion(logits, labels, num_classes: int) -> np.ndarray:
  """Counts [label, predicted] of the top-1 predictions."""
  matrix = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(matrix, (labels, np.argmax(logits, axis=1)), 1)
  return matrix


def per_label(matrix) -> np.ndarray:
  """Each row divided by its label's images (a row without images stays 0): the diagonal is
  each class's recall, whatever the class sizes."""
  totals = matrix.sum(axis=1, keepdims=True)
  return np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)


def confusion_figure(logits, labels, class_names, title: str = ''):
  """The matplotlib figure: cells coloured by the per-label fraction, labelled with counts
  (white on the dark cells), titled with the top-1 accuracy."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  n = len(class_names)
  matrix = confusion(logits, labels, n)
  fractions = per_label(matrix)
  size = min(3 + 0.4 * n, 20)
  fig, ax = plt.subplots(figsize=(size + 1, size), dpi=100)
  image = ax.imshow(fractions, cmap='Blues', vmin=0, vmax=1)
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the label's images")
  if n <= 30:
    ax.set_xticks(range(n), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), class_names, fontsize=7)
    for (i, j), count in np.ndenumerate(matrix):
      color = 'white' if fractions[i, j] > 0.5 else 'black'
      ax.text(j, i, str(count), ha='center', va='center', fontsize=8 if n <= 15 else 6, color=color)
  accuracy = np.trace(matrix) / max(matrix.sum(), 1)
  heading = f'top-1 {accuracy:.2%} on {matrix.sum()} images; rows normalised per label'
  ax.set_title(f'{title}\n{heading}' if title else heading, fontsize=9)
  ax.set_xlabel('predicted')
  ax.set_ylabel('label')
  fig.tight_layout()
  return fig


def confusion_png(logits, labels, class_names, title: str = '') -> bytes:
  import matplotlib.pyplot as plt

  fig = confusion_figure(logits, labels, class_names, title)
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png')
  plt.close(fig)
  return buffer.getvalue()


def define_flags():
  flags.DEFINE_string('model', None, fine_tuned.MODEL_HELP)
  flags.DEFINE_string('images', None, 'A folder, a glob, or tfds:<name>/<split>.')
  flags.DEFINE_string('out', 'predictions.csv', 'The CSV of predictions.')
  flags.DEFINE_string('features', None, 'Also write the features of --layer to this .npz.')
  flags.DEFINE_enum('layer', 'pre_logits', LAYERS, 'Which features --features writes.')
  flags.DEFINE_integer('top_k', 5, 'Classes per image in the CSV.')
  flags.DEFINE_integer('crop', None, "Image side; default: the run's, else 224.")
  flags.DEFINE_integer('batch_size', 64, 'Images per batch.')
  flags.DEFINE_string('data_dir', None, 'TFDS data_dir for tfds:... images.')


def main(argv):
  del argv
  FLAGS = flags.FLAGS
  if not FLAGS.model or not FLAGS.images:
    raise app.UsageError('--model and --images are required.')
  logging.set_verbosity(logging.WARNING)
  model, params, class_names, crop = fine_tuned.load_model(FLAGS.model, FLAGS.crop)
  source, names, skipped = image_source(FLAGS.images, class_names, FLAGS.data_dir)
  logits, features, labels = infer(
    model, params, source, crop=crop, layer=FLAGS.layer, batch_size=FLAGS.batch_size
  )
  files.write_atomic(
    FLAGS.out,
    predictions_csv(names, logits, labels, class_names, min(FLAGS.top_k, len(class_names))),
  )
  if FLAGS.features:
    files.write_npz(
      FLAGS.features,
      {
        'features': features,
        'labels': labels,
        'ids': np.array(names),
        'layer': np.array(FLAGS.layer),
        'class_names': np.array(class_names),
      },
    )
  print(
    f'{len(names)} images at {crop}x{crop} -> {FLAGS.out}'
    + (f'; features ({FLAGS.layer}) -> {FLAGS.features}' if FLAGS.features else '')
  )
  if skipped:
    print(
      f'Skipped {len(skipped)} unreadable: '
      + ', '.join(skipped[:10])
      + (' ...' if len(skipped) > 10 else '')
    )
  known = labels >= 0
  if known.any():
    print(
      f'top-1 {accuracy(logits[known], labels[known], 1):.4f}  top-5 '
      f'{accuracy(logits[known], labels[known], min(5, len(class_names))):.4f} on '
      f'{int(known.sum())} labelled images'
    )
    png = os.path.splitext(FLAGS.out)[0] + '.confusion.png'
    title = f'{FLAGS.model} on {FLAGS.images}'
    files.write_atomic(png, confusion_png(logits[known], labels[known], class_names, title))
    print(f'confusion matrix -> {png}')


def cli():
  """The `bit-jax-predict` script."""
  define_flags()
  command_line.run(main)


if __name__ == '__main__':
  cli()
