"""Default rasterizer: FreeType glyphs via Pillow, composited with numpy from caches.

Each (face, character, quarter-pixel offset) is rasterised once into a small coverage mask,
and each (face, word, offset) seen twice is composed once from them; a page is then a
few hundred `np.maximum` blits into one coverage plane, coloured at the end with a lookup
table. That is several times faster than `ImageDraw.text` per line and exactly as
deterministic: a mask is a pure function of its key (word masks take their glyph offsets
from the font metric, not from the page), so pixels never depend on what is cached.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

import numpy as np

from render.boxes import missing_box_rects
from render.fonts import MISSING, font_chain, pillow_font

if TYPE_CHECKING:
    from render.config import RenderConfig
    from render.layout import Line, Page, Run

SUBPIXEL_STEPS = 4  # horizontal pen positions are quantised to 1/4 px
MAX_WORDS = 20_000  # word-mask cache entries (a few tens of MB at most)
_WORD = re.compile(r"[^ ]+")

# (mask, dx, dy): coverage and its offset from the integer pen position on the baseline.
_Mask = tuple[np.ndarray, int, int]
_EMPTY: _Mask = (np.zeros((0, 0), np.uint8), 0, 0)


class GlyphCache:
    """Coverage masks of glyphs and words for one font chain at one size."""

    def __init__(self, specs: tuple[str, ...], size: float) -> None:
        self.specs = specs
        self.size = size
        self.chain = font_chain(specs, size)
        self._masks: dict[tuple[int, str, int], _Mask] = {}
        self._words: dict[tuple[int, str, int], list[_Mask]] = {}
        self._seen: set[tuple[int, str, int]] = set()

    def mask(self, face: int, ch: str, step: int) -> _Mask:
        key = (face, ch, step)
        hit = self._masks.get(key)
        if hit is None:
            hit = self._masks[key] = self._rasterise(face, ch, step / SUBPIXEL_STEPS)
        return hit

    def word(self, face: int, text: str, step: int) -> list[_Mask]:
        """Masks that draw a word whose pen starts `step` quarter px right of an integer.

        A word seen before comes back as one composed mask (one blit); on first sight the
        glyph masks are returned as they are, so text whose words never repeat does not pay
        for composing. Both give the same pixels: `np.maximum` is order-independent.
        """
        key = (face, text, step)
        hit = self._words.get(key)
        if hit is not None:
            return hit
        parts = self._glyph_parts(face, text, step)
        if len(parts) <= 1 or key in self._seen:
            if len(self._words) >= MAX_WORDS:
                self._words.clear()
            hit = self._words[key] = [_compose(parts)] if len(parts) > 1 else parts
            return hit
        if len(self._seen) >= 4 * MAX_WORDS:
            self._seen.clear()
        self._seen.add(key)
        return parts

    def _glyph_parts(self, face: int, text: str, step: int) -> list[_Mask]:
        # Offsets come from the font metric alone, so they are a pure function of the key.
        # A wide character on a monospace grid is centred in its two cells (`offsets`).
        pen = step / SUBPIXEL_STEPS
        parts: list[_Mask] = []
        offsets = self.chain.offsets
        for ch in text:
            at = pen + offsets[ch] if ch in offsets else pen
            whole = math.floor(at)
            mask, dx, dy = self.mask(face, ch, int((at - whole) * SUBPIXEL_STEPS + 0.5))
            if mask.size:
                parts.append((mask, whole + dx, dy))
            pen += self.chain.lookup(ch)[1]
        return parts

    def _rasterise(self, face: int, ch: str, frac: float) -> _Mask:
        from PIL import Image, ImageDraw

        font = pillow_font(self.chain.specs[face], self.size)
        left, top, right, bottom = font.getbbox(ch, anchor="ls")
        if right <= left or bottom <= top:
            return _EMPTY
        # One spare column on the right for the fractional shift.
        canvas = Image.new("L", (right - left + 2, bottom - top))
        ImageDraw.Draw(canvas).text((frac - left, -top), ch, fill=255, font=font, anchor="ls")
        coverage = np.asarray(canvas, dtype=np.uint8)
        if not coverage.any():
            return _EMPTY
        return np.ascontiguousarray(coverage), left, top


def _compose(parts: list[_Mask]) -> _Mask:
    """One mask holding several positioned masks (offsets relative to the same origin)."""
    left = min(x for _, x, _ in parts)
    top = min(y for _, _, y in parts)
    right = max(x + m.shape[1] for m, x, _ in parts)
    bottom = max(y + m.shape[0] for m, _, y in parts)
    word = np.zeros((bottom - top, right - left), dtype=np.uint8)
    for mask, x, y in parts:
        view = word[y - top:y - top + mask.shape[0], x - left:x - left + mask.shape[1]]
        np.maximum(view, mask, out=view)
    return word, left, top


_caches: dict[tuple[tuple[str, ...], float], GlyphCache] = {}


def glyph_cache(config: RenderConfig) -> GlyphCache:
    key = (config.font_chain, float(config.font_size))
    cache = _caches.get(key)
    if cache is None:
        if len(_caches) >= 8:  # a handful of configs per process is the normal case
            _caches.clear()
        cache = _caches[key] = GlyphCache(*key)
    return cache


def colour_lut(config: RenderConfig) -> np.ndarray:
    """[256, 3] uint8: coverage -> RGB, blending background towards foreground."""
    fg = np.array(config.foreground_rgb, dtype=np.float64)
    bg = np.array(config.background_rgb, dtype=np.float64)
    alpha = np.arange(256, dtype=np.float64)[:, None] / 255.0
    return np.rint(bg + (fg - bg) * alpha).astype(np.uint8)


def coverage(page: Page, config: RenderConfig) -> np.ndarray:
    """[H, W] uint8 ink coverage of the page (255 = full foreground)."""
    height, width = config.height, config.width
    plane = np.zeros((height, width), dtype=np.uint8)
    cache = glyph_cache(config)
    word_of = cache.word
    finditer = _WORD.finditer
    maximum = np.maximum
    for line in page.lines:
        baseline = math.floor(line.baseline + 0.5)
        for run in line.runs:
            if run.font == MISSING:
                _draw_boxes(plane, line, run, config)
                continue
            face, xs = run.font, run.xs
            for match in finditer(run.text):
                first = match.start()
                pen = line.x + xs[first]
                whole = math.floor(pen)
                step = int((pen - whole) * SUBPIXEL_STEPS + 0.5)
                for mask, dx, dy in word_of(face, match.group(), step):
                    x0 = whole + dx
                    y0 = baseline + dy
                    h, w = mask.shape
                    if x0 < 0 or y0 < 0 or x0 + w > width or y0 + h > height:
                        mask, x0, y0 = _clip(mask, x0, y0, width, height)
                        if not mask.size:
                            continue
                        h, w = mask.shape
                    view = plane[y0:y0 + h, x0:x0 + w]
                    maximum(view, mask, out=view)
    return plane


def _clip(mask: np.ndarray, x0: int, y0: int, width: int, height: int) -> tuple[np.ndarray, int, int]:
    h, w = mask.shape
    left, top = max(0, -x0), max(0, -y0)
    right, bottom = min(w, width - x0), min(h, height - y0)
    if right <= left or bottom <= top:
        return _EMPTY[0], 0, 0
    return mask[top:bottom, left:right], x0 + left, y0 + top


def _draw_boxes(plane: np.ndarray, line: Line, run: Run, config: RenderConfig) -> None:
    """Hollow rectangles for characters no font covers (never silently blank)."""
    for x0, y0, x1, y1 in missing_box_rects(line, run, config):
        plane[y0:y1 + 1, x0] = plane[y0:y1 + 1, x1] = 255
        plane[y0, x0:x1 + 1] = plane[y1, x0:x1 + 1] = 255


def rasterize_pillow(page: Page, config: RenderConfig) -> np.ndarray:
    """[H, W, 3] uint8 RGB image of `page`."""
    plane = coverage(page, config)
    fg, bg = config.foreground_rgb, config.background_rgb
    lut = colour_lut(config)
    if len(set(fg)) == 1 and len(set(bg)) == 1:
        # Grey on grey: colour one channel and copy it (faster than a [256, 3] lookup).
        grey = np.take(lut[:, 0], plane)
        image = np.empty((config.height, config.width, 3), dtype=np.uint8)
        image[:, :, 0] = grey
        image[:, :, 1] = grey
        image[:, :, 2] = grey
        return image
    return np.take(lut, plane, axis=0)
