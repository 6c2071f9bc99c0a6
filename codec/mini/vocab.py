"""The read-out's character vocabularies: CTC blank, unknown, and the characters each reads.

`mini` reads `EN` (printable ASCII, `\\n`, `\\t` and 36 common non-ASCII characters);
`mini-zh` reads `ZH`: the same characters with the same ids, then GB2312 (its 682
symbols: full-width punctuation, full-width ASCII, kana, Greek, Cyrillic, box drawing;
and its 6,763 hanzi), then the characters the Chinese training text needs beyond those.
A checkpoint names its vocabulary (`MiniConfig.vocab`); the module-level functions are
`EN`'s, as they always were.

    python -c "from codec.mini.vocab import ZH; print(ZH.n_classes, ZH.decode(ZH.encode('中文')))"
"""

from __future__ import annotations

import functools
import math

from data.errors import BadInput
from render.charsets import gb2312_chars  # noqa: F401 (also this module's API)
from render.fonts import is_wide

# Non-ASCII characters common in English technical prose (and shown by the mini font).
EXTRA_CHARS = "’‘“”—–…°ßéèêàâçüöäñÉ×·•→≤≥±µ§©®€£¥"
CHARS = "\n\t" + "".join(chr(i) for i in range(32, 127)) + EXTRA_CHARS
BLANK, UNK = 0, 1
# An unknown character costs the model's UNK probability plus a uniform choice among
# 2^16 code points, so the likelihood stays a (sub-normalised) distribution over texts.
UNK_NATS = 16 * math.log(2.0)

# Characters of the Chinese training text (data/corpus/zh.py sources) outside GB2312 that
# it uses at least 20 times and the page font draws: the no-break space (7,357 times) and
# the check mark (52); not the magnifier emoji and its variation selector (1,209 each).
ZH_EXTRA_CHARS = "\xa0✓"


class Vocab:
    """Characters -> class ids (2 + index; 0 is the CTC blank, 1 unknown) and back."""

    def __init__(self, name: str, chars: str):
        if len(set(chars)) != len(chars):
            raise ValueError(f"vocabulary {name!r} repeats characters")
        self.name = name
        self.chars = chars
        self.n_classes = len(chars) + 2
        self.index = {ch: i + 2 for i, ch in enumerate(chars)}
        # Character cells each class takes on the mini page (wide CJK forms take two; the
        # blank, unknown and every other character one): the causal reader's positions.
        self.widths = [1, 1] + [2 if is_wide(ch) else 1 for ch in chars]

    def encode(self, text: str) -> list[int]:
        index = self.index
        return [index.get(ch, UNK) for ch in text]

    def decode(self, ids) -> str:
        chars = self.chars
        return "".join(chars[i - 2] if i >= 2 else "\ufffd" for i in ids)

    def n_unknown(self, text: str) -> int:
        index = self.index
        return sum(ch not in index for ch in text)

    def __contains__(self, ch: str) -> bool:
        return ch in self.index

    def __repr__(self) -> str:
        return f"Vocab({self.name!r}, {self.n_classes} classes)"


def _zh_chars() -> str:
    symbols, hanzi = gb2312_chars()
    seen = set(CHARS)
    out = []
    for ch in symbols + hanzi + ZH_EXTRA_CHARS:
        if ch not in seen:
            seen.add(ch)
            out.append(ch)
    return CHARS + "".join(out)


EN = Vocab("en", CHARS)
N_CLASSES = EN.n_classes
_INDEX = EN.index


@functools.cache
def _zh() -> Vocab:
    return Vocab("zh", _zh_chars())


VOCABS = ("en", "zh")


def get_vocab(name: str) -> Vocab:
    """The vocabulary called `name` ("en": `mini`'s, "zh": `mini-zh`'s)."""
    if name == "en":
        return EN
    if name == "zh":
        return _zh()
    raise BadInput(f"unknown mini vocabulary {name!r}; choose one of {', '.join(VOCABS)}")


def __getattr__(name: str):  # ZH is built on first use (7,000 codec look-ups)
    if name == "ZH":
        return _zh()
    raise AttributeError(name)


def encode(text: str) -> list[int]:
    return EN.encode(text)


def decode(ids) -> str:
    return EN.decode(ids)


def n_unknown(text: str) -> int:
    return EN.n_unknown(text)
