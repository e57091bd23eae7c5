"""Retraining from reviewed drawings, judged against the active model before it may replace it.

The training set is MNIST's training split plus every reviewed drawing (reviewed_label set, not
excluded) outside the frozen holdout (recognizer/drawings.py, which also says why a drawing's
stored model input is used as it is).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db.models import Max

from ml.data import load_split
from ml.drawn import EVAL_STYLES, drawn_set
from ml.evaluate import score
from ml.nondigits import nondigits_for_testing
from ml.paired_stats import PairedTable
from ml.predictor import Predictor
from ml.train import TrainConfig, train
from recognizer import model_registry
from recognizer.drawings import Drawings, reviewed_drawings, reviewed_submissions
from recognizer.models import ModelVersion
from recognizer.retrain_gate import CHECKS, DIGIT_CHECKS, GateResult, comparison_table, gate

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


class RetrainError(RuntimeError):
    """Retraining cannot start (nothing to learn from)."""


# --- Judging ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """One model's answers on the evaluation sets ("mnist", "holdout", "drawn"), and the shares it
    rejects as not digits (metrics[set]["rejected"], metrics["nondigits"])."""

    metrics: dict  # per set: accuracy, n, correct, per_class (JSON, kept on the version)
    right: dict[str, np.ndarray]  # per set: whether each image was answered right, in order


def _summary(predicted: np.ndarray, labels: np.ndarray) -> dict:
    if not len(labels):
        return {"accuracy": None, "n": 0, "correct": 0, "per_class": {}}
    result = score(predicted, labels)
    return {
        "accuracy": result["accuracy"],
        "n": result["n"],
        "correct": int((predicted == labels).sum()),
        "per_class": result["per_class"],
    }


@dataclass(frozen=True)
class EvaluationSets:
    """The images both models answer: rendered once per judgement, not once per model."""

    sets: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (uint8 N x 28 x 28, labels)
    nondigits: np.ndarray  # ml/nondigits.py's test generator


def evaluation_sets(*, holdout: Drawings, mnist_limit: int | None = None) -> EvaluationSets:
    """MNIST test (the first `mnist_limit` images when given), the drawn holdout, and the drawn
    evaluation (ml/drawn.py: the first RETRAIN_DRAWN_N test digits in every pen and scan style)."""
    test = load_split("test")
    per_style = min(settings.RETRAIN_DRAWN_N, mnist_limit or settings.RETRAIN_DRAWN_N)
    drawn = [drawn_set(test.images[:per_style], style) for style in EVAL_STYLES]
    return EvaluationSets(
        sets={
            "mnist": (test.images[:mnist_limit], test.labels[:mnist_limit]),
            "holdout": (holdout.images, holdout.labels),
            "drawn": (
                np.concatenate([images for images, _ in drawn]),
                np.concatenate([test.labels[kept] for _, kept in drawn]),
            ),
        },
        nondigits=nondigits_for_testing(settings.RETRAIN_NONDIGITS_N)[0],
    )


def evaluate(
    *,
    weights: Path | str,
    holdout: Drawings | None = None,
    mnist_limit: int | None = None,
    sets: EvaluationSets | None = None,
) -> Evaluation:
    """Answer every evaluation set through the one inference path (ml.predictor, calibrated as
    served). The same weights give the same answers: inference is deterministic on one machine."""
    if sets is None:
        sets = evaluation_sets(holdout=holdout or Drawings.empty(), mnist_limit=mnist_limit)
    predictor = Predictor(Path(weights), device="cpu")
    metrics: dict = {}
    right = {}
    for key, (images, labels) in sets.sets.items():
        if len(labels):
            answers = predictor.answer_images(images)
            predicted, rejected = answers.prediction, float((~answers.is_digit).mean())
        else:
            predicted, rejected = np.zeros(0, dtype=np.int64), 0.0
        metrics[key] = {**_summary(predicted, labels), "rejected": round(rejected, 4)}
        right[key] = predicted == labels
    outliers = predictor.answer_images(sets.nondigits)
    metrics["nondigits"] = {
        "n": len(sets.nondigits),
        "rejected": round(float((~outliers.is_digit).mean()), 4),
    }
    return Evaluation(metrics=metrics, right=right)


def evaluate_weights(
    *, weights: Path | str, holdout: Drawings, mnist_limit: int | None = None
) -> dict:
    return evaluate(weights=weights, holdout=holdout, mnist_limit=mnist_limit).metrics


def evaluate_version(*, version: ModelVersion, mnist_limit: int | None = None) -> dict:
    return evaluate_weights(
        weights=version.weights_path,
        holdout=reviewed_drawings(holdout=True),
        mnist_limit=mnist_limit,
    )


def points(summary: dict) -> float:
    """Accuracy in percentage points, from the exact counts."""
    return 100.0 * summary["correct"] / summary["n"] if summary["n"] else 0.0


@dataclass(frozen=True)
class Judgement:
    candidate: Evaluation
    active: Evaluation
    gate: GateResult


def judge(
    *,
    candidate_weights: Path | str,
    active_weights: Path | str,
    holdout: Drawings,
    mnist_limit: int | None = None,
) -> Judgement:
    """Both models answer the same images; the gate judges the paired answers, and the
    candidate's rejection rates (it must still turn away non-digits and accept digits)."""
    sets = evaluation_sets(holdout=holdout, mnist_limit=mnist_limit)
    candidate = evaluate(weights=candidate_weights, sets=sets)
    active = evaluate(weights=active_weights, sets=sets)
    tables = {
        key: PairedTable.from_correct(active.right[key], candidate.right[key])
        for key in active.right
    }
    decision = gate(
        tables=tables, checks=(*CHECKS, *DIGIT_CHECKS), extra={"candidate": candidate.metrics}
    )
    return Judgement(candidate=candidate, active=active, gate=decision)


# --- Retraining ---------------------------------------------------------------------------------


@dataclass
class RetrainOptions:
    epochs: int | None = None  # None: RETRAIN_EPOCHS (fine-tune) or ml/train.py's (from scratch)
    from_scratch: bool = False
    dry_run: bool = False
    seed: int = 1
    # Train on the first N MNIST training images only, and judge on the first N test images only:
    # for tests and smoke runs. The command always judges on the whole test split.
    mnist_limit: int | None = None
    eval_mnist_limit: int | None = None
    threads: int | None = None
    lr: float | None = None
    ema_decay: float | None = None
    command: str = "manage.py retrain"


@dataclass(frozen=True)
class RetrainResult:
    candidate: ModelVersion
    active: ModelVersion
    candidate_metrics: dict
    active_metrics: dict
    gate: GateResult
    promoted: bool
    table: str


def drawn_weight(*, n_mnist: int, n_drawings: int) -> int:
    """How many times each drawing is seen per epoch so that drawings make up RETRAIN_DRAWN_SHARE
    of it: a few hundred drawings beside 55,000 MNIST images would otherwise barely move the
    weights. Capped, so that a handful of drawings are not learnt by heart."""
    if n_drawings == 0:
        return 1
    share = settings.RETRAIN_DRAWN_SHARE
    wanted = share / (1 - share) * n_mnist / n_drawings
    return max(1, min(settings.RETRAIN_MAX_EXTRA_WEIGHT, math.ceil(wanted)))


def retrain(*, options: RetrainOptions, progress: Progress = log.info) -> RetrainResult:
    """Train a candidate, judge it beside the active version, record it, promote it if it passes
    the gate (never with dry_run). Returns what happened, with the comparison table."""
    active = model_registry.active_version()
    last_review = reviewed_submissions().aggregate(last=Max("reviewed_at"))["last"]
    training = reviewed_drawings(holdout=False)
    holdout = reviewed_drawings(holdout=True)
    if not len(training):
        raise RetrainError("no reviewed drawings to learn from: review some in the admin first")
    if len(holdout) < settings.RETRAIN_MIN_HOLDOUT:
        progress(
            f"warning: the holdout has {len(holdout)} drawings, fewer than "
            f"RETRAIN_MIN_HOLDOUT={settings.RETRAIN_MIN_HOLDOUT}: the gate will not promote"
        )

    defaults = TrainConfig()
    n_mnist = len(load_split("train")) - defaults.val_size
    if options.mnist_limit:
        n_mnist = min(n_mnist, options.mnist_limit)
    weight = drawn_weight(n_mnist=n_mnist, n_drawings=len(training))
    if options.from_scratch:
        epochs = options.epochs or defaults.epochs
        lr = options.lr or defaults.lr
        ema_decay = options.ema_decay or defaults.ema_decay
    else:
        epochs = options.epochs or settings.RETRAIN_EPOCHS
        lr = options.lr or settings.RETRAIN_LR
        ema_decay = options.ema_decay or settings.RETRAIN_EMA_DECAY
    out = model_registry.models_dir() / f".training-{uuid.uuid4().hex}.pth"
    config = TrainConfig(
        epochs=epochs,
        lr=lr,
        ema_decay=ema_decay,
        seed=options.seed,
        limit=options.mnist_limit,
        extra_weight=weight,
        init=None if options.from_scratch else Path(active.weights_path),
        out=out,
        evaluate_test=False,  # judged below, beside the active version, on the same images
        threads=options.threads or settings.RETRAIN_THREADS or None,
    )
    start = "from scratch" if options.from_scratch else f"from {active.name}"
    progress(
        f"training {start}: {n_mnist} MNIST images + {len(training)} drawings "
        f"(each seen {weight}x per epoch), {epochs} epochs at lr {lr:g}, EMA {ema_decay:g}; "
        f"holdout {len(holdout)} drawings"
    )
    started = time.monotonic()

    def on_epoch(epoch: int, total: int, entry: dict) -> None:
        progress(
            f"epoch {epoch}/{total}  loss {entry['loss']:.4f}  "
            f"val {100 * entry['val_accuracy']:.2f}%  ({time.monotonic() - started:.0f} s)"
        )

    try:
        card = train(config, progress=on_epoch, extra=training.split, show_bar=False)
        progress("evaluating the candidate and the active version on the same images")
        judgement = judge(
            candidate_weights=out,
            active_weights=active.weights_path,
            holdout=holdout,
            mnist_limit=options.eval_mnist_limit,
        )
        decision = judgement.gate
        candidate_metrics, active_metrics = judgement.candidate.metrics, judgement.active.metrics
        trained_on = {
            "mnist_images": card["train_images"],
            "drawings": len(training),
            "drawing_weight": weight,
            "holdout_drawings": len(holdout),
            "holdout_percent": settings.HOLDOUT_PERCENT,
            "last_reviewed_at": last_review.isoformat() if last_review else None,
            "init": None if options.from_scratch else active.name,
            "epochs": epochs,
            "lr": lr,
            "ema_decay": ema_decay,
            "seed": options.seed,
            "command": options.command,
            "training_seconds": card["training_seconds"],
            "history": card["history"],
        }
        metrics = {
            **candidate_metrics,
            "compared_with": {"version": active.name, **active_metrics},
            "gate": decision.as_metrics(),
            "dry_run": options.dry_run,
        }
        candidate = model_registry.register_candidate(
            weights=out, trained_on=trained_on, metrics=metrics
        )
    finally:
        out.unlink(missing_ok=True)
        out.with_suffix(".json").unlink(missing_ok=True)

    promoted = decision.promote and not options.dry_run
    replaced = model_registry.active_version()
    if promoted and replaced.pk != active.pk:
        # Someone promoted or rolled back during training: the comparison is with the wrong model.
        promoted = False
    if promoted:
        candidate = model_registry.promote(name=candidate.name)
    table = comparison_table(
        active_name=active.name, candidate_name=candidate.name, result=decision
    )
    if promoted:
        verdict = f"promoted {candidate.name}: it answers from now on"
    elif decision.promote and options.dry_run:
        verdict = f"{candidate.name} passes the gate; --dry-run: not promoted"
    elif decision.promote:
        verdict = (
            f"{candidate.name} passes the gate but {replaced.name} became active meanwhile: "
            "not promoted (run `manage.py retrain` again, or promote it by hand)"
        )
    else:
        verdict = f"{candidate.name} rejected, {active.name} stays active"
    progress(f"{table}\n{verdict}")
    return RetrainResult(
        candidate=candidate,
        active=active,
        candidate_metrics=candidate_metrics,
        active_metrics=active_metrics,
        gate=decision,
        promoted=promoted,
        table=table,
    )
