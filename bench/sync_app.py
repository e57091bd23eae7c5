"""The synchronous baseline for bench/load_bench.py: the CNN in the web process, no queue or DB.

    python -m gunicorn bench.sync_app:app --workers 2 --bind 127.0.0.1:8001

One POST of the API's JSON body (`{"image": "data:image/png;base64,..."}`) is decoded,
preprocessed (ml/preprocess.py, as the service does) and predicted in the request, and answered
with the digit. A bare WSGI callable, so the figure is the model path plus gunicorn and nothing
else: what a service with the model in the web process could do on this machine.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from ml.predictor import Predictor
from ml.preprocess import PreprocessError, preprocess_bytes

WEIGHTS = Path(
    os.environ.get(
        "MODEL_WEIGHTS", Path(__file__).resolve().parent.parent / "ml" / "digit_model.pth"
    )
)
torch.set_num_threads(1)  # one process per core: more threads would only fight over them
PREDICTOR = Predictor(WEIGHTS, device="cpu")

StartResponse = Callable[[str, list[tuple[str, str]]], object]


def app(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(length))
        image = base64.b64decode(body["image"].split(",", 1)[-1])
        probabilities = PREDICTOR.predict(preprocess_bytes(image).tensor[None])[0]
    except (PreprocessError, ValueError, KeyError) as exc:
        return _answer(start_response, "400 Bad Request", {"code": "invalid", "message": str(exc)})
    digit = int(probabilities.argmax())
    answer = {
        "status": "done",
        "prediction": digit,
        "confidence": round(float(probabilities[digit]), 6),
        "probabilities": [round(float(p), 6) for p in probabilities],
    }
    return _answer(start_response, "200 OK", answer)


def _answer(start_response: StartResponse, status: str, body: dict) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]
