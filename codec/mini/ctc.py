"""CTC pieces of the read-out: band likelihoods and best-path decoding, over UTF-8 bytes."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from codec.mini.model import BLANK

UNIFORM_BYTE_NATS = math.log(256.0)  # cost charged for bytes a band has no frames left for


def ctc_frames_needed(target: bytes) -> int:
    """Frames CTC needs for `target`: one per byte plus a blank between equal neighbours."""
    return len(target) + sum(a == b for a, b in zip(target, target[1:]))


def fit_target(target: bytes, frames: int) -> tuple[bytes, int]:
    """Longest prefix CTC can emit in `frames`, and how many bytes were cut off."""
    if ctc_frames_needed(target) <= frames:
        return target, 0
    need, keep = 0, 0
    for i, b in enumerate(target):
        need += 1 + (i > 0 and target[i - 1] == b)
        if need > frames:
            break
        keep = i + 1
    return target[:keep], len(target) - keep


def band_nll(logits: torch.Tensor, targets: list[bytes]) -> torch.Tensor:
    """CTC negative log-likelihood in nats of each band's bytes. logits [N, T, 257] -> [N].

    Bytes that cannot fit the band's frames (very long lines, hanging whitespace) are
    charged log(256) each instead, so the result stays finite and an upper bound.
    """
    N, T, _ = logits.shape
    fitted = [fit_target(t, T) for t in targets]
    flat = [b + 1 for t, _ in fitted for b in t]
    target_tensor = torch.tensor(flat, dtype=torch.long)
    lengths = torch.tensor([len(t) for t, _ in fitted], dtype=torch.long)
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # [T, N, C]
    nll = F.ctc_loss(log_probs, target_tensor, torch.full((N,), T, dtype=torch.long), lengths,
                     blank=BLANK, reduction="none", zero_infinity=False)
    cut = torch.tensor([c for _, c in fitted], dtype=nll.dtype)
    return nll + cut * UNIFORM_BYTE_NATS


def best_path(logits: torch.Tensor) -> list[bytes]:
    """Greedy CTC decoding: argmax per frame, merge repeats, drop blanks. [N, T, C] -> bytes."""
    ids = logits.argmax(-1)
    keep = ids != BLANK
    keep[:, 1:] &= ids[:, 1:] != ids[:, :-1]
    return [bytes((row[mask] - 1).tolist()) for row, mask in zip(ids, keep)]
