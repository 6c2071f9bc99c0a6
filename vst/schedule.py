"""The learning-rate schedule over a training budget (steps, wall-clock or FLOPs), and the
budget already spent by a run being resumed."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vst.train_config import TrainConfig


def budget_used(step: int, cfg: TrainConfig, seconds: float = 0.0, flops: float = 0.0) -> float:
    """Share of the training budget spent: steps, and wall-clock or FLOPs when capped
    (whichever runs out first), so a run sized by time or compute still anneals."""
    used = step / max(1, cfg.steps)
    if cfg.max_seconds:
        used = max(used, seconds / cfg.max_seconds)
    if cfg.max_flops:
        used = max(used, flops / cfg.max_flops)
    return used


def lr_at(step: int, cfg: TrainConfig, used: float | None = None) -> float:
    """Learning rate after linear warmup (in steps), by the share of the budget used."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if used is None:
        used = step / max(1, cfg.steps)
    w = cfg.warmup / max(1, cfg.steps)
    t = min(1.0, max(0.0, (used - w) / max(1e-9, 1 - w)))
    lo = cfg.min_lr_ratio
    if cfg.schedule == "constant":
        f = 1.0
    elif cfg.schedule == "linear":
        f = 1 - (1 - lo) * t
    elif cfg.schedule == "wsd":  # warmup-stable-decay: flat, then linear decay over the last 20%
        f = 1.0 if t < 0.8 else 1 - (1 - lo) * (t - 0.8) / 0.2
    elif cfg.schedule == "cosine":
        f = lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * t))
    else:
        raise ValueError(f"unknown schedule {cfg.schedule!r}")
    return cfg.lr * f


def _resumed(ckpt: Path, key: str) -> float:
    from vst.checkpoint import read_state

    tail = read_state(ckpt).get("history_tail") or [{}]
    return float(tail[-1].get(key, 0.0))


def resumed_flops(ckpt: Path) -> float:
    """Training FLOPs up to a checkpoint (its last history record carries the count)."""
    return _resumed(ckpt, "train_flops")


def resumed_seconds(ckpt: Path) -> float:
    """Training seconds up to a checkpoint."""
    return _resumed(ckpt, "train_seconds")


def resumed_total(ckpt: Path, key: str) -> float:
    """Any running total the history records carry (positions_seen, ...) at a checkpoint;
    0 for a checkpoint written before the total was recorded."""
    return _resumed(ckpt, key)
