"""Train the digit network on MNIST (plus, optionally, collected drawings) and write a model card.

The shipped weights come from two stages (README, "Model card"):

    # stage 1: MNIST only, all 60,000, 40 epochs (~34 min at 1 thread)
    python -m ml.train --val-size 0 --canvas-share 0 --outliers 0 --out /tmp/stage1.pth
    # stage 2: fine-tune on MNIST + canvas digits + outlier exposure, then calibrate
    python -m ml.train --init /tmp/stage1.pth --epochs 6 --lr 5e-4   # -> ml/digit_model.pth

    python -m ml.train --epochs 1 --limit 2000  # a smoke run
    python -m ml.train --extra drawings.npz --init ml/digit_model.pth --epochs 3   # fine-tune

Every batch mixes MNIST digits with `canvas_share` of canvas digits (training digits re-drawn with
a pen or as low-res scans: ml/drawn.py) and adds `outliers` synthetic non-digits (ml/nondigits.py)
whose target is the uniform distribution (outlier exposure). At the end the temperature and the
digit threshold are fitted on the validation split (ml/calibration.py) and saved with the weights.
Validation is a seeded slice of the training split; the test split is read once, at the end, for
the model card (skip it with --no-test).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from ml.augment import AugmentConfig, augment
from ml.calibration import DEFAULT_REJECT_RATE, Calibration
from ml.checkpoint import load_checkpoint, save_checkpoint
from ml.data import Split, checksums, ensure_mnist, load_extra, load_split, train_val_split
from ml.drawn import canvas_digits
from ml.evaluate import DEFAULT_WEIGHTS, calibrate, evaluate_images
from ml.model import DigitNet, parameter_count
from ml.nondigits import nondigits_for_training
from ml.predictor import best_device
from ml.preprocess import MNIST_MEAN, MNIST_STD
from ml.strokes import multiply_drawings


@dataclass
class TrainConfig:
    epochs: int = 40
    batch_size: int = 128
    lr: float = 3e-3  # OneCycle peak
    weight_decay: float = 1e-2
    label_smoothing: float = 0.05
    ema_decay: float = 0.999
    val_size: int = 5000
    seed: int = 1
    limit: int | None = None  # train on the first N training images only (smoke runs)
    extra: Path | None = None  # .npz of extra labelled 28x28 drawings
    extra_weight: int = 1  # how many times each extra drawing is seen per epoch
    init: Path | None = None  # start from these weights (fine-tuning)
    out: Path = DEFAULT_WEIGHTS
    evaluate_test: bool = True
    threads: int | None = None
    device: str | None = None  # None: CUDA when available, else the CPU
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    canvas_share: float = 0.3  # share of each batch's digits taken from the canvas-digit pool
    canvas_pool: int = 20_000  # canvas digits rendered (once) from the training split
    outliers: int = 32  # synthetic non-digits added to each batch (0: no outlier exposure)
    outlier_weight: float = 0.5  # Hendrycks et al. (2019)'s lambda
    outlier_pool: int = 20_000
    # Learning without forgetting (Li and Hoiem, 2017): with --init, each batch's MNIST digits also
    # learn the starting weights' outputs (KL at `distill_temperature`), so a fine-tune on canvas
    # digits and non-digits keeps what the first stage read right. 0: off.
    distill_weight: float = 0.0
    distill_temperature: float = 2.0
    reject_rate: float = DEFAULT_REJECT_RATE  # validation digits the threshold may turn away
    stroke_copies: int = 3  # fresh pen renderings of each extra drawing that has its strokes

    def describe(self) -> dict:
        d = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


ProgressCallback = Callable[[int, int, dict], None]


def card_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def train(
    config: TrainConfig,
    progress: ProgressCallback | None = None,
    extra: Split | None = None,
    show_bar: bool = True,
) -> dict:
    """Train, write the weights and the model card beside them, and return the card."""
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    started = time.monotonic()

    full_train = load_split("train")
    train_split, val_split = train_val_split(full_train, config.val_size, config.seed)
    if config.limit:
        train_split = Split(train_split.images[: config.limit], train_split.labels[: config.limit])
    if extra is None and config.extra:
        extra = _with_stroke_copies(load_extra(config.extra), config.extra, config)
    images, labels, n_extra = _training_set(train_split, extra, config.extra_weight)
    canvas_images, canvas_labels, outlier_images = _pools(config, train_split, show_bar)

    device = torch.device(config.device) if config.device else best_device()
    if config.init:
        model, _ = load_checkpoint(config.init, device)
        model.train()
    else:
        model = DigitNet().to(device)
    teacher = _teacher(config, model)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
    averaged = cast(DigitNet, ema.module)  # AveragedModel keeps a copy of the DigitNet it got
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    steps_per_epoch = max(1, len(labels) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, epochs=config.epochs, steps_per_epoch=steps_per_epoch
    )

    history = []
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(labels), generator=generator)
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch}/{config.epochs}",
            disable=not show_bar,
            leave=False,
        )
        running = 0.0
        for step in bar:
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            batch, targets = images[idx], labels[idx]
            swap = torch.zeros(len(idx), dtype=torch.bool)
            if len(canvas_labels) and config.canvas_share > 0:
                swap = torch.rand(len(idx), generator=generator) < config.canvas_share
                pick = torch.randint(len(canvas_labels), (int(swap.sum()),), generator=generator)
                batch, targets = batch.clone(), targets.clone()
                batch[swap], targets[swap] = canvas_images[pick], canvas_labels[pick]
            n_digits = len(batch)
            if len(outlier_images) and config.outliers > 0:
                pick = torch.randint(len(outlier_images), (config.outliers,), generator=generator)
                batch = torch.cat([batch, outlier_images[pick]])
            batch = batch.to(torch.float32).div_(255.0).unsqueeze(1)
            batch = (augment(batch, config.augment, generator) - MNIST_MEAN) / MNIST_STD
            # Augmented on the CPU (one seeded generator, the same run on any machine), then moved.
            logits = model(batch.to(device, non_blocking=True))
            loss = F.cross_entropy(
                logits[:n_digits],
                targets.to(device, non_blocking=True),
                label_smoothing=config.label_smoothing,
            )
            if len(logits) > n_digits:
                # Outlier exposure: cross-entropy from the non-digits' outputs to uniform.
                uniform_ce = -F.log_softmax(logits[n_digits:], dim=1).mean()
                loss = loss + config.outlier_weight * uniform_ce
            if teacher is not None:
                loss = loss + config.distill_weight * _distillation(
                    logits[:n_digits][~swap.to(device)],
                    teacher,
                    batch[:n_digits][~swap],
                    config.distill_temperature,
                    device,
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            ema.update_parameters(model)
            running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
            if step % 20 == 0:
                bar.set_postfix(loss=f"{running:.4f}")
        # --val-size 0 (the final run on all 60,000 once the recipe is chosen) has no validation.
        val = (
            evaluate_images(averaged, val_split.images, val_split.labels)["accuracy"]
            if len(val_split)
            else None
        )
        history.append({"epoch": epoch, "loss": round(running, 4), "val_accuracy": val})
        if show_bar:
            tqdm.write(f"epoch {epoch}/{config.epochs}  loss {running:.4f}  val_acc {val}")
        if progress:
            progress(epoch, config.epochs, history[-1])

    final = averaged.eval().cpu()  # the card and the checkpoint are device-independent
    calibration, validation = Calibration(), None
    if len(val_split):
        calibration, validation = calibrate(final, val_split, config.seed, config.reject_rate)
        if show_bar:
            tqdm.write(f"calibration {calibration.as_dict()}  validation {validation}")
    elapsed = time.monotonic() - started
    card: dict[str, Any] = {
        "architecture": "conv32-conv64-dense128 (ml/model.py)",
        "parameters": parameter_count(final),
        "epochs": config.epochs,
        "training_seconds": round(elapsed, 1),
        "machine": _machine(device),
        "torch": torch.__version__,
        "train_images": int(len(train_split)),
        "extra_drawings": n_extra,
        "val_accuracy": history[-1]["val_accuracy"] if history else None,
        "history": history,
        "calibration": calibration.as_dict(),
        "validation": validation,
        "canvas_digits": int(len(canvas_labels)),
        "outlier_pool": int(len(outlier_images)),
        "recipe": config.describe(),
        "data_sha256": checksums(),
    }
    if config.evaluate_test:
        test = load_split("test")
        card["test"] = evaluate_images(final, test.images, test.labels)
        card["test_accuracy"] = card["test"]["accuracy"]
    meta = {"card": json.dumps(card), "calibration": calibration.as_dict()}
    card["sha256"] = save_checkpoint(final, config.out, meta=meta)
    card_path(config.out).write_text(json.dumps(card, indent=2) + "\n")
    return card


def _teacher(config: TrainConfig, model: DigitNet) -> DigitNet | None:
    """A frozen copy of the starting weights (`model` as loaded from --init, before any step),
    which --distill-weight keeps the MNIST digits close to."""
    if config.distill_weight <= 0:
        return None
    if config.init is None:
        raise ValueError("--distill-weight needs --init: it keeps the starting weights' answers")
    return copy.deepcopy(model).eval().requires_grad_(False)


def _distillation(
    student_logits: torch.Tensor,
    teacher: DigitNet,
    inputs: torch.Tensor,
    temperature: float,
    device: torch.device,
) -> torch.Tensor:
    """KL(teacher || student) at `temperature`, scaled by its square as Hinton et al. (2015) do,
    over the MNIST digits of a batch (the same augmented inputs the student saw)."""
    if len(student_logits) == 0:
        return student_logits.sum()
    with torch.no_grad():
        target = F.softmax(teacher(inputs.to(device, non_blocking=True)) / temperature, dim=1)
    return (
        F.kl_div(F.log_softmax(student_logits / temperature, dim=1), target, reduction="batchmean")
        * temperature**2
    )


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} CPU x{torch.get_num_threads()} threads"


def _pools(
    config: TrainConfig, train_split: Split, show_bar: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Canvas digits from (a seeded sample of) the training split, and training non-digits."""
    started = time.monotonic()
    empty = torch.zeros(0, 28, 28, dtype=torch.uint8)
    canvas_images, canvas_labels = empty, torch.zeros(0, dtype=torch.int64)
    if config.canvas_share > 0 and config.canvas_pool > 0:
        rng = np.random.default_rng(config.seed)
        chosen = rng.permutation(len(train_split))[: config.canvas_pool]
        drawn, drawn_labels = canvas_digits(
            train_split.images[chosen], train_split.labels[chosen], seed=config.seed
        )
        canvas_images, canvas_labels = torch.from_numpy(drawn), torch.from_numpy(drawn_labels)
    outliers = empty
    if config.outliers > 0 and config.outlier_pool > 0:
        # A smoke run on a slice needs no more non-digits than it has digits.
        n = min(config.outlier_pool, len(train_split))
        outliers = torch.from_numpy(nondigits_for_training(n)[0])
    if show_bar:
        tqdm.write(
            f"pools: {len(canvas_labels)} canvas digits, {len(outliers)} non-digits "
            f"({time.monotonic() - started:.0f} s)"
        )
    return canvas_images, canvas_labels, outliers


def _with_stroke_copies(extra: Split, path: Path, config: TrainConfig) -> Split:
    """Add `stroke_copies` re-drawings of every extra drawing whose strokes the .npz carries
    (`strokes`: one JSON string per drawing, empty when there are none)."""
    with np.load(path) as archive:
        if "strokes" not in archive or config.stroke_copies <= 0:
            return extra
        texts = [str(text) for text in archive["strokes"]]
    drawings = [json.loads(text) if text else None for text in texts]
    images, labels = multiply_drawings(
        drawings, extra.labels, config.stroke_copies, seed=config.seed
    )
    return Split(np.concatenate([extra.images, images]), np.concatenate([extra.labels, labels]))


def _training_set(
    train_split: Split, extra: Split | None, extra_weight: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    images, labels = [train_split.images], [train_split.labels]
    n_extra = 0
    if extra is not None and len(extra):
        n_extra = len(extra)
        images += [extra.images] * max(1, extra_weight)
        labels += [extra.labels] * max(1, extra_weight)
    return (
        torch.from_numpy(np.concatenate(images)),
        torch.from_numpy(np.concatenate(labels)),
        n_extra,
    )


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    defaults = TrainConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument(
        "--val-size",
        type=int,
        default=defaults.val_size,
        help="training images held out for validation (0: train on all 60,000)",
    )
    p.add_argument("--limit", type=int)
    p.add_argument("--extra", type=Path, help=".npz with images (N x 28 x 28 uint8) and labels")
    p.add_argument("--extra-weight", type=int, default=defaults.extra_weight)
    p.add_argument("--init", type=Path, help="fine-tune from these weights")
    p.add_argument("--out", type=Path, default=defaults.out)
    p.add_argument("--no-test", action="store_true", help="skip the test-split evaluation")
    p.add_argument("--threads", type=int)
    p.add_argument("--device", help="cuda or cpu (default: CUDA when available)")
    p.add_argument("--elastic-px", type=float, default=defaults.augment.elastic_px)
    p.add_argument(
        "--canvas-share",
        type=float,
        default=defaults.canvas_share,
        help="share of each batch's digits drawn from the canvas-digit pool (0: MNIST only)",
    )
    p.add_argument("--canvas-pool", type=int, default=defaults.canvas_pool)
    p.add_argument(
        "--outliers",
        type=int,
        default=defaults.outliers,
        help="non-digits per batch for outlier exposure (0: none)",
    )
    p.add_argument("--outlier-weight", type=float, default=defaults.outlier_weight)
    p.add_argument("--outlier-pool", type=int, default=defaults.outlier_pool)
    p.add_argument(
        "--distill-weight",
        type=float,
        default=defaults.distill_weight,
        help="with --init: keep MNIST digits' outputs close to the starting weights' (0: off)",
    )
    p.add_argument("--distill-temperature", type=float, default=defaults.distill_temperature)
    p.add_argument("--reject-rate", type=float, default=defaults.reject_rate)
    p.add_argument(
        "--stroke-copies",
        type=int,
        default=defaults.stroke_copies,
        help="re-drawings of each --extra drawing that carries its strokes",
    )
    p.add_argument("--download", action="store_true", help="fetch MNIST first if missing")
    args = p.parse_args(argv)
    # Missing MNIST: fetched only when asked, else the exit message says where to put it.
    ensure_mnist(download_if_missing=args.download)
    return TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        val_size=args.val_size,
        limit=args.limit,
        extra=args.extra,
        extra_weight=args.extra_weight,
        init=args.init,
        out=args.out,
        evaluate_test=not args.no_test,
        threads=args.threads,
        device=args.device,
        augment=AugmentConfig(elastic_px=args.elastic_px),
        canvas_share=args.canvas_share,
        canvas_pool=args.canvas_pool,
        outliers=args.outliers,
        outlier_weight=args.outlier_weight,
        outlier_pool=args.outlier_pool,
        distill_weight=args.distill_weight,
        distill_temperature=args.distill_temperature,
        reject_rate=args.reject_rate,
        stroke_copies=args.stroke_copies,
    )


def main(argv: list[str] | None = None) -> None:
    card = train(parse_args(argv))
    summary = {k: card.get(k) for k in ("test_accuracy", "val_accuracy", "training_seconds")}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
