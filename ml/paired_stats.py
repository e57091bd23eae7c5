"""Statistics for comparing two classifiers on the same images (pure Python, no Django, no scipy).

Both models answer every image of a set, so each image falls in one cell of a 2x2 table:

                          candidate right   candidate wrong
    active right                a                 b
    active wrong                c                 d

Only the discordant images (b, c) tell the models apart: the change in accuracy is (c - b) / n.
Judging the two accuracies as if they came from independent samples ignores that pairing and
needs far more images to see the same difference, which is why a fixed margin on two accuracies
read noise as a regression.

Two questions are asked of such a table, and each has its own test:

* **Is the candidate better?** (the drawn holdout) McNemar's test on the exact binomial: given
  m = b + c discordant images, under "no difference" each is equally likely to favour either
  model, so c ~ Binomial(m, 1/2). The exact one-sided p-value is P(X >= c); the gate uses its
  mid-p version, P(X > c) + P(X = c) / 2. Both come from the exact distribution (no normal
  approximation, which matters on holdouts of tens of drawings), but the exact conditional test
  is conservative on a discrete distribution: its true level is often far below the nominal one,
  so it misses real gains on small holdouts (6 gains and 0 losses: exact p = 1/64; 4 and 0:
  exact p = 1/16, mid-p 1/32). Fagerland, Lydersen & Laake (2013, BMC Medical Research
  Methodology 13:91) compared the McNemar variants and recommend the mid-p test: close to the
  nominal level in practice, and much more powerful than the exact one. A candidate promoted on
  a gain that was chance must still be shown not to lose MNIST, so the cheaper error is the
  right one to allow here.

* **Is the candidate not worse than the active model by more than a margin?** (MNIST test, a
  non-inferiority question). H0: the candidate loses at least `margin` (p_c - p_b <= -margin);
  H1: it loses less. The candidate passes only when H0 is rejected, so the burden of proof is on
  the candidate: the evidence must show it does not forget, rather than the gate waiting for
  evidence that it does. With the burden the other way round ("reject only when significantly
  worse than the margin"), a noisier or smaller test set would make a bad candidate *easier* to
  pass; here more images only ever make a good candidate easier to pass. McNemar's conditional
  test cannot carry a margin (under H0 the binomial's p depends on the unknown discordance rate),
  so this uses Tango's score test for the paired difference (Tango 1998, Statistics in Medicine
  17:891-908): the variance is taken at the restricted maximum-likelihood estimate under H0,
  which keeps its size close to nominal even with few discordant pairs, where the Wald interval
  is too narrow. The matching one-sided confidence bound (the smallest difference not rejected)
  is reported beside the p-value: the candidate passes exactly when that bound is above -margin.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from statistics import NormalDist

Alternative = str  # "two-sided", "greater" (candidate better), "less" (candidate worse)


@dataclass(frozen=True)
class PairedTable:
    """Counts of images by which model got them right (see the module docstring)."""

    a: int  # both right
    b: int  # only the active model right: the candidate's losses
    c: int  # only the candidate right: its gains
    d: int  # both wrong

    @classmethod
    def from_correct(cls, active: Collection[bool], candidate: Collection[bool]) -> PairedTable:
        """The table of two per-image correctness vectors over the same images, in order."""
        if len(active) != len(candidate):
            raise ValueError(f"not paired: {len(active)} and {len(candidate)} answers")
        counts = {(True, True): 0, (True, False): 0, (False, True): 0, (False, False): 0}
        for pair in zip(active, candidate, strict=True):
            counts[(bool(pair[0]), bool(pair[1]))] += 1
        return cls(
            a=counts[(True, True)],
            b=counts[(True, False)],
            c=counts[(False, True)],
            d=counts[(False, False)],
        )

    @property
    def n(self) -> int:
        return self.a + self.b + self.c + self.d

    @property
    def active_correct(self) -> int:
        return self.a + self.b

    @property
    def candidate_correct(self) -> int:
        return self.a + self.c

    @property
    def difference(self) -> float:
        """Candidate accuracy minus active accuracy, as a proportion."""
        return (self.c - self.b) / self.n if self.n else 0.0


def binomial_half_cdf(k: int, m: int) -> float:
    """P(X <= k) for X ~ Binomial(m, 1/2), in exact integer arithmetic, then one rounding."""
    if k < 0:
        return 0.0
    if k >= m:
        return 1.0
    total, term = 0, 1  # term = comb(m, i)
    for i in range(k + 1):
        total += term
        term = term * (m - i) // (i + 1)
    return total / (1 << m)


def mcnemar_exact(b: int, c: int, alternative: Alternative = "two-sided") -> float:
    """McNemar's exact (conditional binomial) p-value for b losses and c gains.

    "greater": H1 the candidate is better, p = P(X >= c); "less": H1 it is worse, p = P(X <= c);
    "two-sided": twice the smaller tail, at most 1. With no discordant pair, p = 1."""
    if b < 0 or c < 0:
        raise ValueError("counts must be >= 0")
    m = b + c
    if m == 0:
        return 1.0
    if alternative == "greater":
        return binomial_half_cdf(b, m)  # P(X >= c) = P(X <= b), the binomial being symmetric
    if alternative == "less":
        return binomial_half_cdf(c, m)
    if alternative == "two-sided":
        return min(1.0, 2 * binomial_half_cdf(min(b, c), m))
    raise ValueError(f"unknown alternative {alternative!r}")


def mcnemar_mid_p(b: int, c: int) -> float:
    """One-sided mid-p for "the candidate is better": P(X > c) + P(X = c) / 2, X ~ Bin(b + c,
    1/2). With no discordant pair, p = 1."""
    if b < 0 or c < 0:
        raise ValueError("counts must be >= 0")
    m = b + c
    if m == 0:
        return 1.0
    at_most_c, below_c = binomial_half_cdf(c, m), binomial_half_cdf(c - 1, m)
    return (1 - at_most_c) + (at_most_c - below_c) / 2


def _restricted_p_b(b: int, c: int, n: int, delta: float) -> float:
    """Maximum-likelihood p_b (the candidate's loss rate) when p_c - p_b = delta: the positive
    root of 2n x^2 - ((b + c)(1 - delta) - 2 delta (n - c)) x - b delta (1 - delta) = 0."""
    qa = 2 * n
    qb = -(b + c) * (1 - delta) + 2 * delta * (n - c)
    qc = -b * delta * (1 - delta)
    root = (-qb + math.sqrt(max(0.0, qb * qb - 4 * qa * qc))) / (2 * qa)
    return min(max(root, max(0.0, -delta)), (1 - delta) / 2)


def score_statistic(b: int, c: int, n: int, delta: float) -> float:
    """Tango's score statistic for H0: p_c - p_b = delta (large: the truth is above delta)."""
    p_b = _restricted_p_b(b, c, n, delta)
    variance = n * (2 * p_b + delta - delta * delta)
    if variance <= 0:
        # Only at the edges (delta = +-1 or a table that fits delta exactly with no spread).
        excess = c - b - n * delta
        return math.copysign(math.inf, excess) if excess else 0.0
    return (c - b - n * delta) / math.sqrt(variance)


@dataclass(frozen=True)
class NonInferiority:
    margin: float  # as a proportion: 0.003 is 0.3 points
    alpha: float
    p_value: float  # of H0 "the candidate loses at least `margin`"
    lower_bound: float  # one-sided (1 - alpha) confidence bound on p_c - p_b
    passed: bool  # H0 rejected: the loss is shown to be smaller than the margin


def non_inferiority(table: PairedTable, *, margin: float, alpha: float) -> NonInferiority:
    """Test H0: p_c - p_b <= -margin against H1: p_c - p_b > -margin (see the module docstring)."""
    if not 0 < alpha < 1:
        raise ValueError("alpha must be between 0 and 1")
    if not 0 <= margin < 1:
        raise ValueError("the margin is a proportion in [0, 1)")
    b, c, n = table.b, table.c, table.n
    if n == 0:
        return NonInferiority(margin, alpha, p_value=1.0, lower_bound=-1.0, passed=False)
    z = score_statistic(b, c, n, -margin)
    p_value = NormalDist().cdf(-z) if math.isfinite(z) else (0.0 if z > 0 else 1.0)
    return NonInferiority(
        margin,
        alpha,
        p_value=p_value,
        lower_bound=score_lower_bound(table, alpha=alpha),
        passed=p_value < alpha,
    )


def score_lower_bound(table: PairedTable, *, alpha: float) -> float:
    """The one-sided (1 - alpha) lower confidence bound on p_c - p_b: the smallest delta that the
    score test does not reject, found by bisection (the statistic falls as delta rises)."""
    b, c, n = table.b, table.c, table.n
    critical = NormalDist().inv_cdf(1 - alpha)
    low, high = -1.0, table.difference
    if score_statistic(b, c, n, low + 1e-12) <= critical:
        return -1.0
    for _ in range(100):
        middle = (low + high) / 2
        if score_statistic(b, c, n, middle) > critical:
            low = middle
        else:
            high = middle
    return high
