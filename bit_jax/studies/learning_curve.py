"""A learning curve, error = a * k**-b + c at k images per class, and the k it says a target
accuracy needs, with bootstrap intervals over seeds.

* `fit(k, error)`: least squares over the last axis, for any number of data sets at once
  (leading axes), with a >= 0 and c >= 0 (the error falls with k towards a floor that is not
  negative) and b in [B_MIN, B_MAX]. For a fixed b the curve is linear in (a, c), so those two
  are closed-form; b is the best of a log-spaced grid, refined by bisection on the sign of the
  profile's slope in b. This variable projection has no starting value to choose and cannot
  fail to converge, which is what a bootstrap of thousands of fits needs; tests check it
  against scipy.optimize.curve_fit. The slope rather than the sum of squares decides each
  step because a minimum is flat: comparing two nearly equal sums (golden-section search)
  places b only to about sqrt(float64 eps) ~ 1e-8, so one ulp of difference in exp or log
  between two CPUs moved a study's answers in the 8th digit. The slope's sign places b to
  a few ulps. With only two sizes the three parameters are not identified, so
  c is fixed at 0 (a pure power law through the two points) and the caller says so.
* `k_reaching(params, error)`: the k at which the curve comes down to `error`; inf where its
  floor c is above it (never), 0 where the curve is flat and already there.
* `expanded_interval(point, samples, n)`: a 95% interval from bootstrap samples of a statistic
  of n seeds. The plain percentile interval covers too little with 5 seeds (the bootstrap
  sees a spread sqrt((n-1)/n) too small and normal tails where Student's are due); this one
  takes the spread on each side from the quantiles at -1 and +1 sd (15.9%, 84.1%) and
  stretches it by t(0.975, n-1) * sqrt(n / (n-1)). For a statistic linear in the seeds (a
  mean) that is exactly Student's t interval, which the rest of the report uses; the side
  quantiles keep the asymmetry of a curved statistic and let an infinite k (a target never
  reached) open one side only. It is never narrower than the plain percentile interval
  (2.5%, 97.5%): where more than 2.5% of the resamples never reach the target, so does the
  interval's top end.

Pure numpy/scipy functions; `bit_jax/studies/how_small.py` reads sweeps and calls them.
"""

import math

import numpy as np
from scipy import stats as scipy_stats

B_MIN, B_MAX = 0.01, 4.0
_GRID = np.geomspace(B_MIN, B_MAX, 81)
_SIDE = scipy_stats.norm.cdf([-1.0, 1.0])  # the quantiles one sd either side of the middle
_TAILS = (0.025, 0.975)
for _constant in (_GRID, _SIDE):  # shared by every call: read-only, so none can change it
  _constant.flags.writeable = False


def _linear(x, y, floor: bool):
  """Least-squares a >= 0, c >= 0 of y ~ a x + c over the last axis (c = 0 without `floor`):
  the unconstrained optimum if it is feasible, else the best of the two edges a = 0 and
  c = 0 (where a convex problem's constrained optimum lies). Returns a, c, sse."""

  def sse(a, c):
    return np.sum((y - a * x - c) ** 2, axis=-1)

  through_zero = np.maximum(np.sum(x * y, -1) / np.sum(x * x, -1), 0.0)  # the edge c = 0
  if not floor:
    return through_zero, np.zeros_like(through_zero), sse(through_zero[..., None], 0.0)
  xm, ym = x.mean(-1, keepdims=True), y.mean(-1, keepdims=True)
  var = np.sum((x - xm) ** 2, -1)
  slope = np.sum((x - xm) * (y - ym), -1) / np.where(var > 0, var, 1.0)
  intercept = ym[..., 0] - slope * xm[..., 0]
  flat = np.maximum(ym[..., 0], 0.0)  # the edge a = 0
  candidates = [
    (slope, intercept, (slope >= 0) & (intercept >= 0) & (var > 0)),
    (np.zeros_like(flat), flat, True),
    (through_zero, np.zeros_like(flat), True),
  ]
  best_a, best_c, best_sse = None, None, None
  for a, c, ok in candidates:
    err = np.where(ok, sse(a[..., None], c[..., None]), np.inf)
    if best_sse is None:
      best_a, best_c, best_sse = a, c, err
    else:
      better = err < best_sse
      best_a, best_c = np.where(better, a, best_a), np.where(better, c, best_c)
      best_sse = np.where(better, err, best_sse)
  return best_a, best_c, best_sse


def _profile(log_k, error, b, floor):
  """a, c and the residual sum of squares of the best curve with exponent b (..., )."""
  return _linear(np.exp(-b[..., None] * log_k), error, floor)


def _slope(log_k, error, b, floor):
  """The sign-carrying half of d(sse)/db of the best curve with exponent b (..., ). Where a
  and c are optimal for b, their own change does not move the sum to first order (Danskin),
  so the derivative is that of the residuals alone: 2 a sum(r log k k**-b)."""
  x = np.exp(-b[..., None] * log_k)
  a, c, _ = _linear(x, error, floor)
  residual = error - a[..., None] * x - c[..., None]
  return a * np.sum(residual * log_k * x, axis=-1)


def fit(k, error) -> np.ndarray:
  """[a, b, c] (..., 3) of the least-squares curve through `error` (..., K) at sizes `k` (K,)."""
  log_k = np.log(np.asarray(k, np.float64))
  error = np.asarray(error, np.float64)
  floor = len(log_k) > 2
  grid = np.broadcast_to(_GRID, error.shape[:-1] + _GRID.shape)
  sse = _profile(log_k, error[..., None, :], grid, floor)[2]
  best = np.argmin(sse, axis=-1)
  # Bisection on log b inside the grid cells either side of the best point: 56 halvings take
  # the two cells (0.15 in log b) below one ulp. A slope that is negative throughout (or
  # positive) ends at the cell's edge, which for the grid's ends is the bound B_MAX (B_MIN).
  low = np.log(_GRID[np.maximum(best - 1, 0)])
  high = np.log(_GRID[np.minimum(best + 1, len(_GRID) - 1)])
  for _ in range(56):
    middle = (low + high) / 2
    falling = _slope(log_k, error, np.exp(middle), floor) < 0  # the minimum lies above
    low, high = np.where(falling, middle, low), np.where(falling, high, middle)
  b = np.exp((low + high) / 2)
  a, c, _ = _profile(log_k, error, b, floor)
  return np.stack([a, b, c], axis=-1)


def error_at(params, k) -> np.ndarray:
  """The curve's error at sizes k: params (..., 3), k (M,) -> (..., M)."""
  a, b, c = (params[..., i, None] for i in range(3))
  return a * np.asarray(k, np.float64) ** -b + c


def k_reaching(params, error) -> np.ndarray:
  """The k where the curve (..., 3) falls to `error` (...): ((error - c) / a)**(-1 / b)."""
  a, b, c = params[..., 0], params[..., 1], params[..., 2]
  above_floor = np.asarray(error - c, np.float64)
  with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
    k = (above_floor / a) ** (-1.0 / b)
  k = np.where(above_floor <= 0, np.inf, k)  # the floor is above the target: never
  return np.where((a <= 0) & (above_floor > 0), 0.0, k)  # flat and already there


def expanded_interval(point, samples, n: int, log: bool = False) -> tuple:
  """(low, high) of the 95% interval (see the module) around `point` (...) from bootstrap
  `samples` (B, ...) of a statistic of n seeds; `log` works on log(value) (for k > 0)."""
  if n < 2:
    return np.full(np.shape(point), np.nan), np.full(np.shape(point), np.nan)
  stretch = scipy_stats.t.ppf(0.975, n - 1) * math.sqrt(n / (n - 1))
  to, back = (np.log, np.exp) if log else (lambda v: v, lambda v: v)
  with np.errstate(divide='ignore', invalid='ignore'):
    centre, values = to(np.asarray(point, np.float64)), to(np.asarray(samples, np.float64))
    below, above = np.quantile(values, _SIDE, axis=0, method='inverted_cdf')
    tail_low, tail_high = np.quantile(values, _TAILS, axis=0, method='inverted_cdf')
    low = np.minimum(centre - stretch * np.maximum(centre - below, 0.0), tail_low)
    high = np.maximum(centre + stretch * np.maximum(above - centre, 0.0), tail_high)
  # An infinite point (never reached) has an infinite upper end, whatever the samples say.
  high = np.where(np.isposinf(centre), np.inf, np.nan_to_num(high, nan=np.inf))
  low = np.nan_to_num(low, nan=-np.inf)
  with np.errstate(over='ignore'):  # exp of an infinite end: the infinite k it stands for
    return back(low), back(high)
