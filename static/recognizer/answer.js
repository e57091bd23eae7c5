// The answer panel: shows one of four states on [data-testid=prediction] (data-state = idle |
// pending | done | failed) and the feedback buttons. It only renders; app.js decides what happens.
//
// A timeout is shown as data-state="failed" with data-reason="timeout" and a message saying it
// timed out; other failures have data-reason "error" (the API or the worker refused) or "network".

import { sameOriginPath } from "./api.js";

const IDLE_MESSAGE = "Draw a digit to start.";

export class AnswerPanel {
  constructor(root) {
    const find = (selector) => root.querySelector(selector);
    this.prediction = find('[data-testid="prediction"]');
    this.digitText = find("[data-digit-text]");
    this.confidence = find('[data-testid="confidence"]');
    this.closest = find('[data-testid="closest"]');
    this.status = find('[data-testid="status-message"]');
    this.retryButton = find('[data-testid="retry-button"]');
    this.modelInput = find('[data-testid="model-input"]');
    this.modelVersion = find('[data-testid="model-version"]');
    this.barList = find('[data-testid="probabilities"]');
    this.bars = buildBars(this.barList);
    this.feedback = find("[data-feedback]");
    this.wrongButton = find('[data-testid="wrong-button"]');
    this.labelChoices = find("#label-choices");
    this.labelButtons = [...root.querySelectorAll("[data-label]")];
    this.feedbackStatus = find('[data-testid="feedback-status"]');
    // A missing input.png should leave the empty frame, not a broken-image icon.
    this.modelInput.addEventListener("error", () => {
      this.modelInput.hidden = true;
    });
    this.setState("idle");
  }

  showIdle(message = IDLE_MESSAGE) {
    this.setState("idle");
    this.setStatus(message);
  }

  showPending(message = "Recognising…") {
    this.setState("pending");
    this.setStatus(message);
  }

  /** Only the text under the spinner changes (queued -> processing); nothing is re-announced twice. */
  updatePending(message) {
    if (this.prediction.dataset.state === "pending") this.setStatus(message);
  }

  showDone(submission) {
    const digit = submission.prediction;
    const percent = formatPercent(submission.confidence);
    this.setState("done");
    this.prediction.dataset.digit = String(digit);
    this.confidence.textContent = percent;
    // The exact figure for scripts; the text rounds and may read "<1%" or ">99%".
    this.confidence.dataset.value = String(submission.confidence);
    if (submission.is_digit === false) {
      // Said plainly, with an invitation to try again; the closest digit stays visible, quietly.
      this.prediction.dataset.isDigit = "false";
      this.digitText.textContent = "?";
      this.closest.textContent = `closest: ${digit}`;
      this.closest.hidden = false;
      this.setStatus("That does not look like a digit. Clear it and try drawing one digit, 0 to 9.");
    } else {
      this.digitText.textContent = String(digit);
      // The live region: what a screen reader user hears when the answer arrives.
      this.setStatus(`Predicted ${digit}, ${percent} confident.`);
    }
    this.setBars(submission.probabilities ?? [], digit);
    if (submission.input_url) {
      this.modelInput.src = sameOriginPath(submission.input_url);
      this.modelInput.hidden = false;
    }
    if (submission.model_version) {
      this.modelVersion.textContent = `Answered by model ${submission.model_version}`;
      this.modelVersion.hidden = false;
    }
    this.feedback.hidden = false;
  }

  /** `reason`: "timeout" | "error" | "network"; Retry is offered when sending again may help. */
  showFailed(message, { reason = "error", retryable = true } = {}) {
    this.setState("failed");
    this.prediction.dataset.reason = reason;
    this.digitText.textContent = "!";
    this.setStatus(message);
    this.retryButton.hidden = !retryable;
  }

  /** A message without changing the state, e.g. "Draw a digit first". */
  setStatus(message) {
    // Rewriting the same text could make some screen readers announce it again.
    if (this.status.textContent.trim() !== message) this.status.textContent = message;
  }

  // --- Feedback ------------------------------------------------------------------------------

  showLabelChoices(show = true) {
    this.labelChoices.hidden = !show;
    this.wrongButton.setAttribute("aria-expanded", String(show));
  }

  setFeedbackStatus(message) {
    this.feedbackStatus.textContent = message;
  }

  /** Mark which label was sent, so a second press shows what the page remembers. */
  markLabel(digit) {
    for (const button of this.labelButtons) {
      button.setAttribute("aria-pressed", String(Number(button.dataset.label) === digit));
    }
  }

  // --- Internals -----------------------------------------------------------------------------

  // Every state starts from a clean slate, so nothing from an old answer leaks into a new one.
  setState(state) {
    this.prediction.dataset.state = state;
    delete this.prediction.dataset.digit;
    delete this.prediction.dataset.isDigit;
    this.closest.hidden = true;
    this.closest.textContent = "";
    delete this.prediction.dataset.reason;
    this.digitText.textContent = state === "pending" ? "" : "?";
    this.confidence.textContent = "";
    delete this.confidence.dataset.value;
    this.retryButton.hidden = true;
    this.modelInput.hidden = true;
    this.modelInput.removeAttribute("src");
    this.modelVersion.hidden = true;
    this.feedback.hidden = true;
    this.showLabelChoices(false);
    this.markLabel(-1);
    this.setFeedbackStatus("");
    this.setBars([], -1);
  }

  setBars(probabilities, best) {
    // Ten "no answer yet" items would only be noise to a screen reader before there is an answer.
    this.barList.setAttribute("aria-hidden", String(probabilities.length === 0));
    this.bars.forEach((bar, digit) => {
      const p = Number(probabilities[digit] ?? 0);
      const percent = formatPercent(p);
      bar.fill.style.height = `${Math.max(0, Math.min(1, p)) * 100}%`;
      bar.value.textContent = probabilities.length ? percent : "";
      bar.item.classList.toggle("is-best", digit === best);
      // One phrase per digit for screen readers, e.g. "7: 98%"; the columns themselves are hidden.
      bar.spoken.textContent = probabilities.length ? `${digit}: ${percent}` : "";
    });
  }
}

/** Ten columns, one per digit, built once; setBars only changes heights and text. */
function buildBars(list) {
  return Array.from({ length: 10 }, (_, digit) => {
    const item = document.createElement("li");
    item.className = "prob";
    item.dataset.testid = `prob-${digit}`;
    item.innerHTML =
      '<span class="visually-hidden"></span>' +
      '<span class="prob-value" aria-hidden="true"></span>' +
      '<span class="prob-track" aria-hidden="true"><span class="prob-fill"></span></span>' +
      `<span class="prob-digit" aria-hidden="true">${digit}</span>`;
    list.append(item);
    return {
      item,
      fill: item.querySelector(".prob-fill"),
      value: item.querySelector(".prob-value"),
      spoken: item.querySelector(".visually-hidden"),
    };
  });
}

/** 0.9812 -> "98%"; below 1% and above 99% say so instead of rounding to 0% or 100%. */
export function formatPercent(p) {
  const value = Number(p) * 100;
  if (!Number.isFinite(value)) return "–";
  if (value > 0 && value < 1) return "<1%";
  if (value > 99 && value < 100) return ">99%";
  return `${Math.round(value)}%`;
}
