"""Optional rasterizer: pycairo + PangoCairo (extra `cairo`).

Draws each space-free word of a `Run` of the shared layout as one Pango layout placed at
its pen position and baseline, with kerning and ligatures off and unhinted metrics, so
glyph advances match the layout's (the fonts' own advance tables). Font files from the config are registered
with fontconfig so Pango uses the same faces as the other backends.

Needs: `pip install .[cairo]` (pycairo, PyGObject) and
`apt-get install libcairo2-dev pkg-config libgirepository1.0-dev gir1.2-pango-1.0`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from data.errors import MissingDependency
from render.boxes import missing_box_rects
from render.fonts import MISSING, chain_for, resolve_font

if TYPE_CHECKING:
    from render.config import RenderConfig
    from render.layout import Page, Run

_WORD = re.compile(r"\S+")
INSTALL_HINT = (
    "the 'cairo' backend needs pycairo and PyGObject with Pango: pip install "
    "'visual-symbolic-transformer[cairo]' (pycairo==1.29.2, PyGObject<3.51) and "
    "apt-get install libcairo2-dev pkg-config libgirepository1.0-dev gir1.2-pango-1.0"
)


@functools.lru_cache(maxsize=1)
def _modules() -> tuple[Any, Any, Any]:
    import cairo
    import gi

    gi.require_version("Pango", "1.0")
    gi.require_version("PangoCairo", "1.0")
    from gi.repository import Pango, PangoCairo

    return cairo, Pango, PangoCairo


def unavailable_reason() -> str | None:
    try:
        _modules()
    except (ImportError, ValueError) as error:
        return f"{INSTALL_HINT} ({error})"
    return None


class _FontRegistry:
    """Registers font files with fontconfig and keeps a Pango font map that sees them."""

    def __init__(self) -> None:
        self._registered: set[str] = set()
        self._fontmap: Any = None
        name = ctypes.util.find_library("fontconfig")
        self._fc = ctypes.CDLL(name) if name else None
        if self._fc is not None:
            self._fc.FcConfigAppFontAddFile.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            self._fc.FcConfigAppFontAddFile.restype = ctypes.c_int

    def fontmap(self, specs: tuple[str, ...]) -> Any:
        _, _, PangoCairo = _modules()
        fresh = [s for s in specs if s not in self._registered]
        for spec in fresh:
            path, _ = resolve_font(spec)
            if self._fc is not None:
                self._fc.FcConfigAppFontAddFile(None, str(path).encode())
            self._registered.add(spec)
        if fresh or self._fontmap is None:
            # A new map reads the updated fontconfig configuration.
            self._fontmap = PangoCairo.FontMap.new()
        return self._fontmap


_registry = _FontRegistry()


def _pango_context(cr: Any, config: RenderConfig) -> Any:
    cairo, _, PangoCairo = _modules()
    context = _registry.fontmap(chain_for(config).specs).create_context()
    options = cairo.FontOptions()
    options.set_antialias(cairo.ANTIALIAS_GRAY)
    options.set_hint_style(cairo.HINT_STYLE_NONE)
    options.set_hint_metrics(cairo.HINT_METRICS_OFF)
    PangoCairo.context_set_font_options(context, options)
    PangoCairo.update_context(cr, context)
    return context


def _pieces(run: Run, offsets: dict[str, float]) -> list[tuple[float, str]]:
    """(layout x, text) of the space-free words of a run, each placed by the layout.

    Pango would otherwise place a whole run by its own advances, and it widens spaces
    (measured: 8 leading spaces of DejaVu Sans at 18 px land ~2 px right of the layout),
    so words are placed one by one, as the Pillow backend does. Characters widened to two
    monospace cells (`offsets`) are drawn alone, centred in their cells.
    """
    out: list[tuple[float, str]] = []
    for match in _WORD.finditer(run.text):
        word, first = match.group(), match.start()
        if any(c in offsets for c in word):
            out.extend((run.xs[first + k] + offsets.get(c, 0.0), c) for k, c in enumerate(word))
        else:
            out.append((run.xs[first], word))
    return out


def rasterize_cairo(page: Page, config: RenderConfig) -> np.ndarray:
    """[H, W, 3] uint8 RGB image of `page` drawn with cairo/Pango."""
    reason = unavailable_reason()
    if reason:
        raise MissingDependency(reason)
    cairo, Pango, PangoCairo = _modules()
    chain = chain_for(config)
    surface = cairo.ImageSurface(cairo.FORMAT_RGB24, config.width, config.height)
    cr = cairo.Context(surface)
    cr.set_source_rgb(*(c / 255 for c in config.background_rgb))
    cr.paint()
    cr.set_source_rgb(*(c / 255 for c in config.foreground_rgb))
    context = _pango_context(cr, config)

    attrs = Pango.AttrList()
    attrs.insert(Pango.attr_font_features_new("kern 0, liga 0, clig 0, calt 0"))
    descriptions = {}
    for line in page.lines:
        for run in line.runs:
            if run.font == MISSING:
                for x0, y0, x1, y1 in missing_box_rects(line, run, config):
                    for rect in ((x0, y0, x1 - x0 + 1, 1), (x0, y1, x1 - x0 + 1, 1),
                                 (x0, y0, 1, y1 - y0 + 1), (x1, y0, 1, y1 - y0 + 1)):
                        cr.rectangle(*rect)
                cr.fill()
                continue
            desc = descriptions.get(run.font)
            if desc is None:
                desc = Pango.FontDescription.from_string(chain.face(run.font).family)
                desc.set_absolute_size(config.font_size * Pango.SCALE)
                descriptions[run.font] = desc
            for x, text in _pieces(run, chain.offsets):
                layout = Pango.Layout.new(context)
                layout.set_font_description(desc)
                layout.set_attributes(attrs)
                layout.set_text(text, -1)
                cr.move_to(line.x + x, line.baseline - layout.get_baseline() / Pango.SCALE)
                PangoCairo.show_layout(cr, layout)
    surface.flush()
    stride = surface.get_stride()
    bgrx = np.ndarray((config.height, stride // 4, 4), dtype=np.uint8, buffer=surface.get_data())
    return np.ascontiguousarray(bgrx[:, : config.width, 2::-1])
