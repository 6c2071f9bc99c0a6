"""CJK text with a pip-only install: the shipped font, full-width layout, line breaking.

    HF_HUB_OFFLINE=1 pytest tests/test_cjk_render.py -q
"""

from __future__ import annotations

import math
import unicodedata

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from render import char_boxes, get_preset, paginate, rasterize
from render.fonts import SHIPPED_FALLBACKS, FontFace, font_chain, resolve_font, shipped_font_dir
from render.layout import NO_BREAK_AFTER, NO_BREAK_BEFORE, Typesetter

SHIPPED = SHIPPED_FALLBACKS[0]
MIXED = ("中文：你好，世界！「引号」（括号）《书名》【注】……——"
         "日本語のひらがなとカタカナ、ー。"
         "한국어 텍스트입니다. "
         "English text, ＡＢＣ０１２！？")
PRESETS = ("mini", "ds-tiny", "ds-base")


def gb2312_hanzi() -> list[str]:
    """The 6,763 hanzi of GB2312 (rows 16-87)."""
    out = []
    for hi in range(0xB0, 0xF8):
        for lo in range(0xA1, 0xFF):
            try:
                out.append(bytes([hi, lo]).decode("gb2312"))
            except UnicodeDecodeError:
                pass
    return out


def ksx1001_hangul() -> list[str]:
    """The 2,350 Hangul syllables of KS X 1001."""
    out = []
    for hi in range(0xB0, 0xC9):
        for lo in range(0xA1, 0xFF):
            try:
                out.append(bytes([hi, lo]).decode("euc_kr"))
            except UnicodeDecodeError:
                pass
    return out


# -- the shipped font ------------------------------------------------------------------------
def test_shipped_font_is_small_licensed_and_resolvable() -> None:
    path, face = resolve_font(SHIPPED)
    assert path.parent == shipped_font_dir() and face == 0
    assert path.stat().st_size <= 10 * 1024 * 1024
    licence = (shipped_font_dir() / "OFL.txt").read_text(encoding="utf-8")
    assert "SIL OPEN FONT LICENSE Version 1.1" in licence and "Noto Sans CJK" in licence


def test_shipped_font_covers_gb2312_kana_hangul_and_full_width_forms() -> None:
    cmap = FontFace.load(SHIPPED).cmap
    wanted = gb2312_hanzi() + ksx1001_hangul()
    wanted += [chr(c) for c in range(0x3041, 0x3097)]  # hiragana
    wanted += [chr(c) for c in range(0x30A1, 0x30FB)]  # katakana
    wanted += [chr(c) for c in range(0xFF01, 0xFF5F)]  # full-width forms
    wanted += [chr(c) for c in range(0xAC00, 0xD7A4)]  # every Hangul syllable
    wanted += list("、。，；：？！「」『』（）《》〈〉【】")
    assert len(gb2312_hanzi()) == 6763 and len(ksx1001_hangul()) == 2350
    absent = [c for c in wanted if ord(c) not in cmap]
    assert absent == []
    # "…" and "—" come from DejaVu, earlier in every chain.
    chain = font_chain(get_preset("ds-base").font_chain, 18.0)
    assert all(chain.lookup(c)[0] >= 0 for c in "…—“”‘’·")


def test_shipped_font_is_what_fonts_build_makes_and_avoids_the_reserved_name() -> None:
    from fontTools.ttLib import TTFont

    from render import fonts_build

    asked = fonts_build.codepoints()
    # fontTools keeps the few extra code points that share a kept glyph (∋ ≅).
    assert len(set(FontFace.load(SHIPPED).cmap) - asked) < 16
    assert {ord(c) for c in gb2312_hanzi()} <= asked and set(range(0xAC00, 0xD7A4)) <= asked
    font = TTFont(str(resolve_font(SHIPPED)[0]), lazy=True)
    names = font["name"]
    assert names.getDebugName(1) == fonts_build.FAMILY and "CFF " in font
    # OFL: a Modified Version may not use the Reserved Font Name ("Source") as its name.
    assert not any("Source" in str(names.getDebugName(i)) for i in (1, 3, 4, 6, 16, 17))


@pytest.mark.parametrize("ch", ["中", "の", "カ", "한", "，", "Ａ", "「"])
def test_fallback_resolves_cjk_to_the_shipped_font(ch: str) -> None:
    config = get_preset("ds-base")
    chain = font_chain(config.font_chain, config.font_size)
    assert chain.specs[-1] == SHIPPED and SHIPPED not in config.font_chain  # ids unchanged
    face, advance = chain.lookup(ch)
    assert chain.specs[face] == SHIPPED
    # Full width: one em (Noto's Hangul syllables are 0.92 em), from the font's hmtx.
    assert config.font_size * 0.9 <= advance <= config.font_size


def test_wide_characters_prefer_a_cjk_font_over_a_latin_fonts_stray_kana() -> None:
    config = get_preset("ds-base")
    chain = font_chain(config.font_chain, config.font_size)
    stix = chain.specs.index("STIXGeneral.ttf")
    assert ord("の") in chain.face(stix).cmap and not chain.face(stix).is_cjk
    assert chain.face(len(chain.specs) - 1).is_cjk
    for ch in "の〒〰":  # STIX General has these; Japanese text must not mix its forms in
        assert chain.specs[chain.lookup(ch)[0]] == SHIPPED, ch
    # A user's CJK fallback still comes before the shipped one, and wide symbols that only
    # DejaVu has stay with DejaVu.
    user = config.replace(fallback_fonts=(*config.fallback_fonts, SHIPPED))
    assert font_chain(user.font_chain, 18.0).lookup("の")[0] == len(user.font_chain) - 1
    assert chain.specs[chain.lookup("\U0001F600")[0]] == "DejaVuSans.ttf"


def test_config_without_fallbacks_still_reaches_the_shipped_font() -> None:
    config = get_preset("mini").replace(fallback_fonts=())
    page = next(paginate("a中b", config))
    assert page.missing_glyphs == ()
    assert [run.font for run in page.lines[0].runs] == [0, 1, 0]


# -- a mixed record --------------------------------------------------------------------------
@pytest.mark.parametrize("preset", PRESETS)
def test_mixed_cjk_english_record_has_no_missing_glyphs(preset: str) -> None:
    config = get_preset(preset)
    pages = list(paginate(MIXED, config))
    # The report `vst convert` records (jobs/convert/pipeline.py) and pages.jsonl keep.
    assert [c for page in pages for c in page.missing_glyphs] == []
    assert all(page.record("d")["missing_glyphs"] == [] for page in pages)
    ink = rasterize(pages[0], config)[..., 0] < 128
    boxes = char_boxes(pages[0], config)
    for i in (MIXED.index("中"), MIXED.index("カ"), MIXED.index("한")):
        x0, y0, x1, y1 = (round(v) for v in boxes[i])
        assert ink[y0:y1, x0:x1].sum() > 10, MIXED[i]  # drawn, not a blank


def test_unknown_characters_are_still_reported() -> None:
    page = next(paginate("中\ue000文\U0001F389", get_preset("mini")))
    assert page.missing_glyphs == ("\ue000", "\U0001F389")
    assert page.record("d")["missing_glyphs"] == ["U+E000", "U+1F389"]


def test_monochrome_symbols_come_from_dejavu() -> None:
    # Monochrome outlines where a shipped font has them (DejaVu has some emoji too).
    page = next(paginate("☺★♥✓😀", get_preset("ds-base")))
    assert page.missing_glyphs == ()
    assert all(run.font in (0, 1) for run in page.lines[0].runs)


# -- full width ------------------------------------------------------------------------------
def test_cjk_is_full_width_and_two_cells_on_the_mini_grid() -> None:
    mini = get_preset("mini")
    setter = Typesetter(mini)
    cell = setter.advance("a")
    for ch in "中の한，Ａ":
        assert setter.advance(ch) == pytest.approx(2 * cell), ch
    base = Typesetter(get_preset("ds-base"))
    for ch in "中カ，Ａ":
        assert base.advance(ch) == pytest.approx(18.0) and base.advance("a") < 12, ch
    # Twenty wide characters on the mini grid take exactly forty cells.
    page = next(paginate("中" * 20 + "a", mini))
    assert page.lines[0].runs[-1].xs[0] == pytest.approx(40 * cell)


def test_wide_glyph_is_centred_in_its_two_cells() -> None:
    config = get_preset("mini")
    page = next(paginate("一", config))
    x0, _, x1, _ = char_boxes(page, config)[0]
    columns = np.nonzero((rasterize(page, config)[..., 0] < 128).any(axis=0))[0]
    ink_centre = (columns.min() + columns.max() + 1) / 2
    # "一" is symmetric: centred in its two cells; left-aligned it would sit ~1.1 px left.
    assert abs(ink_centre - (x0 + x1) / 2) <= 0.6


# -- line breaking ---------------------------------------------------------------------------
def narrow(preset: str, chars: int) -> object:
    """`preset` with a text width of exactly `chars` wide characters."""
    config = get_preset(preset)
    wide = Typesetter(config).advance("中")
    return config.replace(width=config.margin_left + config.margin_right
                          + math.ceil(wide * chars))


def line_texts(text: str, config) -> list[str]:
    return [text[ln.start:ln.end] for page in paginate(text, config) for ln in page.lines]


@pytest.mark.parametrize("preset", PRESETS)
def test_cjk_lines_break_between_characters_without_spaces(preset: str) -> None:
    text = "这是一段没有空格的中文文本需要在任意两个汉字之间换行"
    lines = line_texts(text, narrow(preset, 6))
    assert "".join(lines) == text
    assert len(lines) == 5 and all(len(line) == 6 for line in lines[:-1])


@pytest.mark.parametrize("preset", PRESETS)
def test_no_break_before_a_comma(preset: str) -> None:
    text = "一二三四，五六七八"
    lines = line_texts(text, narrow(preset, 4))
    # "一二三四" would fill the line and put "，" first on the next: kinsoku refuses, so
    # "四" moves down with its comma.
    assert lines[0] == "一二三" and lines[1].startswith("四，")
    assert not any(line[0] in NO_BREAK_BEFORE for line in lines[1:])


@pytest.mark.parametrize("preset", PRESETS)
def test_no_break_after_an_opening_bracket(preset: str) -> None:
    text = "一二三「四五六」七八"
    lines = line_texts(text, narrow(preset, 4))
    assert not any(line[-1] in NO_BREAK_AFTER for line in lines)
    assert lines[0] == "一二三" and lines[1].startswith("「四")


@pytest.mark.parametrize("preset", PRESETS)
def test_korean_breaks_between_words_not_syllables(preset: str) -> None:
    text = "한국어 문장은 띄어쓰기로 단어를 나눕니다"
    lines = line_texts(text, narrow(preset, 7))
    assert "".join(lines) == text
    assert len(lines) > 2 and all(line.endswith(" ") for line in lines[:-1])  # at spaces
    setter = Typesetter(narrow(preset, 7))
    assert not setter.cjk_break("한", "국") and setter.cjk_break("한", "中")


def test_cjk_breaks_next_to_english_and_english_is_unchanged() -> None:
    config = narrow("ds-base", 8)
    english = "the quick brown fox jumps over the lazy dog again and again"
    setter = Typesetter(config)
    # Every English break is after a space, as before CJK breaking existed.
    lines = line_texts(english, config)
    assert all(line.endswith(" ") for line in lines[:-1])
    mixed = "中文English混排的文本"
    assert "".join(line_texts(mixed, config)) == mixed
    assert setter.cjk_break("中", "E") and setter.cjk_break("h", "混")
    assert not setter.cjk_break("a", "b") and not setter.cjk_break("中", "，")
    assert not setter.cjk_break("（", "中") and not setter.cjk_break("中", ",")


CJK_ALPHABET = "中文字の가カ，。、」）「（ab .\n\u3000—…😀"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(st.sampled_from(CJK_ALPHABET), max_size=200),
       preset=st.sampled_from(PRESETS), chars=st.integers(2, 9))
def test_cjk_breaking_tiles_fits_and_obeys_kinsoku(text: str, preset: str, chars: int) -> None:
    config = narrow(preset, chars)
    setter = Typesetter(config)
    lines = [ln for page in paginate(text, config) for ln in page.lines]
    assert "".join(text[ln.start:ln.end] for ln in lines) == text
    for line, after in zip(lines, lines[1:]):
        body = text[line.start:line.end]
        visible = [c for c in body if not c.isspace()]
        assert line.width <= config.text_width + 1e-6 or len(visible) == 1
        if not body or body[-1] in "\n" or body[-1].isspace():
            continue  # a hard break, or a break after whitespace
        # A break between two characters: either kinsoku allows it, or the line had no
        # allowed break at all (then it was cut where it overflowed).
        prev, first = body[-1], text[after.start]
        if not setter.cjk_break(prev, first):
            allowed = any(
                not b.isspace() and (a.isspace() and body[:k].strip()  # after a space
                                     or not a.isspace() and setter.cjk_break(a, b))
                for k, (a, b) in enumerate(zip(body, body[1:]), start=1))
            assert not allowed and line.width + setter.advance(first) > config.text_width


# -- spans -----------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", PRESETS)
def test_spans_are_exact_and_each_drawn_glyph_is_its_source_character(preset: str) -> None:
    config = narrow(preset, 7)
    text = MIXED * 3 + "\n第二段。\n"
    pages = list(paginate(text, config))
    assert "".join(page.text for page in pages) == text
    for page in pages:
        assert page.text == text[page.start:page.end]
        for line in page.lines:
            source = text[line.start:line.end]
            drawn = "".join(run.text for run in line.runs)
            # Every visible character is drawn as itself (no controls in this text) and
            # only whitespace and terminators are not drawn.
            assert drawn.replace(" ", "") == "".join(
                c for c in source if not c.isspace() and unicodedata.category(c) != "Cf")
        boxes = char_boxes(page, config)
        assert len(boxes) == len(page.text)
        for (x0, _, x1, _), ch in zip(boxes, page.text):
            if ch not in "\n ":
                assert x1 > x0, ch


# -- optional backends -----------------------------------------------------------------------
def near(ink: np.ndarray, other: np.ndarray) -> float:
    """Share of `ink` pixels with an `other` pixel within 1 px (glyph hinting differs)."""
    grown = other.copy()
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        grown |= np.roll(other, (dy, dx), axis=(0, 1))
    return float((ink & grown).sum() / max(1, ink.sum()))


@pytest.mark.parametrize("backend", ["cairo", "chromium"])
@pytest.mark.parametrize("preset", ["mini", "ds-base"])
def test_optional_backends_draw_cjk_where_pillow_does(backend: str, preset: str) -> None:
    from render.raster import backend_error

    reason = backend_error(backend)
    if reason:
        pytest.skip(reason)
    base = get_preset(preset)
    # Runs that start with spaces (indentation, a space after a CJK run) included.
    text = ("    缩进的中文 English words after a CJK run 한국어 テキスト。\n"
            "        indented English line\n「引号」（括号）ＡＢＣ！ end")
    config = base.replace(backend=backend)
    ours = (rasterize(next(paginate(text, config)), config) < 128).any(axis=2)
    pillow = (rasterize(next(paginate(text, base)), base) < 128).any(axis=2)
    assert near(pillow, ours) > 0.9 and near(ours, pillow) > 0.9


def test_no_break_inside_a_decomposed_kana_or_before_a_variation_selector() -> None:
    setter = Typesetter(get_preset("ds-base"))
    assert not setter.cjk_break("か", "\u3099")  # か + combining dakuten = が
    mini = Typesetter(get_preset("mini"))
    assert mini.advance("\u3099") == 0 and mini.advance("か") == 2 * mini.advance("a")
    assert not setter.cjk_break("葛", "\U000E0100")  # an ideographic variation sequence
    assert not setter.cjk_break("\u200d", "中") and setter.cjk_break("中", "\ue000")
    text = "かか\u3099かか\u3099" * 6
    for line in line_texts(text, narrow("ds-base", 3)):
        assert line[0] != "\u3099"
