"""The smaller things a person sees: the progress rate, bars in logs, the confusion matrix.

Oracles: hand computations (rates over a clock we control, row-normalised counts), and the
text a log file receives.
"""

import io

import numpy as np
import pytest

from bit_jax import predict
from bit_jax.runtime import metrics, progress


def test_the_rate_leaves_evaluation_time_out(monkeypatch):
  clock = iter([0.0, 1.0, 5.0])
  monkeypatch.setattr(metrics.time, 'perf_counter', lambda: next(clock))
  line = metrics.ProgressLine(total_steps=100, batch_size=8)  # t = 0
  text, rate = line.line(10, 0.5, 0.1)  # t = 1: 10 steps of 8 in 1 s
  assert rate == pytest.approx(80.0)
  line.exclude(3.0)  # an evaluation took 3 of the next 4 seconds
  text, rate = line.line(20, 0.5, 0.1)  # t = 5: 10 steps in 4 - 3 = 1 s of training
  assert rate == pytest.approx(80.0)
  assert 'ETA 00:00:08' in text  # 80 steps left at 10 steps/s


def test_a_bar_in_a_log_writes_lines_not_carriage_returns():
  log = io.StringIO()  # not a terminal, like a batch job's log file
  with progress.bar(total=1000, desc='x', file=log) as bar:
    for _ in range(1000):
      bar.update(1)
  text = log.getvalue()
  assert '\r' not in text and text.count('\n') <= 3, text  # the start, the end: not 1000
  assert '1000/1000' in text.splitlines()[-1]
  quiet = io.StringIO()
  with progress.bar(total=3, file=quiet, quiet=True) as bar:
    bar.update(3)
  assert quiet.getvalue() == ''


def test_the_confusion_matrix_is_normalised_per_label_and_titled_with_the_accuracy():
  labels = np.array([0, 0, 0, 0, 1, 2, 2])
  predicted = np.array([0, 0, 0, 1, 1, 0, 2])  # 5 of 7 right
  logits = np.eye(3)[predicted]
  counts = predict.confusion(logits, labels, 3)
  np.testing.assert_array_equal(counts, [[3, 1, 0], [0, 1, 0], [1, 0, 1]])
  np.testing.assert_allclose(predict.per_label(counts), [[0.75, 0.25, 0], [0, 1, 0], [0.5, 0, 0.5]])
  fig = predict.confusion_figure(logits, labels, ['a', 'b', 'c'], title='run on test')
  ax = fig.axes[0]
  assert ax.get_title() == 'run on test\ntop-1 71.43% on 7 images; rows normalised per label'
  colors = {t.get_text() + f'@{t.get_position()}': t.get_color() for t in ax.texts}
  assert colors['3@(0, 0)'] == 'white' and colors['1@(1, 0)'] == 'black'  # 0.75 vs 0.25
  assert colors['1@(1, 1)'] == 'white'  # b: 1 of 1, the darkest cell, still readable
  assert predict.confusion_png(logits, labels, ['a', 'b', 'c']).startswith(b'\x89PNG')
