"""Retraining from reviewed drawings, judged against the active model before it may replace it.

The training set is MNIST's training split plus every reviewed drawing (reviewed_label set, not
excluded) outside the holdout. A drawing's `model_input` is used as it is: it is the output of
ml/preprocess.py for that drawing, made once at submit time by the same code that serves, and it
is the 28x28 image the reviewer saw beside the drawing when labelling it. Running the
preprocessing again on the original bytes would give the same pixels at a cost, and different ones
only after the preprocessing itself changed, which would call for a new version of it, not a quiet
rewrite of old inputs.

The holdout is frozen by id: a drawing is in it when a hash of its UUID, mod 100, is below
HOLDOUT_PERCENT. It never depends on when a retrain runs or on what else is in the database, so a
holdout drawing is never trained on by any version (as long as HOLDOUT_PERCENT stays the same).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db.models import Max, QuerySet

from ml.data import Split, load_split
from ml.drawn import EVAL_STYLES, drawn_set
from ml.evaluate import score
from ml.nondigits import nondigits_for_testing
from ml.paired_stats import PairedTable
from ml.predictor import Predictor
from ml.train import TrainConfig, train
from recognizer import model_registry
from recognizer.models import ModelVersion, Submission
from recognizer.retrain_gate import CHECKS, DIGIT_CHECKS, GateResult, comparison_table, gate

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


class RetrainError(RuntimeError):
    """Retraining cannot start (nothing to learn from)."""


# --- The data -----------------------------------------------------------------------------------


def in_holdout(submission_id: uuid.UUID | str) -> bool:
    """Whether a drawing belongs to the frozen holdout. Hashed rather than read off the UUID so
    that time-ordered ids (UUIDv1/v7) spread as evenly as random ones."""
    raw = uuid.UUID(str(submission_id)).bytes
    bucket = int.from_bytes(hashlib.sha256(raw).digest()[:8], "big") % 100
    return bucket < settings.HOLDOUT_PERCENT


@dataclass(frozen=True)
class Drawings:
    ids: list[str]
    images: np.ndarray  # N x 28 x 28 uint8, white on black, as the model sees them
    labels: np.ndarray  # N int64

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def split(self) -> Split:
        return Split(self.images, self.labels)

    @classmethod
    def empty(cls) -> Drawings:
        return cls([], np.zeros((0, 28, 28), dtype=np.uint8), np.zeros(0, dtype=np.int64))


def reviewed_submissions() -> QuerySet:
    """Submissions a reviewer gave a label to and did not exclude, oldest first."""
    return Submission.objects.filter(
        reviewed_label__isnull=False, excluded=False, model_input__isnull=False
    ).order_by("created_at", "id")


def reviewed_drawings(*, holdout: bool | None) -> Drawings:
    """The reviewed drawings: only the holdout (True), only the training part (False), or all."""
    ids, images, labels = [], [], []
    rows = reviewed_submissions().values_list("id", "reviewed_label", "model_input")
    for submission_id, label, model_input in rows.iterator(chunk_size=500):
        if holdout is not None and in_holdout(submission_id) != holdout:
            continue
        pixels = bytes(model_input)
        if len(pixels) != 28 * 28:
            continue
        ids.append(str(submission_id))
        images.append(np.frombuffer(pixels, dtype=np.uint8).reshape(28, 28))
        labels.append(label)
    return Drawings(
        ids=ids,
        images=np.stack(images) if images else np.zeros((0, 28, 28), dtype=np.uint8),
        labels=np.asarray(labels, dtype=np.int64),
    )


def export_drawings(*, path: Path, include_holdout: bool = False) -> int:
    """Write the reviewed drawings as .npz (images N x 28 x 28 uint8, labels, ids), the format
    `python -m ml.train --extra` reads. The holdout is left out unless asked for, so a model
    trained on the file can still be judged on it."""
    drawings = reviewed_drawings(holdout=None if include_holdout else False)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # a file object: np.savez would append .npz to a bare name
        np.savez_compressed(
            f, images=drawings.images, labels=drawings.labels, ids=np.asarray(drawings.ids)
        )
    return len(drawings)


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
