// The drawing pad: Pointer Events in, strokes kept as data, pixels drawn from that data.
//
// Strokes are stored in coordinates normalised to 0..1 of the canvas side, so the same drawing can
// be painted at any size: on screen at the device's pixel ratio (sharp on high-DPI screens, and
// redrawn unchanged when the layout resizes), and off screen at a fixed EXPORT_SIZE for the PNG we
// send, which therefore does not depend on the screen it was drawn on.

// Pen width as a share of the canvas side. A digit drawn across most of the canvas and scaled to
// MNIST's 20 px box then has a stroke of about 2 px, like MNIST's own digits.
export const STROKE_FRACTION = 1 / 13;
// The PNG sent to the API: 280 px is 10x MNIST's 28 px, plenty for the server's downscaling.
export const EXPORT_SIZE = 280;
// Screen ink and paper. The exported PNG always uses pure black on opaque white.
const SCREEN_INK = "#15171a";
const SCREEN_PAPER = "#ffffff";
// Points closer than this (in CSS px) to the previous one add nothing but payload.
const MIN_POINT_DISTANCE_PX = 0.75;

export class DrawingPad extends EventTarget {
  /**
   * Events: "strokestart" (a new stroke began), "strokeend" (the pen lifted),
   * "change" (strokes were added or removed).
   * @param {HTMLCanvasElement} canvas
   */
  constructor(canvas) {
    super();
    this.canvas = canvas;
    this.context = canvas.getContext("2d");
    /** @type {{points: {x: number, y: number, t: number}[]}[]} */
    this.strokes = [];
    this.active = null; // the stroke being drawn: {pointerId, stroke, startTime, rect}
    this.frameRequested = false;
    this.bindPointerEvents();
    this.watchSize();
  }

  isEmpty() {
    return this.strokes.length === 0;
  }

  clear() {
    this.cancelActiveStroke();
    if (this.strokes.length === 0) return;
    this.strokes = [];
    this.redraw();
    this.emit("change");
  }

  undo() {
    this.cancelActiveStroke();
    if (this.strokes.length === 0) return false;
    this.strokes.pop();
    this.redraw();
    this.emit("change");
    return true;
  }

  /** Replace the drawing with saved strokes (see `strokes`); malformed input is ignored. */
  load(strokes) {
    if (!Array.isArray(strokes)) return;
    const isPoint = (p) => p && [p.x, p.y, p.t].every(Number.isFinite);
    this.cancelActiveStroke();
    this.strokes = strokes
      .filter((stroke) => Array.isArray(stroke?.points) && stroke.points.every(isPoint))
      .map((stroke) => ({ points: stroke.points.map(({ x, y, t }) => ({ x: clamp01(x), y: clamp01(y), t })) }));
    this.redraw();
    this.emit("change");
  }

  /** The drawing as a PNG data URL: black ink on opaque white, EXPORT_SIZE square. */
  toPngDataUrl() {
    const offscreen = document.createElement("canvas");
    offscreen.width = EXPORT_SIZE;
    offscreen.height = EXPORT_SIZE;
    const context = offscreen.getContext("2d");
    // Opaque white first: a transparent PNG would make the server guess the ink from alpha.
    context.fillStyle = "#ffffff";
    context.fillRect(0, 0, EXPORT_SIZE, EXPORT_SIZE);
    paintStrokes(context, this.strokes, EXPORT_SIZE, "#000000");
    return offscreen.toDataURL("image/png");
  }

  /**
   * The strokes for the API: [[[x, y, t], ...], ...] with x, y in 0..1 rounded to 3 decimals and t in
   * ms since the stroke began. Long drawings are thinned evenly to at most `maxPoints` in all, so
   * the request stays far below the server's MAX_STROKES_BYTES.
   */
  strokesForUpload(maxPoints = 2000) {
    const total = this.strokes.reduce((sum, stroke) => sum + stroke.points.length, 0);
    const keepShare = total > maxPoints ? maxPoints / total : 1;
    return this.strokes.map((stroke) =>
      thin(stroke.points, keepShare).map((p) => [round3(p.x), round3(p.y), Math.round(p.t)]),
    );
  }

  // --- Pointer input -------------------------------------------------------------------------

  bindPointerEvents() {
    const canvas = this.canvas;
    canvas.addEventListener("pointerdown", (event) => this.onPointerDown(event));
    canvas.addEventListener("pointermove", (event) => this.onPointerMove(event));
    canvas.addEventListener("pointerup", (event) => this.onPointerUp(event));
    // A cancelled pointer (the OS took the touch, a palm was rejected) still leaves what was drawn.
    canvas.addEventListener("pointercancel", (event) => this.onPointerUp(event));
    // A long press on touch screens would open a context menu or a "save image" sheet.
    canvas.addEventListener("contextmenu", (event) => event.preventDefault());
  }

  onPointerDown(event) {
    // Only the main mouse button, and one pointer at a time: a second finger or the palm must not
    // start a stroke in the middle of another.
    if (event.pointerType === "mouse" && event.button !== 0) return;
    if (this.active) return;
    event.preventDefault(); // no text selection, no focus-scroll, no emulated mouse events
    this.canvas.setPointerCapture?.(event.pointerId);
    const stroke = { points: [] };
    this.active = {
      pointerId: event.pointerId,
      stroke,
      startTime: event.timeStamp,
      // Read once per stroke: the layout does not move while the pointer is captured.
      rect: this.canvas.getBoundingClientRect(),
    };
    this.strokes.push(stroke);
    this.addPoint(event);
    this.emit("strokestart");
    this.requestRedraw();
  }

  onPointerMove(event) {
    if (!this.active || event.pointerId !== this.active.pointerId) return;
    event.preventDefault();
    // Coalesced events carry the points the browser merged between frames: smoother fast strokes.
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
    for (const sample of events.length ? events : [event]) this.addPoint(sample);
    this.requestRedraw();
  }

  onPointerUp(event) {
    if (!this.active || event.pointerId !== this.active.pointerId) return;
    this.addPoint(event);
    this.active = null;
    this.requestRedraw();
    this.emit("change");
    this.emit("strokeend");
  }

  addPoint(event) {
    const { rect, stroke, startTime } = this.active;
    const x = clamp01((event.clientX - rect.left) / rect.width);
    const y = clamp01((event.clientY - rect.top) / rect.height);
    const last = stroke.points[stroke.points.length - 1];
    if (last) {
      const distancePx = Math.hypot((x - last.x) * rect.width, (y - last.y) * rect.height);
      if (distancePx < MIN_POINT_DISTANCE_PX) return;
    }
    stroke.points.push({ x, y, t: Math.max(0, event.timeStamp - startTime) });
  }

  /** Drop a stroke still in progress (Escape or Undo pressed while drawing). */
  cancelActiveStroke() {
    if (!this.active) return;
    const index = this.strokes.indexOf(this.active.stroke);
    if (index >= 0) this.strokes.splice(index, 1);
    this.canvas.releasePointerCapture?.(this.active.pointerId);
    this.active = null;
  }

  // --- Painting ------------------------------------------------------------------------------

  // Pointer events can come faster than the screen refreshes; paint at most once per frame.
  requestRedraw() {
    if (this.frameRequested) return;
    this.frameRequested = true;
    requestAnimationFrame(() => {
      this.frameRequested = false;
      this.redraw();
    });
  }

  redraw() {
    const { width, height } = this.canvas;
    this.context.fillStyle = SCREEN_PAPER;
    this.context.fillRect(0, 0, width, height);
    paintStrokes(this.context, this.strokes, width, SCREEN_INK);
  }

  // Keep the backing store at CSS size x devicePixelRatio, so lines stay sharp on high-DPI screens
  // and after rotation or zoom; the strokes are data, so resizing repaints them unchanged.
  watchSize() {
    const resize = () => {
      const cssSide = this.canvas.getBoundingClientRect().width;
      const side = Math.max(1, Math.round(cssSide * (window.devicePixelRatio || 1)));
      if (this.canvas.width !== side || this.canvas.height !== side) {
        this.canvas.width = side;
        this.canvas.height = side;
      }
      this.redraw();
    };
    if ("ResizeObserver" in window) new ResizeObserver(resize).observe(this.canvas);
    window.addEventListener("resize", resize);
    // Browser zoom or a move to another screen changes the pixel ratio without resizing in CSS px.
    const watchRatio = () => {
      matchMedia(`(resolution: ${window.devicePixelRatio}dppx)`).addEventListener(
        "change",
        () => {
          resize();
          watchRatio();
        },
        { once: true },
      );
    };
    watchRatio();
    resize();
  }

  emit(type) {
    this.dispatchEvent(new Event(type));
  }
}

/** Paint strokes given in 0..1 coordinates onto a square context `side` pixels wide. */
function paintStrokes(context, strokes, side, ink) {
  const width = side * STROKE_FRACTION;
  context.save();
  context.strokeStyle = ink;
  context.fillStyle = ink;
  context.lineWidth = width;
  context.lineCap = "round";
  context.lineJoin = "round";
  for (const { points } of strokes) {
    if (points.length === 0) continue;
    if (points.length === 1) {
      // A tap is a dot; a zero-length path would paint nothing in some browsers.
      context.beginPath();
      context.arc(points[0].x * side, points[0].y * side, width / 2, 0, Math.PI * 2);
      context.fill();
      continue;
    }
    context.beginPath();
    context.moveTo(points[0].x * side, points[0].y * side);
    // Quadratic curves through the midpoints of successive points: smooth, and still passing
    // close to every sample, so the strokes look drawn rather than polygonal.
    for (let i = 1; i < points.length - 1; i += 1) {
      const midX = ((points[i].x + points[i + 1].x) / 2) * side;
      const midY = ((points[i].y + points[i + 1].y) / 2) * side;
      context.quadraticCurveTo(points[i].x * side, points[i].y * side, midX, midY);
    }
    const last = points[points.length - 1];
    context.lineTo(last.x * side, last.y * side);
    context.stroke();
  }
  context.restore();
}

/** Keep about `share` of the points, evenly spaced, always with the first and the last. */
function thin(points, share) {
  if (share >= 1 || points.length <= 2) return points;
  const keep = Math.max(2, Math.round(points.length * share));
  const step = (points.length - 1) / (keep - 1);
  return Array.from({ length: keep }, (_, i) => points[Math.round(i * step)]);
}

function clamp01(value) {
  return Math.min(1, Math.max(0, value));
}

function round3(value) {
  return Math.round(value * 1000) / 1000;
}
