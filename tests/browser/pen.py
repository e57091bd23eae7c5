"""Digits drawn the way a person draws them, and two ways to put them on the page's canvas: a mouse
(Playwright's) and a finger (Chrome DevTools touch events, so the page sees pointerType "touch").

A digit is a list of strokes; a stroke is a polyline in a unit box (x to the right, y down), drawn
in the order and direction people usually write it. `Placement` puts that box somewhere on the
canvas, so one shape can be drawn large and centred or small in a corner.

Shared by tests/browser and bench/page_latency.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from playwright.sync_api import CDPSession, Page

Point = tuple[float, float]
Stroke = list[Point]

CANVAS = '[data-testid="draw-canvas"]'
# Consecutive pointer samples this far apart (CSS px) at most: about what a mouse reports when
# moved at a normal drawing speed, and enough for the page's curve smoothing to look drawn.
STEP_PX = 6.0


def arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float) -> Stroke:
    """Points along an elliptic arc from `start` to `end` degrees (0 = right, 90 = down)."""
    steps = max(8, int(abs(end - start) / 8))
    return [
        (
            cx + rx * math.cos(math.radians(start + (end - start) * i / steps)),
            cy + ry * math.sin(math.radians(start + (end - start) * i / steps)),
        )
        for i in range(steps + 1)
    ]


DIGITS: dict[int, list[Stroke]] = {
    # Counter-clockwise from the top, as most people write a zero, closing a little past the start.
    0: [arc(0.5, 0.5, 0.27, 0.44, -80, -450)],
    1: [[(0.53, 0.05), (0.47, 0.95)]],
    2: [arc(0.5, 0.3, 0.26, 0.23, -170, 30) + [(0.2, 0.93), (0.84, 0.93)]],
    3: [arc(0.47, 0.28, 0.24, 0.21, -160, 90) + arc(0.47, 0.71, 0.28, 0.22, -90, 160)],
    # The open four: down and across, then the long vertical.
    4: [[(0.3, 0.05), (0.2, 0.6), (0.84, 0.6)], [(0.66, 0.18), (0.66, 0.96)]],
    5: [
        [(0.74, 0.06), (0.3, 0.06), (0.27, 0.45)] + arc(0.48, 0.67, 0.3, 0.26, -120, 150),
    ],
    6: [[(0.7, 0.04), (0.45, 0.25), (0.3, 0.55)] + arc(0.5, 0.72, 0.22, 0.22, 180, 540)],
    7: [[(0.18, 0.07), (0.82, 0.07), (0.4, 0.95)]],
    8: [
        arc(0.5, 0.27, 0.2, 0.22, -10, -350)
        + [(0.28, 0.66)]
        + arc(0.5, 0.71, 0.25, 0.23, 180, -180)
        + [(0.66, 0.18)]
    ],
    9: [arc(0.5, 0.3, 0.24, 0.22, 10, 370) + [(0.74, 0.55), (0.68, 0.95)]],
}

# Drawings that are not digits: what the page should answer with "that does not look like a digit".
NOT_DIGITS: dict[str, list[Stroke]] = {
    "star": [
        [
            (
                0.5 + 0.45 * math.cos(math.radians(-90 + 144 * k)),
                0.52 + 0.45 * math.sin(math.radians(-90 + 144 * k)),
            )
            for k in range(6)
        ]
    ],
    "heart": [
        [
            (
                0.5 + 0.45 * math.sin(math.radians(t)) ** 3,
                0.45
                - 0.03
                * (
                    13 * math.cos(math.radians(t))
                    - 5 * math.cos(math.radians(2 * t))
                    - 2 * math.cos(math.radians(3 * t))
                    - math.cos(math.radians(4 * t))
                ),
            )
            for t in range(0, 361, 8)
        ]
    ],
    "smiley": [
        arc(0.5, 0.5, 0.45, 0.45, 0, 360),
        [(0.35, 0.33), (0.35, 0.4)],
        [(0.65, 0.33), (0.65, 0.4)],
        arc(0.5, 0.55, 0.25, 0.2, 20, 160),
    ],
}


@dataclass(frozen=True)
class Placement:
    """Where the digit's unit box goes, in fractions of the canvas side."""

    left: float = 0.15
    top: float = 0.1
    size: float = 0.8


CENTRED = Placement()
SMALL_TOP_LEFT = Placement(left=0.03, top=0.03, size=0.3)
SMALL_BOTTOM_RIGHT = Placement(left=0.65, top=0.64, size=0.32)
MEDIUM_OFF_CENTRE = Placement(left=0.4, top=0.12, size=0.5)


def densify(stroke: Stroke, step: float) -> Stroke:
    """The same polyline with points at most `step` apart, as a moving pointer reports them."""
    points = [stroke[0]]
    for (x0, y0), (x1, y1) in zip(stroke, stroke[1:], strict=False):
        count = max(1, math.ceil(math.hypot(x1 - x0, y1 - y0) / step))
        points += [
            (x0 + (x1 - x0) * i / count, y0 + (y1 - y0) * i / count) for i in range(1, count + 1)
        ]
    return points


def on_page(page: Page, digit: int | str, placement: Placement) -> list[Stroke]:
    """The digit's (or a NOT_DIGITS drawing's) strokes in page (viewport) CSS pixels over the
    canvas as it is laid out now."""
    box = page.locator(CANVAS).bounding_box()
    assert box, "the canvas is not on screen"
    side = min(box["width"], box["height"])

    def to_page(point: Point) -> Point:
        x, y = point
        return (
            box["x"] + (placement.left + x * placement.size) * side,
            box["y"] + (placement.top + y * placement.size) * side,
        )

    strokes = DIGITS[digit] if isinstance(digit, int) else NOT_DIGITS[digit]
    return [densify([to_page(p) for p in stroke], STEP_PX) for stroke in strokes]


def draw_with_mouse(page: Page, digit: int | str, placement: Placement = CENTRED) -> None:
    """Press, drag along each stroke and release: one pointerdown/move.../up per stroke."""
    for stroke in on_page(page, digit, placement):
        page.mouse.move(*stroke[0])
        page.mouse.down()
        for point in stroke[1:]:
            page.mouse.move(*point)
        page.mouse.up()


def draw_with_finger(page: Page, digit: int, placement: Placement = CENTRED) -> None:
    """Touch, slide and lift through DevTools' Input.dispatchTouchEvent: Chrome turns these into
    real touch and pointer events (pointerType "touch"), as a finger on a phone would make.
    The page needs a context made with has_touch=True."""
    cdp: CDPSession = page.context.new_cdp_session(page)
    try:
        for stroke in on_page(page, digit, placement):
            touch = [{"x": stroke[0][0], "y": stroke[0][1], "radiusX": 4, "radiusY": 4}]
            cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": touch})
            for x, y in stroke[1:]:
                touch = [{"x": x, "y": y, "radiusX": 4, "radiusY": 4}]
                cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": touch})
            cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    finally:
        cdp.detach()
