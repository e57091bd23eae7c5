"""Stroke-level rendering: digits re-drawn as pen strokes, the way people draw on a canvas.

A bitmap digit is thinned to a one-pixel skeleton (Zhang and Suen, 1984), the skeleton is traced
into polylines, and the polylines are drawn again with a round pen of random width and pressure,
a little hand jitter, random placement, rotation and shear. Three things keep the re-drawing the
digit it came from (its label stays true), all read from the original's distance transform:

- thinning eats every free stroke end by about the stroke's half-width (a 2's short base), so each
  free end is extended again by the original's half-width there, along the end's direction, and a
  short branch is kept when its ink reaches out of the stroke it grows from (a 3's middle cusp, a
  1's serif), not by its pixel count alone;
- a protrusion shorter than about the stroke's width leaves no skeleton pixel at all (the stem of
  a closed-top 4 rising above its loop, the tail of an L-shaped 2, a 3's middle cusp): original
  ink that no traced point reaches (farther than its half-width and a pixel) gets a short straight
  stroke from the nearest traced point to its far end (`_lost_ink`). Without it a 4 is drawn as
  a 9 and a 2 as an L;
- an inked-over region (the filled loop of a 9 or an 8) thins to a line; the pen there is drawn as
  wide as the original (half-width well above the digit's median stroke), so a filled loop stays
  filled. A junction counts its half-width only up to sqrt(2) times the median (strokes crossing
  are that wide where they meet): a lone junction is not inked over, else a thin pen drew it as
  a dot (a 3's top T became a 5's).

The page's own `strokes` field ([[[x, y, t], ...], ...] in 0..1 of the canvas) goes through the same
pen, so collected drawings can be multiplied for retraining.

Everything returns an ink map (float32, 1 = full ink) or a 28x28 image made from it by
`ml.preprocess.preprocess_ink`, the function serving runs after decoding: training sees the
preprocessing that serving applies.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ml.preprocess import PreprocessError, preprocess_ink

Polyline = np.ndarray  # K x 2 float (x, y)

# Ink above this share of full scale belongs to the digit when thinning an MNIST bitmap.
SKELETON_THRESHOLD = 0.35


@dataclass(frozen=True)
class Pen:
    """How a drawing is placed and drawn on a square canvas (sizes are shares of the canvas)."""

    canvas_px: int = 112
    height: tuple[float, float] = (0.55, 0.85)  # the drawing's height, drawn uniformly
    width: tuple[float, float] = (0.06, 0.16)  # pen width as a share of the drawing's height
    pressure: float = 0.25  # +-share of the width varying smoothly along a stroke
    rotation_deg: float = 8.0
    shear: float = 0.15
    aspect: float = 0.1  # +-share of width against height
    jitter: float = 0.012  # smooth hand wobble, as a share of the drawing's height
    centre: tuple[float, float] = (0.5, 0.5)  # where the drawing's box centre goes
    centre_spread: float = 0.08  # +- random offset of that centre


TRAIN_PEN = Pen()


# --- Skeletons ---------------------------------------------------------------------------------


def skeletonize(images: np.ndarray, threshold: float = SKELETON_THRESHOLD) -> np.ndarray:
    """Zhang-Suen thinning of N x H x W (or H x W) grey images, vectorised over the batch."""
    single = images.ndim == 2
    batch = images[None] if single else images
    scale = 255.0 if batch.dtype == np.uint8 else 1.0
    img = np.pad(batch.astype(np.float32) / scale > threshold, ((0, 0), (1, 1), (1, 1)))
    while True:
        changed = False
        for step in (0, 1):
            p = _neighbours(img)  # P2..P9 clockwise from north
            count = sum(p.astype(np.uint8) for p in p)
            ring = p + [p[0]]
            pairs = zip(ring, ring[1:], strict=False)
            transitions = sum((~a & b).astype(np.uint8) for a, b in pairs)
            p2, p4, p6, p8 = p[0], p[2], p[4], p[6]
            if step == 0:
                side = ~(p2 & p4 & p6) & ~(p4 & p6 & p8)
            else:
                side = ~(p2 & p4 & p8) & ~(p2 & p6 & p8)
            core = img[:, 1:-1, 1:-1]
            remove = core & (count >= 2) & (count <= 6) & (transitions == 1) & side
            if remove.any():
                core &= ~remove
                changed = True
        if not changed:
            break
    out = img[:, 1:-1, 1:-1]
    return out[0] if single else out


def _neighbours(img: np.ndarray) -> list[np.ndarray]:
    h, w = img.shape[1] - 2, img.shape[2] - 2
    offsets = [(-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1)]
    return [img[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in offsets]


# Strokes of half-width w crossing at right angles leave a disc of radius w * sqrt(2) where they
# meet: a junction's half-width is taken as at most this times the digit's median, so a junction
# alone is never drawn as an inked-over blob (a 3's top T drawn as a dot reads as a 5).
JUNCTION_WIDENING = math.sqrt(2)
# A point whose half-width exceeds the digit's median by this (px) is inked over: drawn at least as
# wide as the original there (DT steps are under 0.5 px and a stroke's own variation about that).
INKED_OVER = 1.0
MAX_HALF_WIDTH = 10  # px: the distance transform is exact up to here (a digit's blobs are less)


def half_widths(images: np.ndarray, threshold: float = SKELETON_THRESHOLD) -> np.ndarray:
    """The ink's local half-width at every pixel of N x H x W (or H x W) grey images, in pixels:
    the Euclidean distance to the nearest background pixel (outside the image is background) less
    half a pixel, 0 on the background. A stroke w pixels wide gives w / 2 on its centre line.

    Exact up to `MAX_HALF_WIDTH` (numpy only: the offsets of a disc, nearest first)."""
    single = images.ndim == 2
    batch = images[None] if single else images
    scale = 255.0 if batch.dtype == np.uint8 else 1.0
    ink = batch.astype(np.float32) / scale > threshold
    r = MAX_HALF_WIDTH + 1
    background = np.pad(~ink, ((0, 0), (r, r), (r, r)), constant_values=True)
    h, w = ink.shape[1:]
    distance = np.full(ink.shape, float(r), dtype=np.float32)
    distance[~ink] = 0.0
    offsets = sorted(
        ((dy * dy + dx * dx) ** 0.5, dy, dx)
        for dy in range(-r, r + 1)
        for dx in range(-r, r + 1)
        if 0 < dy * dy + dx * dx <= r * r
    )
    open_ = ink.copy()  # ink pixels whose nearest background is not found yet
    for d, dy, dx in offsets:
        if not open_.any():
            break
        hit = open_ & background[:, r + dy : r + dy + h, r + dx : r + dx + w]
        distance[hit] = d
        open_ &= ~hit
    out = np.where(ink, distance - 0.5, 0.0).astype(np.float32)
    return out[0] if single else out


def trace(
    skeleton: np.ndarray, min_points: int = 3, half_width: np.ndarray | None = None
) -> list[Polyline]:
    """Polylines (x, y in pixels) along a one-pixel skeleton, split at ends and junctions.

    A diagonal step is dropped where an orthogonal path joins the same two pixels, so staircases
    do not count as junctions.

    Without `half_width`: spurs shorter than `min_points` are dropped when anything else is left
    (thinning leaves them at corners).

    With `half_width` (the original's, `half_widths`): every point carries it as a third column
    (x, y, r); a free end (one neighbour) is extended along its direction by r there (at most the
    digit's median r, `_extension`), which gives back what thinning ate; a branch from a junction
    to a free end is kept when that extended end lies outside the junction's stroke (distance + r
    > the junction's r: the original has ink sticking out there, like a 3's middle cusp) and
    dropped when it stays inside (a thinning artefact at a corner, which the pen covers anyway).
    Paths between junctions are kept. A junction's r is capped at `JUNCTION_WIDENING` times the
    median, and ink that thinning left no skeleton pixel in gets a stroke of its own (`_lost_ink`).
    """
    pixels = {(int(y), int(x)) for y, x in zip(*np.nonzero(skeleton), strict=True)}
    graph: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for y, x in pixels:
        links = []
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                q = (y + dy, x + dx)
                if (dy or dx) and q in pixels:
                    if dy and dx and ((y + dy, x) in pixels or (y, x + dx) in pixels):
                        continue
                    links.append(q)
        graph[(y, x)] = links

    seen: set[frozenset] = set()
    paths: list[list[tuple[int, int]]] = []

    def walk(start: tuple[int, int], nxt: tuple[int, int]) -> list[tuple[int, int]]:
        path = [start, nxt]
        seen.add(frozenset((start, nxt)))
        prev, cur = start, nxt
        while len(graph[cur]) == 2:
            step = [q for q in graph[cur] if q != prev and frozenset((cur, q)) not in seen]
            if not step:
                break
            prev, cur = cur, step[0]
            seen.add(frozenset((prev, cur)))
            path.append(cur)
        return path

    nodes = sorted(p for p, links in graph.items() if len(links) != 2)
    for node in nodes:
        for q in graph[node]:
            if frozenset((node, q)) not in seen:
                paths.append(walk(node, q))
    for p in sorted(graph):  # closed loops (a 0, the hole of a 6) have no ends
        for q in graph[p]:
            if frozenset((p, q)) not in seen:
                paths.append(walk(p, q))
    for p, links in graph.items():
        if not links:
            paths.append([p])

    if half_width is None:
        long = [path for path in paths if len(path) >= min_points]
        kept = long or paths
        return [np.array([(x, y) for y, x in path], dtype=np.float32) for path in kept]
    return _with_ends(paths, graph, half_width, min_points)


def _with_ends(
    paths: list[list[tuple[int, int]]],
    graph: dict[tuple[int, int], list[tuple[int, int]]],
    half_width: np.ndarray,
    min_points: int,
) -> list[Polyline]:
    """`trace`'s polylines with the original's half-width: free ends extended, spurs judged by
    whether their ink leaves the stroke they grow from, junctions capped, lost ink added."""

    def free(p: tuple[int, int]) -> bool:
        return len(graph[p]) == 1

    def junction(p: tuple[int, int]) -> bool:
        return len(graph[p]) >= 3

    kept: list[list[tuple[int, int]]] = []
    short: list[list[tuple[int, int]]] = []
    for path in paths:
        start, end = path[0], path[-1]
        if len(path) > 1 and (junction(start) or junction(end)) and (free(start) or free(end)):
            root, tip = (start, end) if junction(start) else (end, start)
            reach = math.dist(root, tip) + float(half_width[tip])
            (kept if reach > float(half_width[root]) else short).append(path)
        elif len(path) >= min_points or any(junction(p) for p in (start, end)):
            kept.append(path)
        else:
            short.append(path)
    kept = kept or short
    if not kept:
        return []
    median = float(np.median([half_width[p] for path in kept for p in path]))
    lines = []
    for path in kept:
        line = np.array([(x, y, half_width[y, x]) for y, x in path], dtype=np.float32)
        for k in (0, -1):  # a junction is wider than its strokes by geometry alone
            if junction(path[k]):
                line[k, 2] = min(float(line[k, 2]), median * JUNCTION_WIDENING)
        if len(path) > 1:
            if free(path[0]):
                line = np.concatenate([_extension(line[::-1], median), line])
            if free(path[-1]):
                line = np.concatenate([line, _extension(line, median)])
        lines.append(line)
    return lines + _lost_ink(lines, half_width, median)


# Ink farther than this (px) past every traced point's half-width was lost by thinning: an original
# pixel's centre lies within r + 0.5 of the centre line it belongs to, antialiasing adds about 0.5.
LOST_INK_MARGIN = 1.0
LOST_INK_MIN_PIXELS = 2  # a lone pixel past the margin is an antialiasing lump, not a stroke


def _lost_ink(lines: list[np.ndarray], half_width: np.ndarray, median: float) -> list[Polyline]:
    """Strokes for the original's ink that the traced lines do not reach: one straight stroke
    (x, y, r) from the nearest traced point to the far end of each lost patch.

    Zhang-Suen thinning leaves no skeleton pixel in a protrusion shorter than about the stroke's
    width, and a corner's blob can be thinned away whole: the stem of a closed-top 4 that rises
    above its loop, the end of its crossbar past the stem, the tail of an L-shaped 2 or the first
    blotted stretch of a 2's arc. Without them a 4 is drawn as a 9 and a 2 as an L (a 6). A patch
    is lost when its pixels lie more than `LOST_INK_MARGIN` past every traced point's half-width
    (8-connected, at least `LOST_INK_MIN_PIXELS`); its tip is the pixel farthest past, and the
    stroke ends short of the tip by the digit's median half-width, as a free end's extension
    leaves it (the pen's round end reaches the tip)."""
    points = np.concatenate([_resample_line(line) for line in lines])
    ys, xs = np.nonzero(half_width > 0)
    if not len(points) or not len(ys):
        return []
    ink = np.stack([xs, ys], axis=1).astype(np.float32)
    distance = np.linalg.norm(ink[:, None, :] - points[None, :, :2], axis=2)
    past = (distance - points[None, :, 2]).min(axis=1)  # how far past the traced ink
    index = {(int(x), int(y)): i for i, (x, y) in enumerate(ink)}
    lost = {p: i for p, i in index.items() if past[i] > LOST_INK_MARGIN}
    spurs: list[Polyline] = []
    while lost:
        patch, todo = [], [next(iter(lost))]
        while todo:  # one 8-connected patch
            p = todo.pop()
            if p in lost:
                patch.append(p)
                del lost[p]
                x, y = p
                todo.extend((x + dx, y + dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1))
        if len(patch) < LOST_INK_MIN_PIXELS:
            continue
        tip_i = max((index[p] for p in patch), key=lambda i: past[i])
        tip = ink[tip_i]
        root = points[int(np.argmin(distance[tip_i]))]
        direction = tip - root[:2]
        reach = float(np.hypot(*direction))
        length = reach - median
        if length <= 0.5:
            continue
        end = root[:2] + direction / reach * length
        r_end = float(half_width[int(round(end[1])), int(round(end[0]))])
        spurs.append(np.array([root, (end[0], end[1], max(r_end, 0.5))], dtype=np.float32))
    return spurs


def _resample_line(line: np.ndarray, step: float = 0.5) -> np.ndarray:
    """A traced line's points (x, y, r) every `step` px, r interpolated."""
    xy, r = _resample(line[:, :2], step, line[:, 2:3])
    return np.concatenate([xy, r], axis=1).astype(np.float32)


def _extension(line: np.ndarray, median: float, back: int = 3) -> np.ndarray:
    """The point that continues `line` past its last point (x, y, r) by the half-width there,
    along the direction from `back` points before; empty when the line has no length.

    Measured on MNIST training digits, the ink reaches about r + 1 px past a free skeleton end:
    extended by r and drawn with a pen about as wide as the original's, the tip lands there. An
    inked-over end (r well above the digit's `median`) is drawn as wide as the original
    (`draw_strokes`), so its round tip already reaches past r: it is extended by the median only."""
    tip = line[-1]
    direction = tip[:2] - line[max(0, len(line) - 1 - back), :2]
    norm = float(np.hypot(*direction))
    if norm == 0 or tip[2] <= 0:
        return line[:0]
    point = tip.copy()
    point[:2] = tip[:2] + direction / norm * min(float(tip[2]), median)
    return point[None]


def digit_strokes(image: np.ndarray) -> list[Polyline]:
    """The strokes of one 28x28 grey digit: traced, smoothed polylines in pixel coordinates, each
    point with the original's half-width there (x, y, r), free ends extended."""
    return strokes_of_skeleton(skeletonize(image), half_widths(image))


def strokes_of_skeleton(
    skeleton: np.ndarray, half_width: np.ndarray | None = None
) -> list[Polyline]:
    return [smooth(line) for line in trace(skeleton, half_width=half_width)]


def smooth(line: Polyline, passes: int = 2) -> Polyline:
    """A [1, 2, 1] moving average that keeps the ends: pixel staircases become pen curves."""
    line = line.astype(np.float32)
    closed = len(line) > 3 and np.abs(line[0, :2] - line[-1, :2]).max() <= 1.5
    for _ in range(passes):
        if len(line) < 3:
            break
        inner = (line[:-2] + 2 * line[1:-1] + line[2:]) / 4
        line = np.concatenate([line[:1], inner, line[-1:]])
    if closed:
        line[-1] = line[0]
    return line


# --- The pen -----------------------------------------------------------------------------------


def strokes_from_json(strokes: object) -> list[Polyline]:
    """The page's strokes ([[[x, y, t], ...], ...] or [{"points": [{x, y, t}]}]) as polylines in
    canvas units (0..1, y down). Malformed points are skipped, never raised on."""
    lines: list[Polyline] = []
    if not isinstance(strokes, list):
        return lines
    for stroke in strokes:
        points = stroke.get("points") if isinstance(stroke, dict) else stroke
        if not isinstance(points, list):
            continue
        xy = []
        for point in points:
            if isinstance(point, dict):
                point = [point.get("x"), point.get("y")]
            if isinstance(point, list | tuple) and len(point) >= 2:
                x, y = point[0], point[1]
                if isinstance(x, int | float) and isinstance(y, int | float):
                    if math.isfinite(x) and math.isfinite(y):
                        xy.append((float(x), float(y)))
        if xy:
            lines.append(np.array(xy, dtype=np.float32))
    return lines


def draw_strokes(lines: Sequence[Polyline], pen: Pen, rng: np.random.Generator) -> np.ndarray:
    """Draw polylines (any units, y down) on a square canvas: an ink map in [0, 1].

    The drawing is scaled to a random height, rotated, sheared, placed, wobbled and drawn with a
    round pen whose width varies along each stroke.

    Polylines with a third column (the original's half-width r, `trace`) keep the original's
    inked-over regions: where r exceeds the drawing's median r by `INKED_OVER` (a filled loop, a
    blotted end) the pen is drawn at least as wide as the original there, scaled like the drawing,
    and that ink counts in the drawing's size. A person who fills a loop fills it whatever the
    pen; a thin pen would otherwise leave a filled 9 a 7. Elsewhere the pen is the pen: widening
    every thicker-than-median part as well would only make a thick pen close small loops that the
    original keeps open.
    """
    lines = [line for line in lines if len(line)]
    size = pen.canvas_px
    canvas = Image.new("L", (size, size), 0)
    if not lines:
        return np.zeros((size, size), dtype=np.float32)
    thick = [line for line in lines if line.shape[1] > 2]
    median = float(np.median(np.concatenate([line[:, 2] for line in thick]))) if thick else 0.0
    # The drawing's box: its lines, and the ink of inked-over regions around them.
    inked = [_inked_over(line, median) for line in lines]
    lo = np.concatenate([line[:, :2] - r[:, None] for line, r in zip(lines, inked, strict=True)])
    hi = np.concatenate([line[:, :2] + r[:, None] for line, r in zip(lines, inked, strict=True)])
    lo, hi = lo.min(axis=0), hi.max(axis=0)
    centre = (lo + hi) / 2
    extent = max(float(hi[1] - lo[1]), float(hi[0] - lo[0]) * 0.75, 1e-6)

    height = rng.uniform(*pen.height) * size
    angle = math.radians(rng.uniform(-pen.rotation_deg, pen.rotation_deg))
    shear = rng.uniform(-pen.shear, pen.shear)
    aspect = 1 + rng.uniform(-pen.aspect, pen.aspect)
    cos, sin = math.cos(angle), math.sin(angle)
    matrix = (height / extent) * np.array(
        [[cos * aspect, -sin + shear], [sin * aspect, cos]], dtype=np.float32
    )
    target = np.array(pen.centre, dtype=np.float32) + rng.uniform(
        -pen.centre_spread, pen.centre_spread, 2
    )
    width = rng.uniform(*pen.width) * height
    draw = ImageDraw.Draw(canvas)
    placed, extras = [], []
    for line, inked_r in zip(lines, inked, strict=True):
        xy = (line[:, :2] - centre) @ matrix.T
        extra = 2 * inked_r[:, None] * (height / extent)  # widths at least, in canvas pixels
        xy, extra = _resample(xy, step=max(1.5, width / 3), values=extra)
        xy = xy + _wobble(len(xy), pen.jitter * height, rng)
        placed.append(xy)
        extras.append(extra)
    # Keep the whole drawing on the canvas: shift it back in if placement pushed it off.
    allxy = np.concatenate(placed)
    margin = (width * (1 + pen.pressure) + float(np.concatenate(extras).max(initial=0))) / 2 + 1
    shift = target * size
    shift = shift + np.clip(margin - (allxy.min(axis=0) + shift), 0, None)
    shift = shift - np.clip(allxy.max(axis=0) + shift - (size - margin), 0, None)
    for xy, extra in zip(placed, extras, strict=True):
        xy = xy + shift
        widths = width * (1 + pen.pressure * _smooth_noise(len(xy), rng))
        widths = np.maximum(widths, extra[:, 0])
        _stroke(draw, xy, widths)
    return np.asarray(canvas, dtype=np.float32) / 255.0


def _inked_over(line: np.ndarray, median: float) -> np.ndarray:
    """The original's half-width at a line's inked-over points (`INKED_OVER` above the median),
    0 elsewhere and for lines without one."""
    if line.shape[1] < 3:
        return np.zeros(len(line), dtype=np.float32)
    return np.where(line[:, 2] >= median + INKED_OVER, line[:, 2], 0).astype(np.float32)


def _resample(xy: np.ndarray, step: float, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points every `step` pixels along the polyline (a lone point stays one point), and
    `values` (a row per point) interpolated at them."""
    if len(xy) < 2:
        return xy, values
    seg = np.linalg.norm(np.diff(xy, axis=0), axis=1)
    dist = np.concatenate([[0.0], np.cumsum(seg)])
    if dist[-1] <= 0:
        return xy[:1], values[:1]
    at = np.linspace(0, dist[-1], max(2, int(math.ceil(dist[-1] / step)) + 1))
    points = np.stack([np.interp(at, dist, xy[:, 0]), np.interp(at, dist, xy[:, 1])], axis=1)
    return points, np.stack([np.interp(at, dist, v) for v in values.T], axis=1)


def _smooth_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Noise in about [-1, 1] that changes slowly along n points."""
    knots = rng.uniform(-1, 1, max(2, n // 8 + 2))
    return np.interp(np.linspace(0, len(knots) - 1, n), np.arange(len(knots)), knots)


def _wobble(n: int, amount: float, rng: np.random.Generator) -> np.ndarray:
    return np.stack([_smooth_noise(n, rng), _smooth_noise(n, rng)], axis=1) * amount


def _stroke(draw: ImageDraw.ImageDraw, xy: np.ndarray, widths: np.ndarray) -> None:
    """A round pen: a disc at every point and a segment between neighbours."""
    for i, (x, y) in enumerate(xy):
        r = widths[i] / 2
        draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
        if i:
            px, py = xy[i - 1]
            w = max(1, round((widths[i] + widths[i - 1]) / 2))
            draw.line((px, py, x, y), fill=255, width=w)


# --- Digits in, model inputs out ---------------------------------------------------------------


def redraw(image: np.ndarray, pen: Pen, rng: np.random.Generator) -> np.ndarray:
    """One 28x28 digit re-drawn with a pen on a canvas: the ink map (canvas_px a side)."""
    return draw_strokes(digit_strokes(image), pen, rng)


def to_28(ink: np.ndarray) -> np.ndarray | None:
    """An ink map through the served preprocessing, as the 28x28 uint8 the model sees (None if the
    preprocessing refuses it, as it would refuse the drawing)."""
    try:
        return preprocess_ink(ink).image
    except PreprocessError:
        return None


def hole_count(images: np.ndarray, threshold: float = SKELETON_THRESHOLD) -> np.ndarray:
    """Enclosed background regions (of 2+ pixels) per N x H x W grey image: 0 for a 1, 1 for a 0,
    2 for an 8. Topology survives rotation, shear and scaling, so a re-drawing that gained or lost
    a loop is no longer the digit it came from."""
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    background = np.pad(images.astype(np.float32) / scale <= threshold, ((0, 0), (1, 1), (1, 1)))
    background[:, [0, -1], :] = True
    background[:, :, [0, -1]] = True
    reach = np.zeros_like(background)
    reach[:, [0, -1], :] = True
    reach[:, :, [0, -1]] = True
    while True:  # flood the background in from the border, 4-connected
        grown = reach | _spread(reach, np.logical_or)
        grown &= background
        if (grown == reach).all():
            break
        reach = grown
    enclosed = background & ~reach
    # A single enclosed pixel is a gap between antialiased edges, not a loop.
    enclosed &= _spread(enclosed, np.logical_or)
    ids = np.arange(1, enclosed[0].size + 1, dtype=np.int32).reshape(enclosed.shape[1:])
    labels = np.where(enclosed, ids, 0)
    while True:  # every region takes its largest pixel id
        grown = np.where(enclosed, np.maximum(labels, _spread(labels, np.maximum)), 0)
        if (grown == labels).all():
            break
        labels = grown
    return ((labels == ids) & enclosed).sum(axis=(1, 2))


def _spread(a: np.ndarray, combine: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """Combine each pixel's four neighbours (edges padded with the pixel itself)."""
    out = a.copy()
    out[:, 1:] = combine(out[:, 1:], a[:, :-1])
    out[:, :-1] = combine(out[:, :-1], a[:, 1:])
    out[:, :, 1:] = combine(out[:, :, 1:], a[:, :, :-1])
    out[:, :, :-1] = combine(out[:, :, :-1], a[:, :, 1:])
    return out


def redraw_batch(
    images: np.ndarray, labels: np.ndarray, seed: int, pen: Pen = TRAIN_PEN
) -> tuple[np.ndarray, np.ndarray]:
    """Every digit re-drawn once (seeded) and preprocessed: uint8 M x 28 x 28 and their labels.

    Left out: a digit whose skeleton is empty, whose drawing the preprocessing refuses, or whose
    re-drawing has a different number of loops (a thick pen can fill a small loop, thinning can
    open a loop that is nearly filled in).
    """
    rng = np.random.default_rng(seed)
    skeletons, widths = skeletonize(images), half_widths(images)
    out, kept = [], []
    for i, skeleton in enumerate(skeletons):
        image = to_28(draw_strokes(strokes_of_skeleton(skeleton, widths[i]), pen, rng))
        if image is not None:
            out.append(image)
            kept.append(i)
    if not out:
        return np.zeros((0, 28, 28), dtype=np.uint8), labels[:0]
    drawn, kept_idx = np.stack(out), np.array(kept, dtype=np.int64)
    same = hole_count(drawn) == hole_count(images[kept_idx])
    return drawn[same], labels[kept_idx[same]]


def render_json_strokes(strokes: object, pen: Pen, rng: np.random.Generator) -> np.ndarray | None:
    """A collected drawing's strokes re-drawn with a random pen: the 28x28 model input, or None."""
    return to_28(draw_strokes(strokes_from_json(strokes), pen, rng))


def multiply_drawings(
    drawings: Sequence[object], labels: np.ndarray, copies: int, seed: int, pen: Pen = TRAIN_PEN
) -> tuple[np.ndarray, np.ndarray]:
    """`copies` fresh renderings of each collected drawing's strokes (JSON as the page sends them):
    uint8 M x 28 x 28 and labels. Drawings without usable strokes are skipped."""
    rng = np.random.default_rng(seed)
    images, kept = [], []
    for drawing, label in zip(drawings, labels, strict=True):
        lines = strokes_from_json(drawing)
        if not lines:
            continue
        for _ in range(copies):
            image = to_28(draw_strokes(lines, pen, rng))
            if image is not None:
                images.append(image)
                kept.append(label)
    if not images:
        return np.zeros((0, 28, 28), dtype=np.uint8), np.zeros(0, dtype=np.int64)
    return np.stack(images), np.array(kept, dtype=np.int64)
