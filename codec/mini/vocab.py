"""The read-out's character vocabulary: CTC blank, unknown, and the characters it reads."""

from __future__ import annotations

import math

# Non-ASCII characters common in English technical prose (and shown by the mini font).
EXTRA_CHARS = "’‘“”—–…°ßéèêàâçüöäñÉ×·•→≤≥±µ§©®€£¥"
CHARS = "\n\t" + "".join(chr(i) for i in range(32, 127)) + EXTRA_CHARS
BLANK, UNK = 0, 1
N_CLASSES = len(CHARS) + 2
_INDEX = {ch: i + 2 for i, ch in enumerate(CHARS)}
# An unknown character costs the model's UNK probability plus a uniform choice among
# 2^16 code points, so the likelihood stays a (sub-normalised) distribution over texts.
UNK_NATS = 16 * math.log(2.0)


def encode(text: str) -> list[int]:
    return [_INDEX.get(ch, UNK) for ch in text]


def decode(ids) -> str:
    return "".join(CHARS[i - 2] if i >= 2 else "\ufffd" for i in ids)


def n_unknown(text: str) -> int:
    return sum(ch not in _INDEX for ch in text)
