"""What a dataset's name says before any data is read: its base name and the split it is
evaluated on.

TFDS names carry a version or a config: "imagenet2012:5.1.0", "imagenet2012_subset/1pct".
Both share the base name's images and labels, so tables keyed by dataset (image sizes, the
eval split) look the base name up.
"""

# Datasets whose 'test' split has no labels (TFDS marks them -1): evaluate on 'validation',
# as the official BiT code does for ImageNet.
VALIDATION_EVAL = ('imagenet2012', 'imagenet2012_subset', 'imagenet2012_real')


def base_name(dataset: str) -> str:
  """'imagenet2012_subset/1pct:5.0.0' -> 'imagenet2012_subset'."""
  return dataset.split(':')[0].split('/')[0]


def default_eval_split(dataset: str) -> str:
  return 'validation' if base_name(dataset) in VALIDATION_EVAL else 'test'
