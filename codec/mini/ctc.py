"""CTC pieces of the read-out: band likelihoods and best-path decoding, over characters."""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

from codec.mini import vocab

UNIFORM_CHAR_NATS = math.log(vocab.N_CLASSES - 1)  # charged for characters with no frame left
# (per vocabulary: log(n_classes - 1); `mini`'s value above)


def ctc_frames_needed(ids: list[int]) -> int:
    """Frames CTC needs: one per character plus a blank between equal neighbours."""
    return len(ids) + sum(a == b for a, b in itertools.pairwise(ids))


def fit_target(ids: list[int], frames: int) -> tuple[list[int], int]:
    """Longest prefix CTC can emit in `frames`, and how many characters were cut off."""
    if ctc_frames_needed(ids) <= frames:
        return ids, 0
    need, keep = 0, 0
    for i, b in enumerate(ids):
        need += 1 + (i > 0 and ids[i - 1] == b)
        if need > frames:
            break
        keep = i + 1
    return ids[:keep], len(ids) - keep


def band_nll(logits: torch.Tensor, texts: list[str], chars: vocab.Vocab = vocab.EN
             ) -> torch.Tensor:
    """CTC negative log-likelihood (nats) of each band's text. logits [N, T, C] -> [N].

    Characters that cannot fit the band's frames (very long lines, hanging whitespace)
    are charged log(C - 1) each and unknown characters log(2^16) on top of the model's
    UNK probability, so the result stays finite and an upper bound.
    """
    N, T, _ = logits.shape
    fitted = [fit_target(chars.encode(t), T) for t in texts]
    flat = torch.tensor([i for ids, _ in fitted for i in ids], dtype=torch.long)
    lengths = torch.tensor([len(ids) for ids, _ in fitted], dtype=torch.long)
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # [T, N, C]
    nll = F.ctc_loss(log_probs, flat, torch.full((N,), T, dtype=torch.long), lengths,
                     blank=vocab.BLANK, reduction="none", zero_infinity=False)
    uniform = math.log(chars.n_classes - 1)
    extra = [cut * uniform + chars.n_unknown(t) * vocab.UNK_NATS
             for (_, cut), t in zip(fitted, texts)]
    return nll + torch.tensor(extra, dtype=nll.dtype)


def best_path(logits: torch.Tensor, chars: vocab.Vocab = vocab.EN) -> list[str]:
    """Greedy CTC decoding: argmax per frame, merge repeats, drop blanks. [N, T, C] -> str."""
    ids = logits.argmax(-1)
    keep = ids != vocab.BLANK
    keep[:, 1:] &= ids[:, 1:] != ids[:, :-1]
    return [chars.decode(row[mask].tolist()) for row, mask in zip(ids, keep)]
