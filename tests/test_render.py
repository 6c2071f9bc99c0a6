"""Render package: config, typesetter invariants, Pillow rasterizer, glyph reporting, laziness."""

from __future__ import annotations

import hashlib
import json
import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from render import PRESETS, RenderConfig, get_preset, paginate, rasterize, render_text
from render.fonts import MISSING, FontFace, chain_for
from render.raster import encode_png

NARROW = RenderConfig(width=120, height=90, font="DejaVuSansMono.ttf", font_size=10.0,
                      line_height=1.2, margin_top=4, margin_right=4, margin_bottom=4,
                      margin_left=4)
CONFIGS = [
    get_preset("mini"),
    get_preset("ds-tiny").replace(align="center", tab_size=8),
    NARROW,
    NARROW.replace(font="DejaVuSans.ttf", align="right", fallback_fonts=()),
]
TRICKY = " \t\n\r\f\v\x00\x1b\x7f\x85\u2028\u00a0\u3000\u200d\ufe0fab-xyzW中😀\u0301\ue000"


def check_tiling(text: str, config: RenderConfig) -> list:
    pages = list(paginate(text, config))
    assert pages, "every document has at least one page"
    assert pages[0].start == 0 and pages[-1].end == len(text)
    for number, page in enumerate(pages):
        assert page.index == number
        assert page.text == text[page.start:page.end]
        assert page.lines and len(page.lines) <= config.lines_per_page
        assert page.lines[0].start == page.start and page.lines[-1].end == page.end
        for before, after in zip(page.lines, page.lines[1:]):
            assert before.end == after.start
        for line in page.lines:
            assert line.start <= line.end
            visible = [c for c in text[line.start:line.end] if not c.isspace()]
            # A line overflows only when it holds a single too-wide character.
            assert line.width <= config.text_width + 1e-6 or len(visible) == 1
        assert set(page.missing_glyphs) <= set(page.text)
        assert set(page.control_chars) <= set(page.text)
    for before, after in zip(pages, pages[1:]):
        assert before.end == after.start
        assert after.start < after.end  # only an empty document has an empty page
    assert "".join(p.text for p in pages) == text
    return pages


# -- config --------------------------------------------------------------------------------
def test_config_is_frozen_hashable_and_round_trips() -> None:
    config = get_preset("ds-base").replace(fallback_fonts=["DejaVuSans.ttf"])
    assert isinstance(config.fallback_fonts, tuple)
    with pytest.raises(AttributeError):
        config.width = 3  # type: ignore[misc]
    again = RenderConfig.from_json(config.to_json())
    assert again == config and hash(again) == hash(config) and again.id == config.id
    assert len({config, again}) == 1


def test_config_id_is_hash_of_canonical_json() -> None:
    config = get_preset("mini")
    canonical = json.dumps(config.to_dict(), sort_keys=True, separators=(",", ":"))
    assert config.id == hashlib.sha256(canonical.encode()).hexdigest()[:12]
    # Field order in a JSON file does not matter; any changed field does.
    shuffled = json.dumps(dict(reversed(list(config.to_dict().items()))), indent=3)
    assert RenderConfig.from_json(shuffled).id == config.id
    assert config.replace(font_size=12.0).id != config.id
    assert config.replace(backend="cairo").id != config.id
    assert config.replace(font_size=11).id == config.replace(font_size=11.0).id


def test_config_save_load(tmp_path) -> None:
    config = get_preset("ds-small")
    assert RenderConfig.load(config.save(tmp_path / "c.json")) == config


def test_presets_geometry() -> None:
    sizes = {"ds-tiny": 512, "ds-small": 640, "ds-base": 1024, "ds-large": 1280, "mini": 512,
             "mini-zh": 512}
    for name, side in sizes.items():
        config = get_preset(name)
        assert (config.width, config.height) == (side, side)
    assert get_preset("mini").font == "DejaVuSansMono.ttf"
    assert get_preset("mini-zh").font == "DejaVuSansMono.ttf"  # hanzi: the shipped CJK fallback
    assert get_preset("mini-zh").line_pitch == 20.0 and get_preset("mini-zh").lines_per_page == 24
    assert set(PRESETS) == set(sizes)


@pytest.mark.parametrize("changes, message", [
    ({"align": "justify"}, "align"),
    ({"backend": "svg"}, "backend"),
    ({"foreground": "black"}, "colour"),
    ({"width": 0}, "width"),
    ({"margin_left": 600}, "width"),
    ({"height": 20, "margin_top": 8, "margin_bottom": 8}, "line"),
    ({"tab_size": 0}, "tab_size"),
    ({"fallback_fonts": "DejaVuSans.ttf"}, "fallback_fonts"),
    ({"font_size": "big"}, "font_size"),
])
def test_config_rejects_bad_values(changes, message) -> None:
    with pytest.raises(ValueError, match=message):
        get_preset("mini").replace(**changes)


def test_unknown_fields_and_presets_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown RenderConfig field"):
        RenderConfig.from_dict({"widht": 3})
    with pytest.raises(ValueError, match="ds-base.*mini"):
        get_preset("nope")
    with pytest.raises(FileNotFoundError, match="DejaVuSans.ttf"):
        paginate("x", RenderConfig(font="NoSuchFont.ttf"))
    with pytest.raises(TypeError):
        paginate(b"bytes", get_preset("mini"))  # type: ignore[arg-type]


# -- layout invariants ----------------------------------------------------------------------
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(st.one_of(st.characters(), st.characters(categories=["Cs"])), max_size=400),
       config=st.sampled_from(CONFIGS))
def test_spans_tile_arbitrary_unicode(text: str, config: RenderConfig) -> None:
    check_tiling(text, config)


@settings(max_examples=80, deadline=None)
@given(text=st.text(st.sampled_from(TRICKY), max_size=600), config=st.sampled_from(CONFIGS))
def test_spans_tile_whitespace_and_breaks(text: str, config: RenderConfig) -> None:
    check_tiling(text, config)


@settings(max_examples=30, deadline=None)
@given(words=st.lists(st.text("abcdefghij", min_size=1, max_size=30), min_size=1, max_size=80))
def test_words_that_fit_are_never_split(words: list[str]) -> None:
    text = " ".join(words)
    lines = [line for page in check_tiling(text, NARROW) for line in page.lines]
    start = 0
    for word in words:
        end = start + len(word)
        if _fits(word, NARROW):
            holder = next(line for line in lines if line.start <= start < line.end)
            assert end <= holder.end, f"{word!r} was split"
        start = end + 1


def _fits(word: str, config: RenderConfig) -> bool:
    chain = chain_for(config)
    return sum(chain.lookup(c)[1] for c in word) <= config.text_width


def test_wrapping_keeps_consumed_space_with_the_earlier_line() -> None:
    config = NARROW
    per_line = int(config.text_width // chain_for(config).lookup("a")[1])
    word = "a" * (per_line - 2)
    text = f"{word}   {word}\n\n{'b' * (per_line * 2 + 3)}"
    page = next(paginate(text, config))
    spans = [text[line.start:line.end] for line in page.lines]
    assert spans[0] == word + "   "  # the spaces at the break belong to line 0
    assert spans[1] == word + "\n"
    assert spans[2] == "\n"  # an empty paragraph line is kept
    assert spans[3] == "b" * per_line and spans[4] == "b" * per_line  # long word broken
    assert spans[5] == "bbb"


def test_tabs_expand_to_tab_stops() -> None:
    config = get_preset("mini")
    line = next(paginate("ab\tc\t\td", config)).lines[0]
    stop = config.tab_size * chain_for(config).space_advance
    starts = [run.xs[0] for run in line.runs]
    assert [round(x / stop, 6) for x in starts[1:]] == [1.0, 3.0]


def test_crlf_is_one_break_and_form_feed_ends_the_page() -> None:
    config = get_preset("mini")
    pages = list(paginate("one\r\ntwo\fthree", config))
    assert [p.text for p in pages] == ["one\r\ntwo\f", "three"]
    assert len(pages[0].lines) == 2


def test_empty_text_gives_one_empty_page() -> None:
    (page,) = paginate("", get_preset("mini"))
    assert (page.start, page.end, page.text) == (0, 0, "")
    image = rasterize(page, get_preset("mini"))
    assert (image == 255).all()


def test_pages_fill_to_lines_per_page() -> None:
    config = get_preset("ds-tiny")
    text = "\n".join(f"line {i}" for i in range(config.lines_per_page * 2 + 1))
    pages = check_tiling(text, config)
    assert [len(p.lines) for p in pages] == [config.lines_per_page] * 2 + [1]


@pytest.mark.parametrize("align", ["left", "center", "right"])
def test_alignment_positions_lines(align: str) -> None:
    config = get_preset("mini").replace(align=align)
    line = next(paginate("short", config)).lines[0]
    left, slack = config.margin_left, config.text_width - line.width
    expected = {"left": left, "center": left + slack / 2, "right": left + slack}[align]
    assert math.isclose(line.x, expected)


@settings(max_examples=30, deadline=None)
@given(text=st.text(st.sampled_from(TRICKY), max_size=300), config=st.sampled_from(CONFIGS))
def test_char_boxes_cover_every_character_in_order(text: str, config: RenderConfig) -> None:
    from render import char_boxes

    for page in paginate(text, config):
        boxes = char_boxes(page, config)
        assert len(boxes) == len(page.text)
        for line in page.lines:
            row = boxes[line.start - page.start:line.end - page.start]
            assert all(b[1] == line.top for b in row)
            assert all(a[2] == b[0] for a, b in zip(row, row[1:]))  # contiguous, in order


def test_char_boxes_locate_the_ink() -> None:
    from render import char_boxes

    config = get_preset("mini")
    text = "....\t....W...."
    page = next(paginate(text, config))
    x0, y0, x1, y1 = (round(v) for v in char_boxes(page, config)[text.index("W")])
    ink = rasterize(page, config)[..., 0] < 128
    inside = ink[y0:y1, x0:x1].sum()
    assert inside > 10 and inside >= 0.9 * (ink[y0:y1].sum() - 8 * 4)  # dots are ~4 px


# -- glyph coverage --------------------------------------------------------------------------
def test_fallback_font_is_used_before_reporting_missing() -> None:
    mono, sans = FontFace.load("DejaVuSansMono.ttf"), FontFace.load("DejaVuSans.ttf")
    only_in_sans = next(chr(cp) for cp in sorted(sans.cmap)
                        if cp not in mono.cmap and chr(cp).isprintable() and cp > 0x3000)
    config = get_preset("mini")
    assert config.fallback_fonts[0] == "DejaVuSans.ttf"
    page = next(paginate(f"a{only_in_sans}b", config))
    fonts = [run.font for run in page.lines[0].runs]
    assert fonts == [0, 1, 0] and page.missing_glyphs == ()
    bare = config.replace(fallback_fonts=())
    page = next(paginate(f"a{only_in_sans}b", bare))
    assert page.missing_glyphs == (only_in_sans,)
    assert page.record("d")["missing_glyphs"] == [f"U+{ord(only_in_sans):04X}"]


def test_missing_glyphs_are_reported_and_drawn_as_boxes() -> None:
    config = get_preset("mini")
    text = "x\ue000\U000f0000 \u0378"  # private use, supplementary PUA, unassigned
    page = next(paginate(text, config))
    assert set(page.missing_glyphs) == {"\ue000", "\U000f0000", "\u0378"}
    assert all(run.font == MISSING for run in page.lines[0].runs[1:] if run.text.strip())
    ink = rasterize(page, config) < 128
    plain = rasterize(next(paginate("x", config)), config) < 128
    assert ink.sum() > plain.sum() + 20  # the boxes are visible


def test_control_characters_are_visible_and_recorded() -> None:
    config = get_preset("mini")
    page = next(paginate("a\x00b\x1bc\x7f\x9b", config))
    assert page.control_chars == ("\x00", "\x1b", "\x7f", "\x9b")
    drawn = "".join(run.text for run in page.lines[0].runs)
    assert drawn == "a^@b^[c^?\\x9B"
    assert page.record("d")["control_chars"] == ["U+0000", "U+001B", "U+007F", "U+009B"]


def test_cjk_uses_a_system_fallback_when_configured() -> None:
    from render.fonts import with_system_fallbacks

    config = with_system_fallbacks(get_preset("mini"))
    if len(config.fallback_fonts) == len(get_preset("mini").fallback_fonts):
        pytest.skip("no system fallback fonts found by fc-match or at known Debian paths")
    page = next(paginate("中文", config))
    if page.missing_glyphs:
        pytest.skip("system fallback fonts do not cover CJK")
    assert page.lines[0].runs[0].font >= len(get_preset("mini").font_chain)
    assert (rasterize(page, config) < 128).any()


# -- rasterizer --------------------------------------------------------------------------
def test_image_shape_dtype_and_colours() -> None:
    config = get_preset("mini").replace(foreground="#c00000", background="#00ff00")
    (page, image), = render_text("Hello", config)
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8
    colours = {tuple(c) for c in image.reshape(-1, 3)[::7]}
    assert (0, 255, 0) in colours and (192, 0, 0) in colours


def test_same_config_gives_identical_pixels_and_png(monkeypatch) -> None:
    import render.raster_pillow as raster_pillow

    config = get_preset("ds-small")
    text = "Determinism, please: ÅßÇ 12345 — ünïcödé ✓\tand tabs.\n" * 20
    first = [image for _, image in render_text(text, config)]
    raster_pillow._caches.clear()  # pixels must not depend on cache state...
    monkeypatch.setattr(raster_pillow, "MAX_WORDS", 3)  # ...nor on word-cache evictions
    second = [image for _, image in render_text(text, config)]
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert np.array_equal(a, b)
        assert encode_png(a, 144) == encode_png(b, 144)


def test_pixels_are_identical_across_processes() -> None:
    import subprocess
    import sys
    from pathlib import Path

    script = ("import hashlib; from render import get_preset, render_text; "
              "print(hashlib.sha256(b''.join(i.tobytes() for _, i in "
              "render_text('Across processes: 0123 ÄÖÜ ∮ \\ue000 tab\\tend. ' * 40, "
              "get_preset('ds-tiny')))).hexdigest())")
    runs = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           check=True, cwd=Path(__file__).parents[1]).stdout.strip()
            for _ in range(2)}
    here = hashlib.sha256(b"".join(i.tobytes() for _, i in render_text(
        "Across processes: 0123 ÄÖÜ ∮ \ue000 tab\tend. " * 40, get_preset("ds-tiny"))))
    assert runs == {here.hexdigest()}


def test_word_cache_paths_give_the_same_pixels() -> None:
    import render.raster_pillow as raster_pillow

    config = get_preset("ds-tiny")
    page = next(paginate("Quartz glyph jumps; wavy fox! " * 3 + "uniquewordzz", config))
    raster_pillow._caches.clear()
    cold = rasterize(page, config)  # first sight: glyph by glyph
    warm = rasterize(page, config)  # second sight: words composed into one mask
    cached = rasterize(page, config)  # composed masks reused
    assert len(raster_pillow.glyph_cache(config)._words) > 0
    assert np.array_equal(cold, warm) and np.array_equal(warm, cached)


def test_text_lands_inside_the_margins_on_its_lines() -> None:
    config = get_preset("ds-tiny")
    page = next(paginate("Ink " * 200, config))
    ink = (rasterize(page, config) < 200).any(axis=2)
    rows, cols = np.nonzero(ink)
    assert cols.min() >= config.margin_left - 2
    assert cols.max() < config.width - config.margin_right + 2
    assert rows.min() >= config.margin_top and rows.max() < config.height - config.margin_bottom


def test_rasterize_refuses_a_page_from_another_config() -> None:
    page = next(paginate("x", get_preset("mini")))
    with pytest.raises(ValueError, match="same RenderConfig"):
        rasterize(page, get_preset("ds-tiny"))


# -- laziness ------------------------------------------------------------------------------
def _big_text(n_chars: int) -> str:
    para = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
            "incididunt ut labore et dolore magna aliqua.\n")
    return (para * (n_chars // len(para) + 1))[:n_chars]


def test_paging_is_lazy_with_bounded_memory() -> None:
    config = get_preset("ds-base")
    text = _big_text(500_000)  # 170 pages; keeping them would cost > 10 MB
    list(paginate(text[:5000], config))  # warm the caches outside the measurement
    tracemalloc.start()
    try:
        end = 0
        for page in paginate(text, config):
            assert page.start == end
            end = page.end
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert end == len(text)
    assert peak < 2_000_000, f"peak {peak} bytes: pages are being kept"


@pytest.mark.slow
def test_ten_megabyte_document_renders_with_bounded_memory() -> None:
    import psutil

    config = get_preset("mini")
    text = _big_text(10_000_000)
    list(render_text(text[:5000], config))
    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = baseline
    count = end = 0
    for page, image in render_text(text, config):
        assert page.start == end and image.shape == (512, 512, 3)
        end = page.end
        count += 1
        if count % 100 == 0:
            peak = max(peak, process.memory_info().rss)
    assert end == len(text) and count > 3000
    # Keeping the pages' images alone would take count * 768 KiB (> 2 GB).
    assert peak - baseline < 150 * 2**20


def test_first_page_of_huge_document_is_immediate() -> None:
    import time

    text = "word " * 4_000_000  # 20 MB, no newlines at all
    started = time.perf_counter()
    page = next(paginate(text, get_preset("mini")))
    assert page.start == 0 and page.end > 0
    assert time.perf_counter() - started < 2.0

