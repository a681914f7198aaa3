"""A model as timm and the Hugging Face hub take it: a folder of `model.safetensors`,
`config.json` and a `README.md` model card.

    write(folder, arrays, class_names=..., crop=128, card=Card(...))
    timm.create_model('local-dir:<folder>', pretrained=True)      # or hf-hub:<org>/<name>
    bit_jax.load_pretrained('<folder>')         # reads it back (pretrained.detect_format)

The weights are a timm `resnetv2_*_bit` state_dict (the names and OIHW layout of
`pretrained.npz_to_timm`). config.json is timm's: `architecture`, `num_classes`,
`label_names` and a `pretrained_cfg` saying how to feed the model as our evaluation does
(bilinear resize of the whole image to the crop, `crop_pct` 1.0 and `crop_mode` 'squash',
mean and std 0.5: values in [-1, 1]).

timm registers BiT only at the published sizes (`resnetv2_50x1_bit` ... `resnetv2_152x4_bit`,
whose builders fix the depth and width). Any other architecture (R14x0.5, R26, R50x2, ...) is
written as timm's generic `resnetv2_50`, whose builder lets config.json's `model_args` set
the units per stage, the width, BiT's fixed-padding stem and GroupNorm; that builder's
convolutions are plain, not weight-standardised, so those folders store the *standardised*
kernels (Weight Standardization is idempotent up to its epsilon, so bit_jax, which
standardises again on load, computes the same function).
"""

import dataclasses
import json

import numpy as np
from etils import epath

from bit_jax import models
from bit_jax.models import ops, pretrained
from bit_jax.runtime import files, metric_names

WEIGHTS = 'model.safetensors'
CONFIG = 'config.json'
CARD = 'README.md'
GENERIC = 'resnetv2_50'  # timm's ResNetV2 builder that takes layers/width from model_args
CITATION = """@inproceedings{kolesnikov2020bit,
  title={Big Transfer (BiT): General Visual Representation Learning},
  author={Kolesnikov, Alexander and Beyer, Lucas and Zhai, Xiaohua and Puigcerver, Joan and
          Yung, Jessica and Gelly, Sylvain and Houlsby, Neil},
  booktitle={European Conference on Computer Vision (ECCV)},
  year={2020}
}"""


def timm_name(architecture: models.Architecture) -> str | None:
  """timm's registered name of a published BiT size ('resnetv2_50x1_bit'), else None."""
  if architecture.name in models.PUBLISHED_ARCHITECTURES:
    depth, width = architecture.name[1:].split('x')
    return f'resnetv2_{depth}x{width}_bit'
  return None


def standardized(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Every weight-standardised kernel replaced by its standardised value (float64 math)."""
  out = dict(arrays)
  for key, kernel in arrays.items():
    if key.endswith('standardized_conv2d/kernel'):
      matrix = np.asarray(kernel, np.float64).reshape(-1, kernel.shape[-1])
      centered = matrix - matrix.mean(axis=0)
      scale = 1 / np.sqrt(np.mean(centered**2, axis=0) + ops.WS_EPS)
      out[key] = (centered * scale).reshape(kernel.shape).astype(np.float32)
  return out


def config(architecture: models.Architecture, num_classes: int, class_names, crop: int) -> dict:
  """timm's config.json for this model, fed as the run's evaluation feeds it."""
  name = timm_name(architecture)
  cfg = {
    'architecture': name or GENERIC,
    'num_classes': num_classes,
    'num_features': int(2048 * architecture.width),
    'label_names': list(class_names),
    'pretrained_cfg': {
      'tag': 'bit_jax',
      'custom_load': False,
      'input_size': [3, crop, crop],
      'fixed_input_size': False,
      'interpolation': 'bilinear',
      'crop_pct': 1.0,
      'crop_mode': 'squash',  # resized straight to the crop, as our evaluation does
      'mean': [0.5, 0.5, 0.5],
      'std': [0.5, 0.5, 0.5],
      'num_classes': num_classes,
      'pool_size': [max(crop // 32, 1)] * 2,
      'first_conv': 'stem.conv',
      'classifier': 'head.fc',
      'license': 'apache-2.0',
      'paper_name': 'Big Transfer (BiT): General Visual Representation Learning',
      'paper_ids': 'arXiv:1912.11370',
    },
    'bit_jax': {'architecture': architecture.name, 'standardized_kernels': name is None},
  }
  if name is None:
    cfg['model_args'] = {
      'layers': list(architecture.units),
      'width_factor': architecture.width,
      'stem_type': 'fixed',
      'norm_layer': 'groupnorm',
    }
  return cfg


@dataclasses.dataclass(frozen=True)
class Card:
  """What the model card says about the run (None where it is not known)."""

  title: str = 'BiT ResNet-V2 fine-tuned with bit_jax'
  init: str | None = None  # the weights it was fine-tuned from
  dataset: str | None = None
  train_split: str | None = None
  examples: int | None = None
  steps: int | None = None
  batch_size: int | None = None
  test: dict | None = None  # the phase's final metrics from results.json
  repo_id: str | None = None  # where it is pushed: the card's loading lines name it


def training_facts(card: Card) -> list[str]:
  """The card's '## Training' bullets: what it started from, its data, steps and test scores."""
  facts = [
    ('Fine-tuned from', card.init),
    ('Fine-tuned on', card.dataset and f'{card.dataset} ({card.train_split})'),
    ('Training examples', card.examples),
    ('Steps', card.steps and f'{card.steps} of batch {card.batch_size}'),
  ]
  lines = [f'- {k}: {v}' for k, v in facts if v is not None]
  if card.test:
    scores = ', '.join(
      f'{k.removeprefix("test_")} {v:.4f}'
      for k, v in card.test.items()
      if metric_names.is_accuracy(k)
    )
    count = card.test.get(metric_names.of(metric_names.TEST, metric_names.EXAMPLES))
    lines.append(f'- Test accuracy: {scores}' + (f' on {count} test images' if count else ''))
  return lines


def model_card(card: Card, cfg: dict) -> str:
  """README.md: what the model is, how it was trained and scored, how to load it."""
  arch = cfg['bit_jax']['architecture']
  crop = cfg['pretrained_cfg']['input_size'][1]
  source = f'hf-hub:{card.repo_id}' if card.repo_id else 'path/to/this/folder'
  where = source if card.repo_id else f'local-dir:{source}'
  datasets = f'datasets:\n- {card.dataset.split(":")[0].lower()}\n' if card.dataset else ''
  lines = [
    f'---\nlibrary_name: timm\nlicense: apache-2.0\npipeline_tag: image-classification\n'
    f'tags:\n- image-classification\n- timm\n- bit_jax\n{datasets}---',
    f'# {card.title}\n',
    f'A BiT ResNet-V2 {arch} (timm `{cfg["architecture"]}`) with {cfg["num_classes"]} classes, '
    f'fine-tuned with bit_jax (Big Transfer in JAX/Flax, BiT-HyperRule).',
    '',
    '## Training',
    '',
  ]
  lines += training_facts(card)
  lines += [
    f'- Input: RGB resized straight to {crop}x{crop} (bilinear, no aspect-preserving crop), '
    f'values scaled to [-1, 1] (mean and std 0.5)',
    f'- Classes: {", ".join(cfg["label_names"][:20])}'
    + (' ...' if len(cfg['label_names']) > 20 else ''),
    '',
    '## Load it with timm',
    '',
    '```python',
    'import timm',
    f"model = timm.create_model('{where}', pretrained=True).eval()",
    'config = timm.data.resolve_data_config({}, model=model)',
    'transform = timm.data.create_transform(**config)  # resize to the crop, [-1, 1]',
    'logits = model(transform(image).unsqueeze(0))',
    "labels = model.pretrained_cfg['label_names']",
    '```',
    '',
    '## Load it with bit_jax',
    '',
    '```python',
    'import bit_jax',
    f"model, params, info = bit_jax.load_pretrained('{source}', with_info=True)",
    "logits = model.apply({'params': params}, images)  # NHWC in [-1, 1]",
    "info['class_names'], info['image_size']",
    '```',
    '',
    '## Citation',
    '',
    '```bibtex',
    CITATION,
    '```',
  ]
  return '\n'.join(lines) + '\n'


def write(folder, arrays, *, class_names, crop: int, card: Card = Card()) -> epath.Path:
  """Write `arrays` (official layout, with a head) as a timm folder; returns its path."""
  from safetensors.numpy import save

  arrays = pretrained.normalize_keys(
    {k: v for k, v in arrays.items() if k not in pretrained.METADATA}
  )
  architecture, num_classes = pretrained.architecture_of(arrays)
  if num_classes is None:
    raise ValueError('The model has no classification head; timm needs one.')
  cfg = config(architecture, num_classes, class_names, crop)
  if cfg['bit_jax']['standardized_kernels']:
    arrays = standardized(arrays)
  state = {
    k: np.ascontiguousarray(v, np.float32) for k, v in pretrained.npz_to_timm(arrays).items()
  }
  folder = epath.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  files.write_atomic(folder / WEIGHTS, save(state, metadata={'format': 'pt'}))
  files.write_atomic(folder / CONFIG, json.dumps(cfg, indent=2) + '\n')
  files.write_atomic(folder / CARD, model_card(card, cfg))
  return folder


def summary(folder) -> str:
  """One line on what was written and how timm loads it."""
  cfg = json.loads((epath.Path(folder) / CONFIG).read_text())
  generic = (
    f' (timm registers BiT only at {", ".join(models.PUBLISHED_ARCHITECTURES)}: '
    f'{cfg["bit_jax"]["architecture"]} is its generic {GENERIC} with model_args)'
    if cfg['bit_jax']['standardized_kernels']
    else ''
  )
  return (
    f'timm {cfg["architecture"]}{generic}, {cfg["num_classes"]} classes, '
    f'{cfg["pretrained_cfg"]["input_size"][-1]} px; '
    f"timm.create_model('local-dir:{folder}', pretrained=True) loads it"
  )
