"""The typesetter: text -> lines -> pages, each with the exact source span it shows.

Layout is separate from drawing. It decides every line break, page break and glyph
position using the shared font metric (`render.fonts`), so all backends draw the same
layout and agree on spans. Guarantees, for any input string `source`:

* lines tile their page and pages tile the document: `page.text == source[page.start:page.end]`
  and consecutive spans meet, so nothing is dropped or duplicated. Whitespace consumed at a
  soft line break, and line terminators, belong to the line (and page) they end.
* every visible character is drawn: by the primary font, a fallback font, as caret notation
  (control characters, also listed in `Page.control_chars`), or as a box listed in
  `Page.missing_glyphs`. Only default-ignorable characters (ZWJ, BOM, variation selectors)
  that no font covers are invisible.

Paging is lazy: `paginate` walks the document with a regex cursor, so memory stays bounded by
one page no matter how long the document is.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from render.fonts import INVISIBLE, MISSING, FontChain, chain_for, is_wide

if TYPE_CHECKING:
    from render.config import RenderConfig

# Hard line terminators (CRLF counts as one). Form feed also ends the page.
_TERMINATOR = re.compile(r"\r\n|[\n\r\v\f\x85\u2028\u2029]")
_PAGE_BREAK = "\f"
# Whitespace a line may break after (not NBSP / figure space / narrow NBSP).
BREAKABLE_SPACES = frozenset(" \u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2008"
                             "\u2009\u200a\u205f\u3000")
_EPS = 1e-6

# CJK line breaking. A line may also break between two characters when either is wide
# (East Asian Width W/F: ideographs, kana, Hangul, full-width forms), the way Chinese and
# Japanese are set without spaces, except where basic kinsoku forbids it: never before a
# closing mark (the comma stays with the character it follows), never after an opening one.
NO_BREAK_BEFORE = frozenset(
    "，。、；：？！）」』】》〉〕〗〙〛｝］｠｣､｡．・ー…‥〜～々ゝゞヽヾ"
    "ぁぃぅぇぉっゃゅょゎゕゖァィゥェォッャュョヮヵヶㇰㇱㇲㇳㇴㇵㇶㇷㇸㇹㇺㇻㇼㇽㇾㇿ"
    ",.;:!?)]}%’”"
)
NO_BREAK_AFTER = frozenset("（「『【《〈〔〖〘〚［｛｟｢([{“‘")
_GLUED = frozenset({"Mn", "Mc", "Me", "Cf"})  # categories that belong to the character before


def is_hangul(ch: str) -> bool:
    """Hangul syllables and jamo: Korean puts spaces between words and breaks lines there
    (CSS `word-break: keep-all`), not between the syllables of a word."""
    return ("\uac00" <= ch <= "\ud7a3" or "\u1100" <= ch <= "\u11ff"
            or "\u3130" <= ch <= "\u318f" or "\ua960" <= ch <= "\ua97f"
            or "\ud7b0" <= ch <= "\ud7ff")


class Run(NamedTuple):
    """Consecutive glyphs of one face drawn without gaps, positions relative to `Line.x`."""

    font: int  # index into the config's font chain, or fonts.MISSING (drawn as boxes)
    text: str  # the characters to draw (display form: controls as caret notation)
    xs: tuple[float, ...]  # pen x of each character
    end: float  # pen x after the last character


@dataclass(frozen=True, slots=True)
class Line:
    start: int  # source span [start, end), including consumed whitespace and terminator
    end: int
    x: float  # left edge of the line's pen (after alignment), page px
    top: float  # top of the line box, page px
    baseline: float  # baseline y, page px
    width: float  # drawn width without trailing whitespace
    runs: tuple[Run, ...]


@dataclass(frozen=True, slots=True)
class Page:
    index: int
    start: int
    end: int
    text: str
    lines: tuple[Line, ...]
    missing_glyphs: tuple[str, ...]  # characters no font covers, first-seen order
    control_chars: tuple[str, ...]  # control characters drawn in caret notation
    config_id: str

    def record(self, doc_id: str) -> dict[str, Any]:
        """The JSON-able index record of this page (written to pages.jsonl)."""
        return {
            "doc_id": doc_id,
            "page": self.index,
            "start": self.start,
            "end": self.end,
            "n_chars": self.end - self.start,
            "n_lines": len(self.lines),
            "render_config_id": self.config_id,
            "missing_glyphs": [f"U+{ord(c):04X}" for c in self.missing_glyphs],
            "control_chars": [f"U+{ord(c):04X}" for c in self.control_chars],
        }


def control_notation(ch: str) -> str | None:
    """Visible stand-in for a control character, or None for other characters."""
    cp = ord(ch)
    if cp < 0x20:
        return "^" + chr(cp + 0x40)
    if cp == 0x7F:
        return "^?"
    if 0x80 <= cp <= 0x9F:
        return f"\\x{cp:02X}"
    return None


class _Glyphs(NamedTuple):
    """How one source character is drawn: display characters with face and advance."""

    parts: tuple[tuple[str, int, float], ...]
    advance: float
    missing: bool
    control: bool


class _RawLine(NamedTuple):
    start: int
    end: int
    runs: tuple[Run, ...]
    width: float
    page_break: bool  # the line ends with a form feed
    missing: dict[str, None]
    controls: dict[str, None]


class Typesetter:
    """Breaks text into lines for one config; caches per-character measurements."""

    def __init__(self, config: RenderConfig) -> None:
        self.config = config
        self.chain: FontChain = chain_for(config)
        self.avail = float(config.text_width)
        self.tab_width = config.tab_size * self.chain.space_advance
        self._advance: dict[str, float] = {}
        self._glyphs: dict[str, _Glyphs] = {}
        self._wide: dict[str, bool] = {}

    def glyphs(self, ch: str) -> _Glyphs:
        hit = self._glyphs.get(ch)
        if hit is None:
            notation = control_notation(ch)
            if notation is not None:
                parts = tuple((c, *self.chain.lookup(c)) for c in notation)
            else:
                parts = ((ch, *self.chain.lookup(ch)),)
            hit = _Glyphs(
                parts=parts,
                advance=sum(p[2] for p in parts),
                missing=any(p[1] == MISSING for p in parts),
                control=notation is not None,
            )
            self._glyphs[ch] = hit
            self._advance[ch] = hit.advance
        return hit

    def advance(self, ch: str) -> float:
        adv = self._advance.get(ch)
        return adv if adv is not None else self.glyphs(ch).advance

    def _tab_stop(self, x: float) -> float:
        return (math.floor(x / self.tab_width + _EPS) + 1) * self.tab_width

    def wide(self, ch: str) -> bool:
        """Whether `ch` is set like an ideograph (may break on either side); cached."""
        hit = self._wide.get(ch)
        if hit is None:
            hit = self._wide[ch] = ch >= "\u1100" and is_wide(ch)
        return hit

    def cjk_break(self, before: str, after: str) -> bool:
        """May a line break between the non-space characters `before` and `after`?

        Only next to a wide character, never against kinsoku, never inside a dash pair
        (——), never inside a Korean word (two Hangul characters), and never before a
        combining mark or format character (a decomposed が, an ideographic variation
        selector) or after a zero-width joiner.
        """
        return ((self.wide(before) or self.wide(after)) and after not in NO_BREAK_BEFORE
                and not (is_hangul(before) and is_hangul(after))
                and before not in NO_BREAK_AFTER and not before == after == "\u2014"
                and before != "\u200d" and unicodedata.category(after) not in _GLUED)

    def find_break(self, text: str, start: int, stop: int) -> int:
        """End of the line that starts at `start` within the hard line ending at `stop`.

        Greedy: break at the last opportunity before an overflowing character, otherwise
        at the overflowing character itself (at least one character per line). Breaks
        come after whitespace runs and between CJK characters (`cjk_break`, kinsoku
        rules); whitespace may hang past the right margin; only drawn characters trigger
        a break.
        """
        x = 0.0
        limit = self.avail + _EPS
        last_break = -1
        seen_content = False
        after_space = False
        advance = self.advance
        prev = ""
        for i in range(start, stop):
            ch = text[i]
            if ch == "\t":
                x = self._tab_stop(x)
                after_space = True
                continue
            if ch in BREAKABLE_SPACES:
                x += advance(ch)
                after_space = True
                continue
            if after_space and seen_content:
                last_break = i
            elif (seen_content and (ch >= "\u1100" or prev >= "\u1100")
                  and self.cjk_break(prev, ch)):
                # Only a wide character opens a break here (all lie at U+1100 and above),
                # so text without one keeps exactly the breaks it had.
                last_break = i
            after_space = False
            prev = ch
            x += advance(ch)
            if x > limit and i > start:
                return last_break if last_break > start else i
            seen_content = True
        return stop

    def build_runs(
        self, text: str, start: int, stop: int, missing: dict[str, None], controls: dict[str, None]
    ) -> tuple[tuple[Run, ...], float]:
        """Glyph runs of source[start:stop] and the drawn width (trailing spaces excluded)."""
        runs: list[Run] = []
        font = None  # face of the open run
        chars: list[str] = []
        xs: list[float] = []
        x = 0.0
        width = 0.0
        glyphs = self.glyphs

        def close() -> None:
            if chars:
                runs.append(Run(font, "".join(chars), tuple(xs), x))  # type: ignore[arg-type]
                chars.clear()
                xs.clear()

        for i in range(start, stop):
            ch = text[i]
            if ch == "\t":
                close()
                x = self._tab_stop(x)
                continue
            info = glyphs(ch)
            if info.missing:
                missing[ch] = None
            if info.control:
                controls[ch] = None
            for part, face, adv in info.parts:
                if face == INVISIBLE:
                    close()
                    x += adv
                    continue
                if face != font:
                    close()
                    font = face
                chars.append(part)
                xs.append(x)
                x += adv
            if ch not in BREAKABLE_SPACES:
                width = x
        close()
        return tuple(runs), width

    def char_xs(self, text: str, start: int, stop: int) -> list[tuple[float, float]]:
        """(left, right) pen x of every source character of one line, relative to `Line.x`.

        Walks the line exactly as `build_runs` does; terminators and zero-width characters
        get empty intervals.
        """
        spans: list[tuple[float, float]] = []
        x = 0.0
        for i in range(start, stop):
            ch = text[i]
            left = x
            if ch == "\t":
                x = self._tab_stop(x)
            elif _TERMINATOR.match(ch) is None:
                x += self.advance(ch)
            spans.append((left, x))
        return spans

    def lines(self, text: str) -> Iterator[_RawLine]:
        """Visual lines of the whole document, lazily, not yet placed on a page."""
        pos = 0
        length = len(text)
        while pos < length or length == 0:
            match = _TERMINATOR.search(text, pos)
            content_end = match.start() if match else length
            line_end = match.end() if match else length
            page_break = bool(match) and match.group() == _PAGE_BREAK
            s = pos
            while True:
                missing: dict[str, None] = {}
                controls: dict[str, None] = {}
                e = self.find_break(text, s, content_end) if s < content_end else content_end
                last = e >= content_end
                runs, width = self.build_runs(text, s, e, missing, controls)
                yield _RawLine(s, line_end if last else e, runs, width, page_break and last,
                               missing, controls)
                if last:
                    break
                s = e
            pos = line_end
            if length == 0:
                break


def char_boxes(page: Page, config: RenderConfig) -> list[tuple[float, float, float, float]]:
    """Box (x0, y0, x1, y1) in page px of every character of `page.text`, in order.

    Line boxes span the line pitch; for region-aligned training signals (which block of the
    page shows which characters). Whitespace hanging past the margin is not clipped.
    """
    setter = Typesetter(config)
    pitch = config.line_pitch
    boxes: list[tuple[float, float, float, float]] = []
    for line in page.lines:
        for left, right in setter.char_xs(page.text, line.start - page.start,
                                          line.end - page.start):
            boxes.append((line.x + left, line.top, line.x + right, line.top + pitch))
    return boxes


def paginate(text: str, config: RenderConfig) -> Iterator[Page]:
    """Lay `text` out on pages of `config`, lazily. An empty text gives one empty page.

    Bad arguments and missing font files raise here, before the first page is asked for.
    """
    if not isinstance(text, str):
        raise TypeError(f"paginate() needs a str, got {type(text).__name__}")
    return _pages(text, config, Typesetter(config))


def _pages(text: str, config: RenderConfig, setter: Typesetter) -> Iterator[Page]:
    chain = setter.chain
    pitch = config.line_pitch
    baseline_offset = (pitch - (chain.ascent + chain.descent)) / 2 + chain.ascent
    per_page = config.lines_per_page
    config_id = config.id

    lines: list[Line] = []
    missing: dict[str, None] = {}
    controls: dict[str, None] = {}
    index = 0

    def make_page() -> Page:
        start, end = lines[0].start, lines[-1].end
        return Page(index, start, end, text[start:end], tuple(lines), tuple(missing),
                    tuple(controls), config_id)

    for start, end, runs, width, page_break, line_missing, line_controls in setter.lines(text):
        top = config.margin_top + len(lines) * pitch
        x = float(config.margin_left)
        if config.align != "left":
            slack = max(0.0, setter.avail - width)
            x += slack if config.align == "right" else slack / 2
        lines.append(Line(start, end, x, top, top + baseline_offset, width, runs))
        missing.update(line_missing)
        controls.update(line_controls)
        if len(lines) == per_page or page_break:
            yield make_page()
            index += 1
            lines, missing, controls = [], {}, {}
    if lines:
        yield make_page()
