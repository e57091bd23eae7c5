"""A batch job's results: JSON pages (keyset paging on the item index) and CSV lines streamed
from the database in slices, so memory stays flat for any job size."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any

from recognizer.models import BatchJob

RESULT_FIELDS = (
    "batch_index",
    "name",
    "status",
    "prediction",
    "confidence",
    "probabilities",
    "is_digit",
    "digit_score",
    "error_code",
    "error",
)


def result_row(values: dict[str, Any]) -> dict[str, Any]:
    return {
        "index": values["batch_index"],
        "name": values["name"],
        "status": values["status"],
        "prediction": values["prediction"],
        "confidence": values["confidence"],
        "probabilities": values["probabilities"],
        "is_digit": values["is_digit"],
        "digit_score": values["digit_score"],
        "error_code": values["error_code"],
        "error": values["error"],
    }


def results_page(
    *, job: BatchJob, after: int, limit: int
) -> tuple[list[dict[str, Any]], int | None]:
    """Up to `limit` results with index > `after`, in index order, and the `after` of the next
    page (None on the last). Keyset paging on (batch, batch_index): every page costs the same."""
    rows = list(
        job.items.filter(batch_index__gt=after)
        .order_by("batch_index")
        .values(*RESULT_FIELDS)[: limit + 1]
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return [result_row(row) for row in rows], (rows[-1]["batch_index"] if more else None)


CSV_HEADER = [
    "index",
    "name",
    "status",
    "prediction",
    "confidence",
    *[f"p{digit}" for digit in range(10)],
    "is_digit",
    "digit_score",
    "error_code",
    "error",
]


# A cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets
# (=HYPERLINK(...) in an item's name would become a link, or worse, when the CSV is opened).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """A text cell a spreadsheet shows as text: a leading ' when it would start a formula
    (OWASP's CSV injection advice). Numbers are written as numbers and never need it."""
    return "'" + text if text.startswith(_FORMULA_START) else text


class _Line:
    """A file-like that hands back what csv.writer wrote, one line at a time."""

    def write(self, value: str) -> str:
        return value


def csv_lines(*, job: BatchJob) -> Iterator[str]:
    """The results as CSV lines, read from the database in slices so memory stays flat."""
    writer = csv.writer(_Line())
    yield writer.writerow(CSV_HEADER)
    rows = job.items.order_by("batch_index").values_list(*RESULT_FIELDS)
    for row in rows.iterator(chunk_size=2000):
        index, name, status, prediction, confidence, probabilities, is_digit, score = row[:8]
        code, error = row[8:]
        yield writer.writerow(
            [
                index,
                spreadsheet_safe(name),
                status,
                "" if prediction is None else prediction,
                "" if confidence is None else confidence,
                *(probabilities or [""] * 10),
                "" if is_digit is None else str(is_digit).lower(),
                "" if score is None else score,
                spreadsheet_safe(code),
                spreadsheet_safe(error),
            ]
        )
