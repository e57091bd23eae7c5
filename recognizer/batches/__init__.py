"""Batch jobs: many images in one request, scored in chunks on the `batch` queue.

- `parsing`: the request into items (JSON, multipart, ZIP, .npy, IDX); no database.
- `jobs`: storing a job and its items, sending its chunks, cancelling, the stalled-job sweeper.
- `scoring`: what the worker does with one chunk: preprocess, one model call, bulk write-back.
- `results`: per-item results as JSON pages or CSV lines.

The request only unpacks and checks the container and stores every item as a Submission (source
"batch") in bulk. A chunk is a range of `batch_index` values and carries only ids through the
broker; it is idempotent, so a redelivered chunk never counts twice. Cancelling marks every item
still `queued` as `failed` with error_code "cancelled", so results and counters add up to the total.
"""
