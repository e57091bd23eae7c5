"""Checkpoints carry the network's configuration and metadata next to the weights (as nanoGPT's do),
so loading needs no guessing and works with `torch.load(weights_only=True)`."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from ml.model import DigitNet, DigitNetConfig


def save_checkpoint(model: DigitNet, path: Path, meta: dict[str, Any]) -> str:
    """Write the weights and return the file's SHA-256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"config": model.config.as_dict(), "state_dict": state, "meta": meta}, path)
    return file_sha256(path)


def load_checkpoint(path: Path, device: str | torch.device = "cpu") -> tuple[DigitNet, dict]:
    """The network in eval mode on `device`, and the metadata saved with it."""
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    model = DigitNet(DigitNetConfig(**checkpoint["config"]))
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval(), checkpoint.get("meta", {})


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
