"""The retrain gate: a list of named checks over the answers both models give to the same images.

The candidate and the active version each answer every image of each evaluation set (MNIST test,
the drawn holdout). Per set, the gate gets a `PairedTable` (ml/paired_stats.py): how many images
both got right (a), only the active one (b, the candidate's losses), only the candidate (c, its
gains), neither (d). Judging b and c rather than two accuracies is what tells a real change from
the handful of images any retrain flips both ways.

The checks, in order (all must pass):

- `holdout size`: the drawn holdout has at least RETRAIN_MIN_HOLDOUT drawings;
- `holdout gain`: the candidate is better on the drawn holdout, by McNemar's one-sided mid-p test
  (exact binomial) at RETRAIN_SIGNIFICANCE;
- `MNIST non-inferiority`: the candidate is shown to lose less than RETRAIN_MNIST_MARGIN_POINTS on
  MNIST test (Tango's score test; ml/paired_stats.py says why this test and why this direction).

Adding a check (a non-digit rejection rate, a drawn-style evaluation, calibration): write a
function `GateInput -> CheckResult`, give it a name, and append it to `CHECKS` (or pass `checks=`
to `gate`). A check that needs another evaluation set reads `inputs.tables[<set>]`, once the
evaluation (recognizer/retraining.py: `evaluate_pairs`) adds that set; one that needs other
figures reads `inputs.extra`. Nothing else changes: the verdict, the table, the metrics stored on
the version and the admin's column all come from the list of results.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from ml.paired_stats import PairedTable, mcnemar_exact, mcnemar_mid_p, non_inferiority

DATASETS = (("mnist", "MNIST test"), ("holdout", "drawn holdout"), ("drawn", "drawn evaluation"))


@dataclass(frozen=True)
class GateInput:
    tables: Mapping[str, PairedTable]  # evaluation set -> paired counts
    significance: float
    mnist_margin_points: float
    min_holdout: int
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    reason: str  # one line for people: the figures and what they mean
    details: dict[str, Any] = field(default_factory=dict)  # JSON-safe: p-values, bounds

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "reason": self.reason, **self.details}


Check = Callable[[GateInput], CheckResult]


def p_text(p: float) -> str:
    """A p-value people can read: four decimals, or two significant digits when smaller."""
    return f"{p:.4f}" if p >= 0.001 else f"{p:.2g}"


def points(correct: int, n: int) -> float:
    return 100.0 * correct / n if n else 0.0


def check_holdout_size(inputs: GateInput) -> CheckResult:
    n = inputs.tables["holdout"].n
    ok = n >= inputs.min_holdout
    relation = ">=" if ok else "<"
    reason = f"{n} drawings {relation} {inputs.min_holdout} required (RETRAIN_MIN_HOLDOUT)"
    if not ok:
        reason = f"the drawn holdout has {n} drawings, fewer than {inputs.min_holdout}"
    return CheckResult("holdout size", ok, reason, {"n": n, "required": inputs.min_holdout})


def check_holdout_gain(inputs: GateInput) -> CheckResult:
    table = inputs.tables["holdout"]
    p = mcnemar_mid_p(table.b, table.c)
    exact = mcnemar_exact(table.b, table.c, "greater")
    ok = table.n > 0 and p < inputs.significance
    change = 100 * table.difference
    verdict = "significant" if ok else "not significant"
    reason = (
        f"{change:+.2f} points, gained {table.c} lost {table.b}: McNemar one-sided mid-p "
        f"= {p_text(p)} (exact p = {p_text(exact)}), {verdict} at {inputs.significance:g}"
    )
    details = {"b": table.b, "c": table.c, "p_value": p, "exact_p_value": exact}
    return CheckResult("holdout gain", ok, reason, details)


def check_mnist_non_inferiority(inputs: GateInput) -> CheckResult:
    table = inputs.tables["mnist"]
    margin = inputs.mnist_margin_points
    test = non_inferiority(table, margin=margin / 100, alpha=inputs.significance)
    bound = 100 * test.lower_bound
    confidence = 100 * (1 - inputs.significance)
    shown = "shown" if test.passed else "not shown"
    reason = (
        f"{100 * table.difference:+.2f} points, gained {table.c} lost {table.b}: loss under "
        f"{margin:g} points {shown} (score test p = {p_text(test.p_value)}; one-sided "
        f"{confidence:g}% bound {bound:+.3f} points)"
    )
    details = {"b": table.b, "c": table.c, "p_value": test.p_value, "lower_bound_points": bound}
    return CheckResult("MNIST non-inferiority", test.passed, reason, details)


CHECKS: tuple[Check, ...] = (check_holdout_size, check_holdout_gain, check_mnist_non_inferiority)


# --- "Not a digit" (issue 14): the candidate must keep what the active weights promise. ----------
# These read the candidate's own rates from `inputs.extra["candidate"]` (recognizer/retraining.py's
# Evaluation.metrics) and the paired answers on the drawn evaluation from `inputs.tables["drawn"]`.


def check_drawn_non_inferiority(inputs: GateInput) -> CheckResult:
    """The drawn evaluation (pen-drawn and scanned MNIST test digits) under the MNIST margin."""
    table = inputs.tables["drawn"]
    margin = inputs.mnist_margin_points
    test = non_inferiority(table, margin=margin / 100, alpha=inputs.significance)
    shown = "shown" if test.passed else "not shown"
    reason = (
        f"{100 * table.difference:+.2f} points, gained {table.c} lost {table.b}: loss under "
        f"{margin:g} points {shown} (score test p = {test.p_value:.4f})"
    )
    details = {"b": table.b, "c": table.c, "p_value": test.p_value}
    return CheckResult("drawn non-inferiority", test.passed, reason, details)


def check_nondigits_rejected(inputs: GateInput) -> CheckResult:
    """At least RETRAIN_MIN_NONDIGIT_REJECTION of the test non-digits turned away."""
    rate = inputs.extra["candidate"]["nondigits"]["rejected"]
    floor = settings.RETRAIN_MIN_NONDIGIT_REJECTION
    ok = rate >= floor
    relation = ">=" if ok else "<"
    reason = f"{100 * rate:.1f}% of test non-digits rejected ({relation} {100 * floor:g}%)"
    return CheckResult("non-digits rejected", ok, reason, {"rejected": rate, "required": floor})


def check_digits_accepted(inputs: GateInput) -> CheckResult:
    """At most RETRAIN_MAX_MNIST_REJECTION of MNIST test and RETRAIN_MAX_DRAWN_REJECTION of the
    drawn evaluation called "not a digit"."""
    metrics = inputs.extra["candidate"]
    limits = {
        "mnist": settings.RETRAIN_MAX_MNIST_REJECTION,
        "drawn": settings.RETRAIN_MAX_DRAWN_REJECTION,
    }
    rates = {key: metrics[key]["rejected"] for key in limits}
    ok = all(rates[key] <= limits[key] for key in limits)
    reason = ", ".join(
        f"{key} {100 * rates[key]:.2f}% rejected (at most {100 * limits[key]:g}%)" for key in limits
    )
    return CheckResult("digits accepted", ok, reason, {"rejected": rates, "limits": limits})


DIGIT_CHECKS: tuple[Check, ...] = (
    check_drawn_non_inferiority,
    check_nondigits_rejected,
    check_digits_accepted,
)


@dataclass(frozen=True)
class GateResult:
    promote: bool
    checks: list[CheckResult]
    tables: Mapping[str, PairedTable]
    significance: float
    mnist_margin_points: float

    @property
    def reasons(self) -> list[str]:
        return [f"{c.name}: {'pass' if c.passed else 'FAIL'}: {c.reason}" for c in self.checks]

    @property
    def holdout_gain(self) -> float:
        """Points, candidate minus active."""
        return round(100 * self.tables["holdout"].difference, 4)

    @property
    def mnist_change(self) -> float:
        return round(100 * self.tables["mnist"].difference, 4)

    def as_metrics(self) -> dict[str, Any]:
        """What ModelVersion.metrics["gate"] keeps (JSON), and the admin shows."""
        return {
            "promote": self.promote,
            "significance": self.significance,
            "mnist_margin_points": self.mnist_margin_points,
            "checks": [c.as_dict() for c in self.checks],
            "reasons": self.reasons,
            "paired": {k: {"a": t.a, "b": t.b, "c": t.c, "d": t.d} for k, t in self.tables.items()},
        }


def gate(
    *,
    tables: Mapping[str, PairedTable],
    checks: tuple[Check, ...] = CHECKS,
    significance: float | None = None,
    mnist_margin_points: float | None = None,
    min_holdout: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> GateResult:
    """Run every check (all of them, so the reasoning is complete) and promote if all pass."""
    inputs = GateInput(
        tables=tables,
        significance=settings.RETRAIN_SIGNIFICANCE if significance is None else significance,
        mnist_margin_points=(
            settings.RETRAIN_MNIST_MARGIN_POINTS
            if mnist_margin_points is None
            else mnist_margin_points
        ),
        min_holdout=settings.RETRAIN_MIN_HOLDOUT if min_holdout is None else min_holdout,
        extra=extra or {},
    )
    results = [check(inputs) for check in checks]
    return GateResult(
        promote=all(r.passed for r in results),
        checks=results,
        tables=tables,
        significance=inputs.significance,
        mnist_margin_points=inputs.mnist_margin_points,
    )


def comparison_table(*, active_name: str, candidate_name: str, result: GateResult) -> str:
    """Both accuracies and the discordant pairs per set, then each check's verdict and figures."""
    rows = [
        (
            "",
            f"{active_name} (active)",
            f"{candidate_name} (candidate)",
            "change",
            "lost b",
            "gained c",
        )
    ]
    for key, title in DATASETS:
        if key not in result.tables:
            continue
        t = result.tables[key]
        empty = not t.n
        rows.append(
            (
                f"{title} ({t.n})",
                "-" if empty else f"{points(t.active_correct, t.n):.2f}%",
                "-" if empty else f"{points(t.candidate_correct, t.n):.2f}%",
                "-" if empty else f"{100 * t.difference:+.2f}",
                str(t.b),
                str(t.c),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            text.ljust(widths[i]) if i == 0 else text.rjust(widths[i]) for i, text in enumerate(row)
        ).rstrip()
        for row in rows
    ]
    lines.append(
        f"gate (significance {result.significance:g}, "
        f"MNIST margin {result.mnist_margin_points:g} points):"
    )
    lines += [f"  {reason}" for reason in result.reasons]
    return "\n".join(lines)
