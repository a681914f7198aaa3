"""A fine-tuned model and its labels, from what `--model` names: the one loader of the
serving command lines (predict, export).

`--model` is a run's workdir (its final.npz: the last phase's weights), `<workdir>:<phase>`
(that phase's `<phase>.npz`), an .npz, a timm folder, a published BiT name or
`hf-hub:<org>/<name>`. A workdir whose run has not finished is an error that names the
phases it can load instead.
"""

import os

from bit_jax.models import hub, pretrained
from bit_jax.runtime import files
from bit_jax.runtime.errors import ConfigError
from bit_jax.training.run_state import Workdir

UPSTREAM_CROP = 224  # the resolution BiT-S and BiT-M were pre-trained at
MODEL_HELP = (
  "A run's workdir (its last phase), <workdir>:<phase>, an .npz, a timm folder, a published "
  'BiT name or hf-hub:<org>/<name>.'
)


def locate(spec: str) -> tuple[str, Workdir | None, str | None]:
  """(the checkpoint to load, the run's workdir, the phase) of `--model`: a workdir (its
  final.npz: the last phase), `<workdir>:<phase>` (that phase's `<phase>.npz`), or a
  checkpoint or published name (no workdir, no phase)."""
  root, sep, phase = spec.rpartition(':')
  if sep and root and '/' not in phase and not hub.is_hub(spec) and Workdir(root).plan.exists():
    return _phase_weights(spec, root, phase)
  workdir = Workdir(spec)
  if workdir.root.is_dir() and workdir.final.exists():
    last = files.read_json(workdir.plan)[-1]['name'] if workdir.plan.exists() else None
    return os.fspath(workdir.final), workdir, last
  if workdir.root.is_dir() and (workdir.plan.exists() or workdir.checkpoints.exists()):
    done = _finished_phases(workdir)[1] if workdir.plan.exists() else []
    hint = f'; or take a finished phase: --model={spec}:{done[-1]}' if done else ''
    raise ConfigError(
      f'{spec} is a run that has not finished: no final.npz. Rerun its train command to '
      f'finish it (it resumes){hint}.'
    )
  return spec, None, None


def _phase_weights(spec: str, root: str, phase: str) -> tuple[str, Workdir, str]:
  workdir = Workdir(root)
  path = workdir.phase_weights(phase)
  if not path.exists():
    names, done = _finished_phases(workdir)
    raise ConfigError(
      f'--model={spec}: {root} has no weights of phase {phase!r} (its phases: '
      f'{", ".join(names)}; finished: {", ".join(done) or "none yet"}).'
    )
  return os.fspath(path), workdir, phase


def _finished_phases(workdir: Workdir) -> tuple[list[str], list[str]]:
  """(every phase of the run's plan, those whose weights are saved), in plan order."""
  names = [r['name'] for r in files.read_json(workdir.plan)]
  return names, [n for n in names if workdir.phase_weights(n).exists()]


def load_model(spec: str, crop=None):
  """(model, params, class names, crop) of a run's workdir (`<workdir>:<phase>` for one
  phase), a checkpoint or a published name."""
  spec = locate(spec)[0]
  try:
    model, params, info = pretrained.load_pretrained(spec, with_info=True)
  except (FileNotFoundError, ValueError, RuntimeError) as e:
    raise ConfigError(f'cannot load --model={spec}: {e}') from None
  if model.num_classes is None:
    raise ConfigError(f'{spec} has no classification head; use --features for its features.')
  names = info['class_names'] or [str(i) for i in range(model.num_classes)]
  return model, params, tuple(names), crop or info['image_size'] or UPSTREAM_CROP
