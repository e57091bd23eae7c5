// The drawing page: wires the drawing pad, the API client and the answer panel together.
//
// Flow: a stroke ends (or Predict / Enter) -> the drawing is sent at once as PNG + strokes, in one
// request that the server holds until the answer is there (POST ?wait=) -> the answer is shown and
// the user may say which digit it really was. If the server answers 202 instead (busy), the
// submission URL is long-polled until done or failed, or until the timeout.
//
// A digit drawn in several strokes (a 4, a 7 with a bar) is still read whole: every pen-up sends
// the whole drawing so far with the drawing's id, and the server marks the earlier submissions of
// that drawing as superseded (kept, but never reviewed or trained on unless labelled). A new
// stroke hides the answer about the older drawing. Clear starts a new drawing (a new id).
//
// Configuration comes from the page: <body data-api-base="/api/v1/" data-timeout-ms="20000">; a
// ?timeout=MS query parameter overrides the timeout (browser tests use a short one).
//
// For benchmarks the page leaves User Timing entries: a "recognizer:pen-up" mark when a stroke
// ends, a "recognizer:answer-shown" mark when an answer is on screen, and a
// "recognizer:pen-up-to-answer" measure between the two.

import { ApiError, finalAnswer, newDrawingId, sendLabel, submitDrawing, waitForAnswer } from "./api.js";
import { AnswerPanel } from "./answer.js";
import { DrawingPad } from "./drawing.js";

// The drawing survives a reload of the tab (sessionStorage is per tab and cleared with it).
const STORAGE_KEY = "recognizer:strokes";
const DEFAULT_TIMEOUT_MS = 20000;
// After this long still queued, say so: the wait is the queue's, not the page's.
const SLOW_QUEUE_MS = 3000;

function readConfig() {
  const body = document.body;
  const fromQuery = new URLSearchParams(window.location.search).get("timeout");
  const timeoutMs = Number(fromQuery ?? body.dataset.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  return {
    apiBase: body.dataset.apiBase || "/api/v1/",
    timeoutMs: Number.isFinite(timeoutMs) && timeoutMs > 0 ? timeoutMs : DEFAULT_TIMEOUT_MS,
  };
}

class DrawingPage {
  constructor(config) {
    this.config = config;
    this.pad = new DrawingPad(byTestId("draw-canvas"));
    this.panel = new AnswerPanel(document);
    this.emptyHint = document.querySelector("[data-empty-hint]");
    this.drawingId = newDrawingId(); // the server supersedes earlier submissions of a drawing
    this.version = 0; // bumps on every change to the drawing
    this.attempt = null; // the request in flight or answered: {controller, version}
    this.lastDrawing = null; // what was last sent, so Retry sends exactly that again
    this.answer = null; // {url, submission} once done
    this.labelController = null;
    this.bindPad();
    this.bindButtons();
    this.bindKeys();
    this.restoreDrawing();
  }

  bindPad() {
    this.pad.addEventListener("strokestart", () => {
      // A new stroke makes any answer, or any answer on its way, about an older drawing.
      this.resetAnswer();
      this.emptyHint.hidden = true;
    });
    this.pad.addEventListener("strokeend", () => {
      performance.mark("recognizer:pen-up");
      this.predict();
    });
    this.pad.addEventListener("change", () => {
      this.version += 1;
      this.emptyHint.hidden = !this.pad.isEmpty();
      this.saveDrawing();
    });
  }

  bindButtons() {
    byTestId("predict-button").addEventListener("click", () => this.predict());
    byTestId("clear-button").addEventListener("click", () => this.clear());
    byTestId("undo-button").addEventListener("click", () => this.undo());
    byTestId("retry-button").addEventListener("click", () => this.retry());
    byTestId("right-button").addEventListener("click", () => {
      if (this.answer) this.label(this.answer.submission.prediction);
    });
    const wrong = byTestId("wrong-button");
    wrong.addEventListener("click", () => {
      this.panel.showLabelChoices(wrong.getAttribute("aria-expanded") !== "true");
    });
    for (const button of document.querySelectorAll("[data-label]")) {
      button.addEventListener("click", () => this.label(Number(button.dataset.label)));
    }
  }

  bindKeys() {
    document.addEventListener("keydown", (event) => {
      if (event.defaultPrevented || event.isComposing) return;
      const key = event.key;
      if ((event.ctrlKey || event.metaKey) && !event.shiftKey && !event.altKey && key.toLowerCase() === "z") {
        event.preventDefault(); // the browser has nothing of its own to undo on this page
        this.undo();
        return;
      }
      if (event.ctrlKey || event.metaKey || event.altKey) return;
      if (key === "Escape") {
        this.clear();
      } else if (key === "Enter") {
        // On a focused button or link Enter already means "press it"; elsewhere it means predict.
        if (event.target.closest?.("button, a, input, textarea, select")) return;
        event.preventDefault();
        this.predict();
      } else if (/^[0-9]$/.test(key) && this.answer) {
        event.preventDefault();
        this.label(Number(key));
      }
    });
  }

  // --- Actions -------------------------------------------------------------------------------

  predict() {
    if (this.pad.isEmpty()) {
      this.panel.setStatus("Draw a digit first.");
      return;
    }
    const state = this.panel.prediction.dataset.state;
    // The same drawing is already on its way or answered: sending it again would only add a row.
    if (this.attempt?.version === this.version && (state === "pending" || state === "done")) return;
    this.send({
      image: this.pad.toPngDataUrl(),
      strokes: this.pad.strokesForUpload(),
      drawing: this.drawingId,
    });
  }

  retry() {
    if (this.lastDrawing) this.send(this.lastDrawing);
  }

  clear() {
    this.pad.clear();
    this.drawingId = newDrawingId();
    this.lastDrawing = null;
    this.resetAnswer();
    this.emptyHint.hidden = false;
  }

  undo() {
    if (!this.pad.undo()) return;
    this.resetAnswer();
    // The answer on screen should always be about what is on the canvas.
    if (!this.pad.isEmpty()) this.predict();
  }

  async send(drawing) {
    this.abortAttempt();
    const controller = new AbortController();
    const attempt = { controller, version: this.version };
    this.attempt = attempt;
    this.lastDrawing = drawing;
    this.answer = null;
    this.panel.showPending("Recognising…");
    const { apiBase, timeoutMs } = this.config;
    const started = performance.now();
    try {
      // Usually the answer itself (200); a 202 means it is still queued: wait for it.
      const created = await submitDrawing(apiBase, drawing, { signal: controller.signal, timeoutMs });
      const submission =
        finalAnswer(created) ??
        (await waitForAnswer(created.url, {
          timeoutMs: Math.max(0, timeoutMs - (performance.now() - started)),
          signal: controller.signal,
          onProgress: (progress) => {
            if (progress.status === "queued" && performance.now() - started > SLOW_QUEUE_MS) {
              this.panel.updatePending("Still waiting for the recogniser…");
            }
          },
        }));
      if (this.attempt !== attempt) return;
      this.answer = { url: created.url, labelToken: created.label_token, submission };
      this.panel.showDone(submission);
      markAnswerShown();
    } catch (error) {
      // Aborted on purpose (new stroke, Clear, another send): the page has moved on.
      if (controller.signal.aborted || this.attempt !== attempt) return;
      this.showError(error);
    }
  }

  showError(error) {
    if (!(error instanceof ApiError)) {
      console.error(error);
      this.panel.showFailed("Something went wrong on this page. Press Retry.", { reason: "error" });
      return;
    }
    const reason = error.kind === "timeout" || error.kind === "network" ? error.kind : "error";
    this.panel.showFailed(error.message, { reason, retryable: error.retryable });
  }

  async label(digit) {
    const answer = this.answer;
    if (!answer || !Number.isInteger(digit) || digit < 0 || digit > 9) return;
    this.labelController?.abort();
    const controller = new AbortController();
    this.labelController = controller;
    this.panel.setFeedbackStatus("Saving…");
    try {
      await sendLabel(answer.url, digit, { signal: controller.signal, labelToken: answer.labelToken });
    } catch (error) {
      if (controller.signal.aborted || this.answer !== answer) return;
      const reason = error instanceof ApiError ? error.message : "Please try again.";
      this.panel.setFeedbackStatus(`Could not save your answer. ${reason}`);
      return;
    }
    if (this.answer !== answer) return; // a new drawing replaced this answer meanwhile
    this.panel.markLabel(digit);
    this.panel.setFeedbackStatus(
      digit === answer.submission.prediction
        ? "Thanks! Glad it got it right."
        : `Thanks! Saved as a ${digit}. It helps the model learn.`,
    );
  }

  // --- Helpers -------------------------------------------------------------------------------

  // A reload, or a phone dropping the tab in the background, must not lose what was drawn.
  saveDrawing() {
    try {
      if (this.pad.isEmpty()) sessionStorage.removeItem(STORAGE_KEY);
      else sessionStorage.setItem(STORAGE_KEY, JSON.stringify(this.pad.strokes));
    } catch {
      // Storage can be full or disabled (private browsing); the page works without it.
    }
  }

  restoreDrawing() {
    try {
      const saved = sessionStorage.getItem(STORAGE_KEY);
      if (saved) this.pad.load(JSON.parse(saved));
    } catch {
      // A corrupt or unreadable copy: start with a blank canvas.
    }
    if (!this.pad.isEmpty()) this.panel.setStatus("Your drawing is back. Press Predict to recognise it.");
  }

  abortAttempt() {
    this.attempt?.controller.abort();
    this.attempt = null;
    this.labelController?.abort();
    this.labelController = null;
  }

  resetAnswer() {
    this.abortAttempt();
    this.answer = null;
    this.panel.showIdle();
  }
}

function markAnswerShown() {
  performance.mark("recognizer:answer-shown");
  if (performance.getEntriesByName("recognizer:pen-up", "mark").length) {
    performance.measure("recognizer:pen-up-to-answer", "recognizer:pen-up", "recognizer:answer-shown");
  }
}

function byTestId(id) {
  return document.querySelector(`[data-testid="${id}"]`);
}

new DrawingPage(readConfig());
// Scripts (browser tests, benchmarks) wait for this before drawing: a module loads after the HTML.
document.body.dataset.ready = "true";
