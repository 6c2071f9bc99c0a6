"""Text -> standard page images, each page knowing exactly which characters it shows.

    from render import get_preset, render_text
    for page, image in render_text(text, get_preset("mini")):
        assert page.text == text[page.start:page.end]   # image: uint8 [H, W, 3]

Layout (`render.layout`) is separate from the rasterizers (`render.raster_*`); see
docs/render.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> defining module. Resolved on first access so that `import render.cli`
# (done by `vst --help`) does not pay for numpy and the font machinery.
_EXPORTS = {
    "BACKENDS": "render.config",
    "PRESETS": "render.config",
    "RenderConfig": "render.config",
    "get_preset": "render.config",
    "Line": "render.layout",
    "Page": "render.layout",
    "Run": "render.layout",
    "paginate": "render.layout",
    "char_boxes": "render.layout",
    "available_backends": "render.raster",
    "rasterize": "render.raster",
    "render_text": "render.raster",
    "save_png": "render.raster",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from render.config import BACKENDS, PRESETS, RenderConfig, get_preset
    from render.layout import Line, Page, Run, char_boxes, paginate
    from render.raster import available_backends, rasterize, render_text, save_png


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'render' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
