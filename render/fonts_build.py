"""Regenerate the shipped CJK font: a fontTools subset of Noto Sans CJK SC (OFL 1.1).

    apt-get install -y fonts-noto-cjk            # the source: NotoSansCJK-Regular.ttc
    python -m render.fonts_build                 # writes render/fonts/NotoSansCJKsc-VST.otf
    python -m render.fonts_build --source /path/NotoSansCJK-Regular.ttc#2 --out /tmp/x.otf

The subset keeps every ideograph the source has in the URO block (U+4E00-9FFF: 20,976, so
all 6,763 GB2312 hanzi and the common traditional and Japanese forms), every GB2312
character (7,445), CJK symbols and punctuation, hiragana and katakana, all 11,172 Hangul
syllables plus compatibility jamo, CJK compatibility ideographs, and the full-width and
half-width forms (U+FF00-FFEF): 34,030 code points, 6.3 MB. It drops hinting and the
OpenType layout tables: layout places every glyph by the `hmtx` advances alone (see
render/fonts.py) and the backends turn kerning and ligatures off, so neither is used, and
leaving them out keeps the file small.

The family is renamed ("Noto Sans CJK SC VST") so that fontconfig (the cairo backend) can
never confuse the subset with a full Noto CJK installed on the host. The OFL allows this
modified version; upstream reserves only the name "Source", which the subset does not use.
The output is deterministic for a given source font and fontTools version (no timestamps).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from render.charsets import gb2312_chars

SOURCE = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc#2"  # face 2: SC
OUT = Path(__file__).parent / "fonts" / "NotoSansCJKsc-VST.otf"
FAMILY = "Noto Sans CJK SC VST"
POSTSCRIPT = "NotoSansCJKsc-VST-Regular"

RANGES: tuple[tuple[int, int], ...] = (
    (0x3000, 0x303F),  # CJK symbols and punctuation: 、。〈〉《》「」『』【】〜
    (0x3040, 0x30FF),  # hiragana, katakana
    (0x3130, 0x318F),  # Hangul compatibility jamo
    (0x31F0, 0x31FF),  # katakana phonetic extensions
    (0x3200, 0x33FF),  # enclosed CJK letters, CJK compatibility (㈱ ㎡)
    (0x4E00, 0x9FFF),  # CJK unified ideographs (URO)
    (0xAC00, 0xD7A3),  # Hangul syllables
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFE30, 0xFE4F),  # CJK compatibility forms (vertical brackets)
    (0xFF00, 0xFFEF),  # half-width and full-width forms: ！＂＃ ... ～ and ｡｢｣
)


def codepoints() -> set[int]:
    cps = {ord(c) for c in "".join(gb2312_chars())}  # symbols and hanzi
    for lo, hi in RANGES:
        cps.update(range(lo, hi + 1))
    return cps


def build(source: str = SOURCE, out: Path = OUT) -> Path:
    """Write the subset of `source` ('file.ttc#face' or 'file.otf') to `out`."""
    from fontTools import subset
    from fontTools.ttLib import TTFont

    from data.errors import MissingPath

    path, _, face = source.partition("#")
    if not Path(path).is_file():
        raise MissingPath(f"source font {path} does not exist",
                          hint="apt-get install fonts-noto-cjk, or pass --source")
    font = TTFont(path, fontNumber=int(face or 0), recalcTimestamp=False)
    options = subset.Options()
    options.layout_features = []  # no shaping anywhere: advances come from hmtx alone
    options.hinting = False
    options.notdef_outline = True  # .notdef keeps its box, as in the original
    options.name_IDs = [0, 1, 2, 3, 4, 5, 6, 13, 14]  # copyright, names, licence
    options.drop_tables += ["vmtx", "vhea", "VORG", "DSIG"]  # horizontal text only
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=sorted(codepoints()))
    subsetter.subset(font)
    names = font["name"]
    for record in list(names.names):
        if record.nameID in (1, 4):
            names.setName(FAMILY, record.nameID, record.platformID, record.platEncID,
                          record.langID)
        elif record.nameID == 3:
            names.setName(f"{POSTSCRIPT};subset", 3, record.platformID, record.platEncID,
                          record.langID)
        elif record.nameID == 6:
            names.setName(POSTSCRIPT, 6, record.platformID, record.platEncID, record.langID)
    if "CFF " in font:
        font["CFF "].cff.fontNames = [POSTSCRIPT]
    out.parent.mkdir(parents=True, exist_ok=True)
    font.save(str(out))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=SOURCE, help="source font, 'file.ttc#face'")
    parser.add_argument("--out", type=Path, default=OUT, help="the subset to write")
    args = parser.parse_args(argv)
    out = build(args.source, args.out)
    print(f"{out}: {out.stat().st_size / 1e6:.2f} MB, {len(codepoints())} code points asked")


if __name__ == "__main__":
    main()
