"""bit_jax.studies.learning_curve: the fit against scipy.optimize.curve_fit, the inverse against the
curve itself, the interval against Student's t, and the whole estimator's coverage and bias on
synthetic sweeps drawn from known curves (the binomial spread decides what coverage passes)."""

import math

import numpy as np
import pytest
from scipy import optimize
from scipy import stats as scipy_stats

from bit_jax.studies import learning_curve as lc

K = np.array([1, 5, 10, 25, 100, 504.8])  # the sizes of the dataset_size_upstream study


def curve(k, a, b, c):
  return a * np.asarray(k, np.float64) ** -b + c


def test_fit_is_at_least_as_good_as_curve_fit_and_recovers_an_exact_curve():
  rng = np.random.default_rng(0)
  errors = curve(K, 0.45, 0.5, 0.4) + rng.normal(0, 0.02, (30, len(K)))
  ours = lc.fit(K, errors)
  for e, p in zip(errors, ours):
    theirs, _ = optimize.curve_fit(
      curve, K, e, p0=(0.3, 0.5, 0.3), bounds=([0, lc.B_MIN, 0], [np.inf, lc.B_MAX, np.inf])
    )
    sse = lambda q: float(np.sum((curve(K, *q) - e) ** 2))
    assert sse(p) <= sse(theirs) * (1 + 1e-6) + 1e-15  # never a worse least-squares fit
  assert lc.fit(K, curve(K, 0.45, 0.5, 0.4)) == pytest.approx([0.45, 0.5, 0.4], rel=1e-6)
  # Two sizes: the power law through both points (c = 0), exactly.
  a, b, c = lc.fit([25, 250], [0.47, 0.44])
  assert c == 0 and curve([25, 250], a, b, c) == pytest.approx([0.47, 0.44], rel=1e-9)


def test_an_ulp_in_the_accuracies_moves_the_fit_by_ulps_not_by_sqrt_eps():
  # Two CPUs' exp and log may differ in the last bit, which is all that separates a study's
  # tables rebuilt on two machines. A fit that ranks nearly equal sums of squares places b only
  # to ~sqrt(eps) ~ 1e-8 (the golden-section search did: 3.6e-8 here); one that follows the
  # slope's sign stays within a few hundred ulps (1.8e-14 here). 1e-10 lies between the two.
  rng = np.random.default_rng(0)
  errors = curve(K, 0.45, 0.5, 0.4) + rng.normal(0, 0.02, (2000, len(K)))
  nudged = errors * (1 + 2 * np.finfo(np.float64).eps * rng.choice([-1, 1], errors.shape))
  ours, theirs = lc.fit(K, errors), lc.fit(K, nudged)
  curved = ours[:, 0] > 0  # a = 0 is flat in b: any b is the same curve
  assert curved.mean() > 0.9
  assert ours[curved] == pytest.approx(theirs[curved], rel=1e-10)
  target = ours[curved, 2] + 0.02
  assert lc.k_reaching(ours[curved], target) == pytest.approx(
    lc.k_reaching(theirs[curved], target), rel=1e-10
  )


def test_k_reaching_inverts_the_curve():
  params = np.array([[0.45, 0.5, 0.4], [0.3, 0.2, 0.5]])
  k = lc.k_reaching(params, np.array([0.43, 0.6]))
  assert lc.error_at(params[0], k[:1])[0] == pytest.approx(0.43)
  assert lc.error_at(params[1], k[1:])[0] == pytest.approx(0.6)
  assert lc.k_reaching(params[0], 0.39) == np.inf  # below the floor c = 0.4: never
  assert lc.k_reaching(np.array([0.0, 1.0, 0.4]), 0.5) == 0  # flat, already below 0.5


def test_the_expanded_interval_of_a_mean_is_students_t():
  # For a mean of n values with sample sd s, the bootstrap's sd is s/sqrt(n) * sqrt((n-1)/n);
  # samples at that sd's exact normal quantiles must give the t interval mean -+ t s/sqrt(n).
  n, mean, s = 5, 0.55, 0.03
  boot_sd = s / math.sqrt(n) * math.sqrt((n - 1) / n)
  samples = mean + boot_sd * scipy_stats.norm.ppf((np.arange(100_000) + 0.5) / 100_000)
  low, high = lc.expanded_interval(mean, samples, n)
  expected = scipy_stats.t.interval(0.95, n - 1, loc=mean, scale=s / math.sqrt(n))
  assert (low, high) == pytest.approx(expected, abs=1e-4 * s)
  low, high = lc.expanded_interval(
    10.0, np.r_[np.full(900, 10.0), np.full(100, np.inf)], n, log=True
  )
  assert low == pytest.approx(10.0) and high == np.inf  # 10% never: the top end opens


# A synthetic study like dataset_size_upstream: 5 seeds at its six sizes, per-run noise that
# shrinks with k (sd 5 points at 1 image per class, 1.2 at 505, as the real runs show).
TRANSFER, SCRATCH = (0.45, 0.5, 0.4), (0.35, 0.3, 0.5)
SD = 0.01 + 0.04 / np.sqrt(K)
SEEDS, REPLICATES, DRAWS = 5, 200, 300  # 300 resamples a replicate (the CLI uses 2000)


def _replicate(rng):
  """One synthetic sweep's answers (within 1 point; beats scratch at the largest size):
  the estimate and the interval of each, as `how_small.estimate` computes them."""
  values = np.concatenate(
    [curve(K, *p) + rng.normal(0, 1, (SEEDS, len(K))) * SD for p in (TRANSFER, SCRATCH)], 1
  )
  index = rng.integers(0, SEEDS, (DRAWS, SEEDS))
  means = np.concatenate([values.mean(0)[None], values[index].mean(1)])
  params = lc.fit(K, means[:, : len(K)])
  within = lc.k_reaching(params, lc.error_at(params, K[-1:])[:, 0] + 0.01)
  beats = lc.k_reaching(params, means[:, -1])  # scratch's mean error at its largest size
  return [(k[0], *lc.expanded_interval(k[0], k[1:], SEEDS, log=True)) for k in (within, beats)]


def test_the_interval_holds_the_true_k_95_percent_of_the_time_without_bias():
  truth = [
    lc.k_reaching(np.array(TRANSFER), curve(K[-1], *TRANSFER) + 0.01),  # ~225 per class
    lc.k_reaching(np.array(TRANSFER), curve(K[-1], *SCRATCH)),  # ~8.5 per class
  ]
  rng = np.random.default_rng(2026)
  answers = np.array([_replicate(rng) for _ in range(REPLICATES)])  # (R, 2, 3)
  # Coverage: the count of hits is Binomial(200, 0.95) if the intervals are right; accept the
  # central 99.73% of that law (3 sigma), from its exact quantiles.
  low = scipy_stats.binom.ppf(0.00135, REPLICATES, 0.95)
  high = scipy_stats.binom.isf(0.00135, REPLICATES, 0.95)
  for i, true_k in enumerate(truth):
    hits = np.sum((answers[:, i, 1] <= true_k) & (true_k <= answers[:, i, 2]))
    assert low <= hits <= high, (i, hits, low, high)
    # Bias of the estimate, on log k: at most 5% of k (a tenth of the intervals' typical
    # half-width here), allowing 3 standard errors of the Monte Carlo mean.
    log_error = np.log(answers[:, i, 0]) - np.log(true_k)
    assert abs(log_error.mean()) <= 0.05 + 3 * log_error.std() / math.sqrt(REPLICATES)
