"""The learning rates of Prasad et al.'s stepwise growth A -> B -> C -> D -> O (their eq. 9),
as pure functions, read as written.

How the text was read (each point is a choice where the text allows another):

* Eq. 7 updates with λ′ times the gradient *summed* over the batch, w <- w - λ′ Σ_j ∇ℓ_j.
  Our train step takes the gradient of the *mean* loss, so a summed-gradient rate λ′ on a
  batch of B examples is our lr λ′·B.
* Phase 1 (A, batch b) trains with the given λ (0.001 in the paper) as that rate: our lr λ·b.
* Eq. 9 gives the rate of every later phase i = 2..n (B, C, D and O alike) as
  λ′ = (λ/10) / (n·b), with n the *total number of subsets* (5), not the phase's batch
  multiple, and b the batch of phase A.
* "λ = λ′ for next i": the λ of phase i is the λ′ of phase i - 1, so eq. 9 is a recursion,
  λ_i = λ_{i-1} / (10·n·b), and each phase's rate is 10·n·b times smaller than the one before.

Read so, with b = 128 and n = 5 the rate drops 6,400-fold a phase: C, D and O barely move the
weights. That is the protocol as written; tests/test_phase_features.py computes the five rates by
hand, and configs/sweeps/stepwise_growth.py:paper runs it.
"""


def eq9_rates(lam: float, b: int, n: int) -> tuple[float, ...]:
  """λ′ of phases 1..n (summed-gradient rates): λ, then each the previous / (10·n·b)."""
  rates = [lam]
  for _ in range(n - 1):
    rates.append(rates[-1] / 10 / (n * b))
  return tuple(rates)


def learning_rates(lam: float, b: int, batch_multiples) -> tuple[float, ...]:
  """Our lr (on the mean loss) of each phase: its λ′ times its batch (multiple · b)."""
  rates = eq9_rates(lam, b, len(batch_multiples))
  return tuple(rate * multiple * b for rate, multiple in zip(rates, batch_multiples))
