"""Geometry of the hollow boxes drawn for characters that no font covers.

Shared by every backend so that a missing glyph looks the same everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from render.config import RenderConfig
    from render.layout import Line, Run


def missing_box_rects(line: Line, run: Run, config: RenderConfig) -> Iterator[tuple[int, int, int, int]]:
    """Inclusive pixel rectangles (x0, y0, x1, y1), one per character of a MISSING run."""
    box_height = max(2, round(config.font_size * 0.7))
    baseline = math.floor(line.baseline + 0.5)
    y0 = max(0, baseline - box_height)
    y1 = min(config.height - 1, baseline - 1)
    edges = (*run.xs, run.end)
    for a, b in zip(edges, edges[1:]):
        x0 = max(0, round(line.x + a) + 1)
        x1 = min(config.width - 1, round(line.x + b) - 2)
        if x1 > x0 and y1 > y0:
            yield x0, y0, x1, y1
