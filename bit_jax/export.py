"""Export a trained model for use outside JAX: a TensorFlow SavedModel, a timm / Hugging Face
hub folder, or ONNX.

    python -m bit_jax.export --model=/tmp/run --out=/tmp/run/saved_model      # SavedModel
    python -m bit_jax.export --model=/tmp/run:transfer --format=timm --out=/tmp/run/timm \
        --push_to_hub=me/my-bit                                      # timm folder, uploaded
    python -m bit_jax.export --model=/tmp/run --format=onnx --out=/tmp/run/model.onnx

`--model` is what `predict` takes (a workdir, `<workdir>:<phase>`, a checkpoint or a name; see
bit_jax/serving/fine_tuned.py).

`--format=timm` writes `model.safetensors` (timm's `resnetv2_*_bit` names), `config.json`
(architecture, classes, label names, input size, mean/std, interpolation, crop) and a
`README.md` model card (what it was fine-tuned from and on, steps, test accuracy, how to load
it): `timm.create_model('local-dir:<out>', pretrained=True)` and
`bit_jax.load_pretrained('<out>')` load it (bit_jax/serving/timm_folder.py). `--push_to_hub=org/name`
then creates that hub repo (if needed), uploads the folder and prints its URL; then
`timm.create_model('hf-hub:org/name', pretrained=True)` loads it. `--format=onnx`: see
bit_jax/serving/onnx_export.py.

SavedModel: the serving signature takes uint8 images of any height, width and batch size (0 too)
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
import tempfile

import numpy as np
from absl import app, flags, logging
from etils import epath

from bit_jax import command_line
from bit_jax.models import hub, pretrained
from bit_jax.runtime import files
from bit_jax.runtime.errors import ConfigError
from bit_jax.serving import fine_tuned, timm_folder

FORMATS = ('savedmodel', 'timm', 'onnx')


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
      # jax2tf's polymorphic batch is >= 1; an empty batch gets empty outputs without it.
      logits = tf.cond(
        tf.shape(images)[0] > 0,
        lambda: self._logits(self.params, preprocess(images, crop)),
        lambda: tf.zeros([0, model.num_classes], tf.float32),
      )
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


def card(spec: str, repo_id: str | None = None) -> timm_folder.Card:
  """What a model card can say about `--model`: a run's phase, from phases.json and
  results.json; for a bare checkpoint, only where it came from."""
  _, workdir, phase = fine_tuned.locate(spec)
  if workdir is None or not workdir.plan.exists():
    return timm_folder.Card(init=spec, repo_id=repo_id)
  records = files.read_json(workdir.plan)
  index = next((i for i, r in enumerate(records) if r['name'] == phase), len(records) - 1)
  s = records[index]
  results = files.read_json(workdir.results) if workdir.results.exists() else {}
  test = next((r for r in results.get('phases', []) if r.get('phase') == s['name']), None)
  return timm_folder.Card(
    title=f'BiT {s["model"]} fine-tuned on {s["dataset"]} with bit_jax ({s["name"]})',
    init=_init_text(records, index),
    dataset=s['dataset'],
    train_split=s['train_split'] + (f', {s["shots"]} per class' if s.get('shots') else ''),
    examples=s.get('num_examples'),
    steps=test['steps'] if test else s['total_steps'],
    batch_size=s['batch_size'],
    test=test,
    repo_id=repo_id,
  )


def _init_text(records, index) -> str:
  """'BiT-M-R50x1', or for init=previous the chain back to where the weights began."""
  chain = []
  while records[index]['init'] == 'previous' and index > 0:
    index -= 1
    chain.append(records[index]['name'])
  start = records[index]['init']
  if not chain:
    return start
  return f'the weights of phase {" <- ".join(chain)} of the same run (which began from {start})'


def export_timm(spec, params, class_names, crop: int, out, repo_id=None) -> epath.Path:
  """The timm folder of `params`, its model card filled from the run `spec` names."""
  return timm_folder.write(
    out,
    pretrained.params_to_npz(params),
    class_names=class_names,
    crop=crop,
    card=card(spec, repo_id),
  )


def define_flags():
  flags.DEFINE_string('model', None, fine_tuned.MODEL_HELP)
  flags.DEFINE_enum('format', 'savedmodel', FORMATS, 'What to write.')
  flags.DEFINE_string(
    'out', None, 'The SavedModel or timm folder, or the .onnx file (any filesystem TF writes).'
  )
  flags.DEFINE_string(
    'push_to_hub', None, 'With --format=timm: upload the folder to this Hugging Face repo.'
  )
  flags.DEFINE_bool('private', False, 'With --push_to_hub: create the repo private.')
  flags.DEFINE_integer('crop', None, "Image side; default: the run's, else 224.")
  flags.DEFINE_list(
    'platforms', ['cpu', 'cuda'], 'Platforms to lower the model for (cpu, cuda, tpu).'
  )


def run_export(
  spec, fmt, out, *, crop=None, push_to_hub=None, private=False, platforms=('cpu', 'cuda')
) -> list[str]:
  """Export `--model` as `fmt` to `out` (and push a timm folder); returns the lines to print."""
  if push_to_hub and fmt != 'timm':
    raise ConfigError('--push_to_hub uploads a timm folder: add --format=timm.')
  model, params, class_names, crop = fine_tuned.load_model(spec, crop)
  if fmt == 'timm':
    path = export_timm(spec, params, class_names, crop, out, push_to_hub)
    lines = [f'timm folder -> {path}: {timm_folder.summary(path)}']
    if push_to_hub:
      lines.append(f'Pushed {path} to {hub.push(path, push_to_hub, private=private)}')
    return lines
  if fmt == 'onnx':
    from bit_jax.serving import onnx_export

    path = onnx_export.export(params, crop, out, class_names)
    return [f'ONNX -> {path}: {onnx_export.CONTRACT.format(crop=crop)}; {len(class_names)} classes']
  path = export(model, params, crop, out, class_names, platforms)
  return [
    f'SavedModel -> {path}: images uint8 [batch, height, width, 3] resized to {crop} px; '
    f'{len(class_names)} classes; platforms {", ".join(platforms)}'
  ]


def main(argv):
  del argv
  FLAGS = flags.FLAGS
  if not FLAGS.model or not FLAGS.out:
    raise app.UsageError('--model and --out are required.')
  logging.set_verbosity(logging.WARNING)
  lines = run_export(
    FLAGS.model,
    FLAGS.format,
    FLAGS.out,
    crop=FLAGS.crop,
    push_to_hub=FLAGS.push_to_hub,
    private=FLAGS.private,
    platforms=FLAGS.platforms,
  )
  print('\n'.join(lines))


def cli():
  """The `bit-jax-export` script."""
  define_flags()
  command_line.run(main)


if __name__ == '__main__':
  cli()
