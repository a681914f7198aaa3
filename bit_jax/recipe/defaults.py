"""The config a run starts from: every field a config may set, at its default.

Configs in `configs/` start from `base_config()` and change what their experiment needs. The
fields, their defaults, values and meanings are declared once, in bit_jax/recipe/settings.py
(README.md, "Config fields", lists them). A field left None is derived before the run starts
(mostly by the BiT-HyperRule from the phase's own data); `--dry_run` prints the resolved
values and `<workdir>/phases.json` keeps them.
"""

import ml_collections
from ml_collections import config_dict

from bit_jax.recipe import settings


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  for f in settings.FIELDS:
    if f.metadata['by'] != 'config':
      continue
    kind = settings.value_type(f.name)
    c[f.name] = config_dict.placeholder(kind) if f.default is None else f.default
  c.phases = ()  # per-phase overrides of any field above (plus 'name'); () is one phase
  return c
