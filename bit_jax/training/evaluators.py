"""Evaluators of a phase, built once from the plan; each owns its data and its compiled
function and returns named metrics for any parameters.

* `Classification` on the eval split ('test_*') or the validation holdout ('val_*'):
  top-1 and top-5 accuracy, or for multi-label data precision@1 (the top prediction is one
  of the example's labels), the mean loss and the number of examples;
* `FewShot`: the closed-form linear probe of the pre-logits (bit_jax/training/linear_probe.py),
  'fewshot_<k>shot_top1', e.g. to watch feature quality during upstream training.
"""

import jax
import jax.numpy as jnp

from bit_jax.data import data_sources, input_pipeline
from bit_jax.recipe.plan import Phase
from bit_jax.runtime import metric_names
from bit_jax.runtime.parallel import DataParallel
from bit_jax.training import linear_probe, programs


class Classification:
  def __init__(self, prefix: str, phase: Phase, source, ids, parallel: DataParallel):
    s = phase.settings
    self.prefix, self.multi_label, self.parallel = prefix, source.multi_label, parallel
    self.data = input_pipeline.eval_data(
      source,
      global_batch_size=s.eval_batch_size or s.batch_size,
      crop=s.crop,
      ids=ids,
      multi_hot=s.loss == 'sigmoid',
    )
    self.step = programs.eval_step(phase.model(), parallel, loss=s.loss)

  def __call__(self, params) -> dict[str, float]:
    totals = None
    for batch in self.data:
      out = self.step(params, self.parallel.global_batch(batch))
      totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    totals = jax.device_get(totals)
    count = max(float(totals['count']), 1.0)
    names = metric_names
    if self.multi_label:
      accuracy = {names.PREC1: float(totals['top1']) / count}
    else:
      accuracy = {
        names.TOP1: float(totals['top1']) / count,
        names.TOP5: float(totals['top5']) / count,
      }
    metrics = {
      **accuracy,
      names.LOSS: float(totals['loss']) / count,
      names.EXAMPLES: int(totals['count']),
    }
    return {names.of(self.prefix, k): v for k, v in metrics.items()}


class FewShot:
  def __init__(self, phase: Phase):
    s = phase.settings
    source = lambda split: data_sources.get_source(
      s.fewshot_dataset or s.dataset, split, data_dir=s.data_dir, classes=s.fewshot_classes
    )
    self.probe = linear_probe.Probe(
      phase.model(num_classes=None),
      source(s.train_split),
      source(s.eval_split),
      s.fewshot_shots,
      s.crop,
      s.subset_seed,
      l2=s.fewshot_l2,
    )

  def __call__(self, params) -> dict[str, float]:
    # Each process probes on one local device, with its own copy of the replicated params.
    local = jax.tree.map(lambda a: a.addressable_data(0) if isinstance(a, jax.Array) else a, params)
    local = {k: v for k, v in local.items() if k != 'head'}
    return {metric_names.fewshot(k): v for k, v in self.probe.accuracies(local).items()}


def build(phase: Phase, parallel: DataParallel) -> list:
  """The evaluators of `phase`: the eval split, the validation holdout, the few-shot probe."""
  evaluators = [Classification(metric_names.TEST, phase, phase.data.eval, None, parallel)]
  if phase.data.val_ids is not None:
    evaluators.append(
      Classification(metric_names.VAL, phase, phase.data.train, phase.data.val_ids, parallel)
    )
  if phase.settings.fewshot_shots:
    evaluators.append(FewShot(phase))
  return evaluators


def evaluate(evaluators, params) -> dict[str, float]:
  return {k: v for evaluator in evaluators for k, v in evaluator(params).items()}
