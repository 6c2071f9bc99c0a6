"""Text -> standard page images, each page knowing exactly which characters it shows.

    from render import get_preset, render_text
    for page, image in render_text(text, get_preset("mini")):
        assert page.text == text[page.start:page.end]   # image: uint8 [H, W, 3]

Layout (`render.layout`) is separate from the rasterizers (`render.raster_*`); see
docs/render.md.
"""

from render.config import BACKENDS, PRESETS, RenderConfig, get_preset
from render.layout import Line, Page, Run, paginate
from render.raster import available_backends, rasterize, render_text, save_png

__all__ = [
    "BACKENDS",
    "PRESETS",
    "Line",
    "Page",
    "RenderConfig",
    "Run",
    "available_backends",
    "get_preset",
    "paginate",
    "rasterize",
    "render_text",
    "save_png",
]
