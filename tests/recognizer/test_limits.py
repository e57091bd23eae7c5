"""JSON with a depth limit and strokes of the right shape (recognizer/limits.py)."""

from __future__ import annotations

import pytest

from recognizer import limits
from recognizer.errors import DomainError


@pytest.mark.parametrize(
    ("value", "depth"),
    [(1, 0), ([], 1), ({"a": [1, {"b": []}]}, 4), ([[[[]]]], 4), ([1, [2], 3], 2)],
)
def test_depth(value, depth):
    assert limits.depth(value) == depth


def test_loads_refuses_deep_nesting_without_recursing(settings):
    settings.JSON_MAX_DEPTH = 16
    assert limits.loads("[" * 16 + "]" * 16) is not None
    deep = ["[" * 17 + "]" * 17, "[" * 100_000 + "]" * 100_000, '{"a":' * 5000 + "1" + "}" * 5000]
    for text in deep:
        with pytest.raises(ValueError, match="nested deeper"):
            limits.loads(text)


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"a": -Infinity}'])
def test_loads_refuses_what_is_not_json(text):
    with pytest.raises(ValueError):
        limits.loads(text)


@pytest.mark.parametrize(
    "strokes", [None, [], [[]], [[[0, 0]]], [[[0.5, 1, 16], [2, 3.25, 32]], [[1, 1]]]]
)
def test_strokes_of_the_right_shape(strokes):
    assert limits.validate_strokes(strokes) == strokes


@pytest.mark.parametrize(
    "strokes",
    [{}, "x", [1], [[1]], [[[1]]], [[[1, 2, 3, 4]]], [[[True, 1]]], [[["1", 2]]],
     [[[float("nan"), 1]]], [[[float("inf"), 1]]], [[[2**60, 1]]]],
)  # fmt: skip
def test_strokes_of_the_wrong_shape(strokes):
    with pytest.raises(DomainError) as caught:
        limits.validate_strokes(strokes)
    assert caught.value.code == "invalid_strokes"


def test_too_many_strokes_or_points(settings):
    settings.MAX_STROKES, settings.MAX_STROKE_POINTS = 3, 10
    with pytest.raises(DomainError, match="strokes") as caught:
        limits.validate_strokes([[]] * 4)
    assert caught.value.code == "strokes_too_large"
    with pytest.raises(DomainError) as caught:
        limits.validate_strokes([[[0, 0]] * 6, [[0, 0]] * 5])
    assert caught.value.code == "strokes_too_large"
