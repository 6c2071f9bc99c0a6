"""Backend dispatch: `rasterize(page, config)` and `render_text(text, config)`.

Backends only draw a finished layout; they are imported on first use so that the optional
ones (pycairo/PyGObject, playwright + Chromium) cost nothing when unused.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from data.errors import BadInput
from render.layout import Page, paginate

if TYPE_CHECKING:
    from render.config import RenderConfig

Rasterizer = Callable[[Page, "RenderConfig"], np.ndarray]


def _load(backend: str) -> Rasterizer:
    if backend == "pillow":
        from render.raster_pillow import rasterize_pillow

        return rasterize_pillow
    if backend == "cairo":
        from render.raster_cairo import rasterize_cairo

        return rasterize_cairo
    if backend == "chromium":
        from render.raster_chromium import rasterize_chromium

        return rasterize_chromium
    raise BadInput(f"unknown backend {backend!r}")


def backend_error(backend: str) -> str | None:
    """Why `backend` cannot run here, or None when it can."""
    if backend == "pillow":
        return None
    if backend == "cairo":
        from render.raster_cairo import unavailable_reason
    elif backend == "chromium":
        from render.raster_chromium import unavailable_reason
    else:
        return f"unknown backend {backend!r}"
    return unavailable_reason()


def available_backends() -> list[str]:
    from render.config import BACKENDS

    return [name for name in BACKENDS if backend_error(name) is None]


def rasterize(page: Page, config: RenderConfig) -> np.ndarray:
    """Draw `page` (laid out with `config`) as a uint8 [H, W, 3] RGB array."""
    if page.config_id != config.id:
        raise ValueError(
            f"page was laid out with config {page.config_id}, not {config.id}; "
            "paginate and rasterize with the same RenderConfig"
        )
    return _load(config.backend)(page, config)


def render_text(text: str, config: RenderConfig) -> Iterator[tuple[Page, np.ndarray]]:
    """Lazily yield (page, image) for every page of `text` (bad input raises at once)."""
    draw = _load(config.backend)
    return ((page, draw(page, config)) for page in paginate(text, config))


def encode_png(image: np.ndarray, dpi: int | None = None, compress_level: int = 6) -> bytes:
    """PNG bytes of a uint8 [H, W, 3] image (deterministic: no timestamps)."""
    from PIL import Image

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
    buffer = io.BytesIO()
    kwargs = {"dpi": (dpi, dpi)} if dpi else {}
    Image.fromarray(image, "RGB").save(buffer, format="PNG", compress_level=compress_level, **kwargs)
    return buffer.getvalue()


def save_png(image: np.ndarray, path: str | Path, dpi: int | None = None) -> Path:
    path = Path(path)
    path.write_bytes(encode_png(image, dpi))
    return path
