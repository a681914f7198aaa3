"""The names of what a run measures, declared once: the evaluators make these keys, and the
loop (plateau, early stopping), the command line, the sweep and the study reports look them
up here, so a rename reaches every reader. They are the keys of `metrics.jsonl` records and of
results.json's per-phase results, whose format README.md documents ("results.json").

A metric is `<split>_<measure>`: `test_*` on the eval split, `val_*` on the validation
holdout (`val_fraction`); `fewshot_<k>shot_top1` is the linear probe of the pre-logits.
"""

from types import MappingProxyType

TEST, VAL = 'test', 'val'  # the eval split; the holdout of the training split
TOP1, TOP5, PREC1, LOSS, EXAMPLES = 'top1', 'top5', 'prec1', 'loss', 'examples'


def of(split: str, measure: str) -> str:
  return f'{split}_{measure}'


def fewshot(shots: int) -> str:
  return f'fewshot_{shots}shot_top1'


TEST_TOP1, TEST_TOP5, TEST_PREC1, TEST_LOSS = (of(TEST, m) for m in (TOP1, TOP5, PREC1, LOSS))
VAL_TOP1, VAL_TOP5, VAL_LOSS = (of(VAL, m) for m in (TOP1, TOP5, LOSS))

# What reduce-on-plateau and early stopping may watch, and which way is better.
MONITOR_MODES = MappingProxyType({VAL_LOSS: 'min', VAL_TOP1: 'max', VAL_TOP5: 'max'})

# results.json: its top-level keys, and the keys every phase's result has besides its metrics.
RESULTS_KEYS = ('final', 'phases', 'steps', 'examples_seen', 'wall_time_s')
PHASE_RESULT_KEYS = ('phase', 'steps', 'examples_seen')


def is_accuracy(name: str) -> bool:
  """An accuracy of the eval split (what a finished run prints): test top-k or prec@1."""
  return name in (TEST_TOP1, TEST_TOP5, TEST_PREC1)
