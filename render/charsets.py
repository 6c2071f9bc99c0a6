"""Character sets the project enumerates from Python's own codecs: the CJK glyphs the
shipped font must cover (render/fonts_build.py) and the `mini-zh` vocabulary
(codec/mini/vocab.py) are both GB2312."""

from __future__ import annotations


def gb2312_chars() -> tuple[str, str]:
    """(symbols of rows 1-9, hanzi of rows 16-87) of GB2312, in code order, from Python's
    `gb2312` codec (every valid two-byte code)."""
    symbols, hanzi = [], []
    for row in range(0xA1, 0xF8):  # rows 1..87
        for col in range(0xA1, 0xFF):
            try:
                ch = bytes((row, col)).decode("gb2312")
            except UnicodeDecodeError:
                continue
            (hanzi if row >= 0xB0 else symbols).append(ch)
    return "".join(symbols), "".join(hanzi)
