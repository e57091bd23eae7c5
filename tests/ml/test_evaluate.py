"""`python -m ml.evaluate`: the JSON report and the plots (ml/evaluate.py), on a smoke model."""

from __future__ import annotations

import json

from PIL import Image

from ml import evaluate
from ml.drawn import DRAWN_STYLES


def test_report_and_plots(smoke_weights, tmp_path, capsys):
    plots = tmp_path / "plots"
    returned = evaluate.main(
        ["--weights", str(smoke_weights), "--limit", "200", "--plots", str(plots)]
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed == returned
    assert printed["n"] == 200
    assert printed["parameters"] == 421_642
    assert 0 <= printed["accuracy"] <= 1
    assert sorted(printed["per_class"]) == [str(d) for d in range(10)]
    confusion = printed["confusion"]
    assert sum(map(sum, confusion)) == 200
    correct = sum(confusion[d][d] for d in range(10))
    assert printed["accuracy"] == round(correct / 200, 4)

    with Image.open(plots / "confusion.png") as image:
        assert image.format == "PNG"
        assert min(image.size) >= 200
    # The grid holds the worst mistakes, up to 64, eight to a row of 100 px (tile and caption).
    rows = (min(64, 200 - correct) + 7) // 8
    with Image.open(plots / "mistakes.png") as image:
        assert image.format == "PNG"
        assert image.size == (8 * 84, max(1, rows) * 100)


def test_drawn_report_covers_every_style(smoke_weights, capsys):
    result = evaluate.main(["--weights", str(smoke_weights), "--limit", "20", "--drawn"])
    assert json.loads(capsys.readouterr().out)["drawn"] == result["drawn"]
    assert set(result["drawn"]) == set(DRAWN_STYLES)
    assert all(entry["n"] == 20 for entry in result["drawn"].values())
