"""Model versions: which weights answer, how a new version is registered, promoted or rolled back.

Exactly one version is active (a unique constraint on the row says so, not only this code). The
shipped weights (settings.MODEL_WEIGHTS) become version "v1" on first use rather than in a data
migration: a migration runs before the weights may exist (a fresh checkout, CI's `migrate`), it
would hash a file that can still change afterwards, and tests that flush the database would lose
the row. Registering on first use is idempotent (the name is unique, `get_or_create` takes the
other process's row when two race) and needs nothing from an operator.

Every version's weights are copied into settings.MODELS_DIR under a content-addressed name
(`<name>-<sha12>.pth`), so a version name always means the same bytes, two databases (a test run
and a development server) can share the folder without overwriting each other, and replacing
ml/digit_model.pth never changes what an existing version answers.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from ml.checkpoint import file_sha256
from recognizer.models import ModelVersion, Submission

log = logging.getLogger(__name__)

SHIPPED_VERSION = "v1"


class RegistryError(RuntimeError):
    """Something an operator must fix (a missing weights file, an unknown version)."""


def models_dir() -> Path:
    folder = Path(settings.MODELS_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def store_weights(*, source: Path, name: str) -> tuple[Path, str]:
    """Copy `source` (and its model card, when there is one) into the models folder under a
    content-addressed name; returns (path, sha256). Safe to run twice or in two processes at once:
    each writes a private temporary file and renames it over an identical one."""
    sha256 = file_sha256(source)
    target = models_dir() / f"{name}-{sha256[:12]}.pth"
    pairs = [(source, target), (source.with_suffix(".json"), target.with_suffix(".json"))]
    for src, dst in pairs:
        if not src.exists() or (dst.exists() and src.resolve() == dst.resolve()):
            continue
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".tmp-", suffix=dst.suffix)
        os.close(fd)
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the file from workers run as others
        os.replace(tmp, dst)
    return target, sha256


def _card(weights: Path) -> dict:
    card = weights.with_suffix(".json")
    try:
        return json.loads(card.read_text())
    except (OSError, ValueError):
        return {}


def register_shipped_model() -> ModelVersion:
    """Register settings.MODEL_WEIGHTS as the active "v1" unless it already is registered."""
    existing = ModelVersion.objects.filter(name=SHIPPED_VERSION).first()
    if existing is not None:
        return existing
    shipped = Path(settings.MODEL_WEIGHTS)
    if not shipped.exists():
        raise RegistryError(
            f"no model version is registered and the shipped weights {shipped} are missing: "
            "train them (python -m ml.train) or set MODEL_WEIGHTS"
        )
    weights, sha256 = store_weights(source=shipped, name=SHIPPED_VERSION)
    card = _card(shipped)
    metrics = {}
    if "test" in card:
        test = card["test"]
        metrics["mnist"] = {
            "accuracy": test.get("accuracy"),
            "n": test.get("n"),
            "per_class": test.get("per_class"),
        }
    with transaction.atomic():
        version, created = ModelVersion.objects.get_or_create(
            name=SHIPPED_VERSION,
            defaults={
                "weights_path": str(weights),
                "sha256": sha256,
                "status": ModelVersion.Status.ACTIVE,
                "activated_at": timezone.now(),
                "trained_on": {
                    "source": f"shipped weights {shipped}",
                    "mnist_images": card.get("train_images"),
                    "drawings": card.get("extra_drawings", 0),
                    "command": "python -m ml.train",
                    "seed": card.get("recipe", {}).get("seed"),
                    "epochs": card.get("epochs"),
                },
                "metrics": metrics,
            },
        )
    if created:
        log.info("registered the shipped weights %s as %s", shipped, version.name)
    return version


def restore_shipped_weights(*, name: str, weights_path: str, sha256: str) -> bool:
    """Copy the shipped weights back to a version's missing file, when they are its bytes.

    A database kept while the models folder was lost (a container recreated without its
    volume, a benchmark's fresh folder beside a reused database) would otherwise leave every
    worker unable to load even v1, and every drawing unanswered. Only the shipped file can be
    restored, only to this process's MODELS_DIR, and only when its sha256 is the registered one;
    True when the file is there afterwards."""
    target = Path(weights_path)
    if target.exists():
        return True
    shipped = Path(settings.MODEL_WEIGHTS)
    if target.parent != models_dir() or not shipped.exists() or file_sha256(shipped) != sha256:
        return False
    restored, _ = store_weights(source=shipped, name=name)
    log.warning("%s's weights were missing from %s: restored from %s", name, target, shipped)
    return restored == target


def active_version() -> ModelVersion:
    """The version that answers now; the shipped weights on the very first call."""
    version = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first()
    if version is not None:
        return version
    version = register_shipped_model()
    if version.status != ModelVersion.Status.ACTIVE:
        version = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first()
        if version is None:
            raise RegistryError("no model version is active: run `manage.py promote VERSION`")
    return version


def active_row() -> tuple[str, str, str] | None:
    """(name, weights_path, sha256) of the active version: one read of the partial unique index,
    cheap enough for every task. None when nothing is registered yet.

    The SQL is compiled once per process (and database vendor): building it through the ORM on
    every batch cost more CPU than the query, about a tenth of the interactive worker's."""
    sql, params = _active_row_sql(connection.vendor)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return None if row is None else (row[0], row[1], row[2])


@functools.cache
def _active_row_sql(vendor: str) -> tuple[str, tuple]:
    queryset = (
        ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE)
        .order_by()
        .values_list("name", "weights_path", "sha256")[:1]
    )
    return queryset.query.sql_with_params()


def get_version(*, name: str) -> ModelVersion:
    version = ModelVersion.objects.filter(name=name).first()
    if version is None:
        known = ", ".join(ModelVersion.objects.values_list("name", flat=True)) or "none"
        raise RegistryError(f"no model version {name!r} (known: {known})")
    return version


def next_version_name() -> str:
    """v2, v3, ...: one more than the highest vN registered."""
    numbers = [
        int(name[1:])
        for name in ModelVersion.objects.filter(name__regex=r"^v[0-9]+$").values_list(
            "name", flat=True
        )
    ]
    return f"v{max(numbers, default=1) + 1}"


def register_candidate(
    *, weights: Path, trained_on: dict, metrics: dict, name: str | None = None
) -> ModelVersion:
    """Record freshly trained weights as a candidate under the next free name (or `name`).

    The weights are moved into the models folder under their content-addressed name. When two
    retrains finish at once, the second one to insert gets an IntegrityError on the name and
    takes the next one."""
    for _ in range(5):
        chosen = name or next_version_name()
        target, sha256 = store_weights(source=weights, name=chosen)
        try:
            with transaction.atomic():
                version = ModelVersion.objects.create(
                    name=chosen,
                    weights_path=str(target),
                    sha256=sha256,
                    status=ModelVersion.Status.CANDIDATE,
                    trained_on=trained_on,
                    metrics=metrics,
                )
        except IntegrityError:
            target.unlink(missing_ok=True)
            target.with_suffix(".json").unlink(missing_ok=True)
            if name:
                raise
            continue
        if weights.resolve() != target.resolve():
            weights.unlink(missing_ok=True)
            weights.with_suffix(".json").unlink(missing_ok=True)
        return version
    raise RegistryError("could not find a free version name")


@transaction.atomic
def promote(*, name: str) -> ModelVersion:
    """Make `name` the one active version and retire the one it replaces, in one transaction."""
    # Lock both rows first: two promotions at once serialise here instead of failing on the
    # one-active constraint halfway.
    rows = list(
        ModelVersion.objects.select_for_update()
        .filter(Q(name=name) | Q(status=ModelVersion.Status.ACTIVE))
        .order_by("pk")
    )
    target = next((row for row in rows if row.name == name), None)
    if target is None:
        get_version(name=name)  # raises with the known names
        raise RegistryError(f"no version {name}")  # not reached: get_version raised
    if target.status == ModelVersion.Status.ACTIVE:
        return target
    if not Path(target.weights_path).exists():
        raise RegistryError(f"{name}'s weights {target.weights_path} are missing")
    current = next((row for row in rows if row.status == ModelVersion.Status.ACTIVE), None)
    if current is not None:
        # Retire first: the unique constraint allows one active row at every statement.
        current.status = ModelVersion.Status.RETIRED
        current.save(update_fields=["status"])
    target.status = ModelVersion.Status.ACTIVE
    target.activated_at = timezone.now()
    target.previous = current
    target.save(update_fields=["status", "activated_at", "previous"])
    log.info("promoted %s (was %s)", target.name, current.name if current else "none")
    return target


@transaction.atomic
def rollback() -> ModelVersion:
    """Re-activate the version the active one replaced; the active one is retired.

    The re-activated version keeps its own `previous`, so rolling back twice walks back twice."""
    # No select_related here: PostgreSQL refuses FOR UPDATE on the nullable side of a join.
    current = (
        ModelVersion.objects.select_for_update().filter(status=ModelVersion.Status.ACTIVE).first()
    )
    target = (
        ModelVersion.objects.select_for_update().filter(pk=current.previous_id).first()
        if current is not None and current.previous_id
        else None
    )
    if current is None or target is None:
        raise RegistryError("nothing to roll back to: the active version replaced none")
    if not Path(target.weights_path).exists():
        raise RegistryError(f"{target.name}'s weights {target.weights_path} are missing")
    current.status = ModelVersion.Status.RETIRED
    current.save(update_fields=["status"])
    ModelVersion.objects.filter(pk=target.pk).update(
        status=ModelVersion.Status.ACTIVE, activated_at=timezone.now()
    )
    log.info("rolled back from %s to %s", current.name, target.name)
    return ModelVersion.objects.get(pk=target.pk)


@dataclass(frozen=True)
class LiveAccuracy:
    labelled: int
    correct: int

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None


def live_accuracy(*, version: ModelVersion | str) -> LiveAccuracy:
    """How often `version`'s answers matched the label on labelled submissions (the reviewer's
    label when there is one, else the user's; excluded ones never count).

    People label wrong answers more often than right ones, so this reads low: compare versions
    with it, do not quote it as the accuracy."""
    name = version.name if isinstance(version, ModelVersion) else version
    totals = (
        Submission.objects.filter(model_version=name, status=Submission.Status.DONE, excluded=False)
        .annotate(label=Coalesce("reviewed_label", "correct_label"))
        .filter(label__isnull=False)
        .aggregate(labelled=Count("pk"), correct=Count("pk", filter=Q(label=F("prediction"))))
    )
    return LiveAccuracy(labelled=totals["labelled"], correct=totals["correct"])
