"""Optional backends (cairo, chromium): same layout and spans as Pillow, deterministic pixels.

Each test skips with the backend's install hint when its packages are not installed.
"""

from __future__ import annotations

import numpy as np
import pytest

from render import get_preset, paginate, rasterize
from render.raster import available_backends, backend_error

OPTIONAL = ["cairo", "chromium"]
TEXT = ("Backends share one layout.\tTabs, control \x00 chars, a missing glyph \ue000 and "
        "fallback ∮ symbols.\n\n" + "The quick brown fox jumps over the lazy dog. " * 60)


def require(backend: str) -> None:
    reason = backend_error(backend)
    if reason:
        pytest.skip(reason)


def test_pillow_is_always_available() -> None:
    assert "pillow" in available_backends()


def test_unknown_backend_reason() -> None:
    assert "unknown backend" in (backend_error("svg") or "")


@pytest.mark.parametrize("backend", OPTIONAL)
def test_backends_agree_on_pages_and_spans(backend: str) -> None:
    require(backend)
    base = get_preset("ds-tiny")
    other = base.replace(backend=backend)
    spans = [(p.start, p.end, [(l.start, l.end) for l in p.lines]) for p in paginate(TEXT, base)]
    other_spans = [(p.start, p.end, [(l.start, l.end) for l in p.lines])
                   for p in paginate(TEXT, other)]
    assert spans == other_spans and len(spans) > 1


@pytest.mark.parametrize("backend", OPTIONAL)
def test_backend_is_deterministic_and_draws_the_same_lines(backend: str) -> None:
    require(backend)
    base = get_preset("ds-tiny")
    config = base.replace(backend=backend)
    page = next(paginate(TEXT, config))
    first = rasterize(page, config)
    second = rasterize(page, config)
    assert first.shape == (config.height, config.width, 3) and first.dtype == np.uint8
    assert np.array_equal(first, second)

    reference = rasterize(next(paginate(TEXT, base)), base)
    ink = (first < 128).any(axis=2)
    ref_ink = (reference < 128).any(axis=2)
    assert ink.sum() > 0.5 * ref_ink.sum()
    # Same rows carry text (same baselines), and ink stays within a few px of Pillow's.
    rows, ref_rows = ink.any(axis=1), ref_ink.any(axis=1)
    assert not (rows & ~_widen(ref_rows, 2)).any() and not (ref_rows & ~_widen(rows, 2)).any()
    cols, ref_cols = np.nonzero(ink.any(axis=0))[0], np.nonzero(ref_ink.any(axis=0))[0]
    assert abs(int(cols.min()) - int(ref_cols.min())) <= 3
    assert abs(int(cols.max()) - int(ref_cols.max())) <= 6


def _widen(mask: np.ndarray, by: int) -> np.ndarray:
    """`mask` dilated by `by` entries either way (hinting moves edges by a pixel or so)."""
    out = mask.copy()
    for shift in range(1, by + 1):
        out[shift:] |= mask[:-shift]
        out[:-shift] |= mask[shift:]
    return out


@pytest.mark.parametrize("backend", OPTIONAL)
def test_backend_draws_missing_glyph_boxes(backend: str) -> None:
    require(backend)
    config = get_preset("mini").replace(backend=backend)
    page = next(paginate("\ue000\ue001", config))
    assert page.missing_glyphs == ("\ue000", "\ue001")
    assert ((rasterize(page, config) < 128).any(axis=2)).sum() > 20


def test_unavailable_backend_message_names_the_extra(monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_optional(name, *args, **kwargs):
        if name.split(".")[0] in {"cairo", "gi", "playwright"}:
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    import render.raster_cairo as raster_cairo

    raster_cairo._modules.cache_clear()
    monkeypatch.setattr(builtins, "__import__", no_optional)
    try:
        assert "pycairo" in (backend_error("cairo") or "")
        assert "apt-get install" in (backend_error("cairo") or "")
        assert "playwright" in (backend_error("chromium") or "")
    finally:
        monkeypatch.undo()
        raster_cairo._modules.cache_clear()
