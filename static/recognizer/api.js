// A small client for the recognizer API (/api/v1/): submit a drawing, wait for its answer, label it.
//
// Errors come out as ApiError with a `kind` the page can act on:
//   "http"    the API said no (4xx); `message` is the API's own text, `status` and `code` are set
//   "server"  a 5xx answer
//   "network" the request never got an answer (offline, server down)
//   "timeout" no final answer before the deadline
//   "failed"  the worker gave up on this drawing (status "failed"); `message` is its error

// The longest single long-poll we ask for (the POST's own wait, then each GET's); the server caps
// it at MAX_WAIT_SECONDS (10 s) anyway.
const LONG_POLL_SECONDS = 5;
// Never poll faster than this, in case a server ignores ?wait= and answers at once.
const MIN_POLL_INTERVAL_MS = 250;
// A poll that fails on the network is tried again after this pause, until the deadline.
const NETWORK_RETRY_MS = 1000;
// How long past its own ?wait= a poll may take before we drop it (slow proxies, busy server).
const POLL_GRACE_MS = 2000;

export class ApiError extends Error {
  constructor(kind, message, { status = 0, code = "", retryable = true } = {}) {
    super(message);
    this.name = "ApiError";
    this.kind = kind;
    this.status = status;
    this.code = code;
    this.retryable = retryable;
  }
}

/**
 * Django's CSRF token: the csrftoken cookie (the page view sets it), else the one the template
 * rendered into <meta name="csrf-token">. SessionAuthentication rejects unsafe requests from a
 * logged-in user without it.
 */
export function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  if (match) return decodeURIComponent(match[1]);
  return document.querySelector('meta[name="csrf-token"]')?.content ?? "";
}

/**
 * The API answers with absolute URLs built from the request; behind a TLS proxy that forgets to say
 * so they could be http:// on an https:// page, which the browser would block as mixed content.
 * Same host, then keep only the path.
 */
export function sameOriginPath(url) {
  const parsed = new URL(url, window.location.href);
  if (parsed.host === window.location.host) return parsed.pathname + parsed.search;
  return parsed.href;
}

/**
 * POST a drawing and let the server hold the request until the answer is there (?wait=). Resolves
 * to the finished submission (200), or to {id, status: "queued", url} (202) when the wait ran out;
 * either has the `label_token` that labelling it needs. `drawing` is the drawing's id: the server
 * supersedes its earlier submissions.
 */
export function submitDrawing(apiBase, { image, strokes, drawing }, { signal, timeoutMs } = {}) {
  const waitSeconds = Math.min(LONG_POLL_SECONDS, (timeoutMs ?? LONG_POLL_SECONDS * 1000) / 1000);
  return request(`${withSlash(apiBase)}submissions/?wait=${waitSeconds.toFixed(1)}`, {
    method: "POST",
    body: { image, strokes, drawing, source: "page" },
    signal,
    timeoutMs: timeoutMs ? timeoutMs + POLL_GRACE_MS : undefined,
  });
}

/** The submission if it is final: itself when done, an ApiError thrown when failed, else null. */
export function finalAnswer(submission) {
  if (submission.status === "done") return submission;
  if (submission.status === "failed") {
    throw new ApiError("failed", submission.error || "The recognizer could not read this drawing.", {
      code: submission.error_code || "",
    });
  }
  return null;
}

/** A random id for a new drawing (crypto.randomUUID needs a secure context; this does not). */
export function newDrawingId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
  bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * Long-poll a submission's URL until it is done or failed, or until `timeoutMs` has passed.
 * `onProgress(submission)` sees every intermediate answer (queued, processing).
 */
export async function waitForAnswer(url, { timeoutMs, signal, onProgress } = {}) {
  const deadline = performance.now() + timeoutMs;
  const path = sameOriginPath(url);
  for (;;) {
    const remainingMs = deadline - performance.now();
    if (remainingMs <= 0) break;
    const waitSeconds = Math.min(LONG_POLL_SECONDS, remainingMs / 1000);
    const started = performance.now();
    let submission;
    try {
      submission = await request(`${path}${path.includes("?") ? "&" : "?"}wait=${waitSeconds.toFixed(1)}`, {
        signal,
        timeoutMs: waitSeconds * 1000 + POLL_GRACE_MS,
      });
    } catch (error) {
      // A dropped connection or a 5xx mid-wait is usually brief (a restart, a proxy hiccup):
      // keep trying until the deadline rather than failing a drawing that may be answered.
      if (error instanceof ApiError && (error.kind === "network" || error.kind === "server")) {
        await sleep(Math.min(NETWORK_RETRY_MS, Math.max(0, deadline - performance.now())), signal);
        continue;
      }
      throw error;
    }
    if (finalAnswer(submission)) return submission;
    onProgress?.(submission);
    const elapsed = performance.now() - started;
    if (elapsed < MIN_POLL_INTERVAL_MS) await sleep(MIN_POLL_INTERVAL_MS - elapsed, signal);
  }
  const seconds = Math.round(timeoutMs / 1000);
  throw new ApiError("timeout", `Timed out: no answer after ${seconds} s. Your drawing is kept; press Retry.`);
}

/**
 * Tell the API which digit it really was; resolves to the updated submission. `labelToken` is the
 * label_token of the submit's answer: only the client that sent a drawing may label it.
 */
export function sendLabel(submissionUrl, digit, { signal, labelToken } = {}) {
  return request(`${withSlash(sameOriginPath(submissionUrl))}label/`, {
    method: "POST",
    body: { correct_label: digit, label_token: labelToken },
    signal,
  });
}

// --- Plumbing --------------------------------------------------------------------------------

async function request(url, { method = "GET", body, signal, timeoutMs } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
  const controller = new AbortController();
  const abort = () => controller.abort();
  signal?.addEventListener("abort", abort, { once: true });
  const timer = timeoutMs ? setTimeout(abort, timeoutMs) : null;
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      signal: controller.signal,
    });
  } catch (error) {
    if (signal?.aborted) throw error; // the page gave up on this request: not an error to show
    throw new ApiError("network", "Could not reach the server. Check your connection and press Retry.");
  } finally {
    if (timer) clearTimeout(timer);
    signal?.removeEventListener("abort", abort);
  }
  const data = await response.json().catch(() => null);
  if (response.ok) return data ?? {};
  throw errorFromResponse(response, data);
}

function errorFromResponse(response, data) {
  const status = response.status;
  const code = data?.code ?? "";
  if (status === 429) {
    const after = Number(response.headers.get("Retry-After"));
    const wait = Number.isFinite(after) && after > 0 ? ` Try again in ${Math.ceil(after)} s.` : "";
    return new ApiError("http", `Too many drawings at once: please slow down.${wait}`, {
      status,
      code: code || "throttled",
    });
  }
  if (status >= 500) {
    return new ApiError("server", "The server had a problem. Press Retry in a moment.", { status, code });
  }
  // Other 4xx: the drawing itself was refused (empty, too large...); sending it again will not help.
  const message = data?.message || `The server refused the request (HTTP ${status}).`;
  return new ApiError("http", message, { status, code, retryable: false });
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(signal.reason);
      },
      { once: true },
    );
  });
}

function withSlash(url) {
  return url.endsWith("/") ? url : `${url}/`;
}
