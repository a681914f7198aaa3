"""Export a trained model as a TensorFlow SavedModel, for serving outside JAX.

    python -m bit_jax.export --model=/tmp/run --out=/tmp/run/saved_model

The serving signature takes uint8 images of any height, width and batch size
(`images: uint8 [batch, height, width, 3]`), does the run's evaluation preprocessing itself
(bilinear resize to the crop the model was trained at, values to [-1, 1]) and returns
`logits` and `probabilities` ([batch, classes], float32). The class names ride along:
`class_names.txt` in the SavedModel's assets and the module's `class_names` (a string
variable: `tf.saved_model.load(path).class_names.numpy()`).

    model = tf.saved_model.load(path)
    out = model.signatures['serving_default'](images=tf.constant(uint8_images))

The model is converted with jax2tf (native serialization: StableHLO inside the SavedModel),
polymorphic in the batch; the weights are TF variables, so a large model stays out of the
graph protobuf. The StableHLO is lowered for `--platforms` (default cpu and cuda; add tpu to
serve there), and loading it needs TensorFlow only.
"""

# isort: off
import bit_jax.quiet_tensorflow  # noqa: F401  (first: TensorFlow logs C++ lines on import)
# isort: on

import os
import sys
import tempfile

import numpy as np
from absl import app, flags, logging
from etils import epath

from bit_jax.errors import UserError


def preprocess(images, crop: int):
  """uint8 [b, h, w, 3] -> float32 [b, crop, crop, 3] in [-1, 1], as the run's evaluation."""
  import tensorflow as tf

  return tf.image.resize(tf.cast(images, tf.float32), (crop, crop)) / 127.5 - 1.0


def export(
  model, params, crop: int, out, class_names=None, platforms=('cpu', 'cuda')
) -> epath.Path:
  """Write the SavedModel of `model` with `params` to `out`; returns its path."""
  import tensorflow as tf
  from jax.experimental import jax2tf

  class Served(tf.Module):
    def __init__(self):
      super().__init__()
      self.params = tf.nest.map_structure(
        lambda a: tf.Variable(np.asarray(a), trainable=False), params
      )
      self.class_names = tf.Variable(
        list(class_names or []), dtype=tf.string, trainable=False
      )  # a constant would not be saved
      self.class_names_file = tf.saved_model.Asset(names_file) if class_names else None
      self._logits = jax2tf.convert(
        lambda p, x: model.apply({'params': p}, x),
        with_gradient=False,
        polymorphic_shapes=[None, f'(b, {crop}, {crop}, 3)'],
        native_serialization_platforms=tuple(platforms),
      )

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)], autograph=False)
    def serve(self, images):
      logits = self._logits(self.params, preprocess(images, crop))
      return {'logits': logits, 'probabilities': tf.nn.softmax(logits)}

  out = epath.Path(out)
  with tempfile.TemporaryDirectory() as scratch:
    names_file = os.path.join(scratch, 'class_names.txt')  # saving copies it into assets/
    if class_names:
      epath.Path(names_file).write_text('\n'.join(class_names) + '\n')
    served = Served()
    tf.saved_model.save(
      served, os.fspath(out), signatures={'serving_default': served.serve.get_concrete_function()}
    )
  return out


def define_flags():
  flags.DEFINE_string(
    'model', None, "A run's workdir, an .npz, a published BiT name or hf-hub:<org>/<name>."
  )
  flags.DEFINE_string('out', None, 'Directory of the SavedModel (any filesystem TF writes).')
  flags.DEFINE_integer('crop', None, "Image side; default: the run's, else 224.")
  flags.DEFINE_list(
    'platforms', ['cpu', 'cuda'], 'Platforms to lower the model for (cpu, cuda, tpu).'
  )


def main(argv):
  del argv
  FLAGS = flags.FLAGS
  if not FLAGS.model or not FLAGS.out:
    raise app.UsageError('--model and --out are required.')
  logging.set_verbosity(logging.WARNING)
  from bit_jax import predict

  try:
    model, params, class_names, crop = predict.load_model(FLAGS.model, FLAGS.crop)
  except UserError as e:
    print(f'ERROR: {e}', file=sys.stderr, flush=True)
    sys.exit(e.exit_code)
  path = export(model, params, crop, FLAGS.out, class_names, FLAGS.platforms)
  print(
    f'SavedModel -> {path}: images uint8 [batch, height, width, 3] resized to {crop} px; '
    f'{len(class_names)} classes; platforms {", ".join(FLAGS.platforms)}'
  )


if __name__ == '__main__':
  define_flags()
  app.run(main)
