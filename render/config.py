"""`RenderConfig`: the frozen, hashable description of a standard page, plus named presets.

Everything that changes pixels lives here, so equal configs give byte-identical pages and
the config's `id` (a hash of its canonical JSON) can name a rendering in stores and logs.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from data.errors import BadInput

Alignment = Literal["left", "center", "right"]
Backend = Literal["pillow", "cairo", "chromium"]

ALIGNMENTS: tuple[str, ...] = ("left", "center", "right")
BACKENDS: tuple[str, ...] = ("pillow", "cairo", "chromium")

# Fonts that ship with matplotlib (a hard dependency), so presets never depend on what the
# host happens to have installed. Bare file names resolve inside matplotlib's font folder.
DEFAULT_FALLBACKS: tuple[str, ...] = ("DejaVuSans.ttf", "STIXGeneral.ttf")


def parse_colour(value: str) -> tuple[int, int, int]:
    """'#rrggbb' or '#rgb' -> (r, g, b); raises ValueError with the offending value."""
    text = value.strip().lstrip("#")
    if len(text) == 3:
        text = "".join(c * 2 for c in text)
    if len(text) != 6:
        raise BadInput(f"colour must look like '#rrggbb' or '#rgb', got {value!r}")
    try:
        return (int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16))
    except ValueError:
        raise BadInput(f"colour must be hexadecimal like '#1a2b3c', got {value!r}") from None


@dataclasses.dataclass(frozen=True)
class RenderConfig:
    """Geometry, typography and backend of a standard page. Sizes are in pixels.

    `font_size` is the em size in px; `line_height` is a multiple of it (the baseline pitch).
    `dpi` does not change the layout; it is written into PNG metadata so that physical size
    (`width / dpi` inches) is recorded. Fonts are file names inside matplotlib's bundled
    font folder or absolute paths; a `#n` suffix picks face n of a `.ttc` collection.
    """

    width: int = 1024
    height: int = 1024
    dpi: int = 144
    font: str = "DejaVuSans.ttf"
    font_size: float = 18.0
    line_height: float = 1.3
    margin_top: int = 32
    margin_right: int = 32
    margin_bottom: int = 32
    margin_left: int = 32
    align: Alignment = "left"
    foreground: str = "#000000"
    background: str = "#ffffff"
    backend: Backend = "pillow"
    fallback_fonts: tuple[str, ...] = DEFAULT_FALLBACKS
    tab_size: int = 4

    def __post_init__(self) -> None:
        # Normalise so equal configs serialise (and hash into `id`) identically: JSON gives
        # lists, and 18 vs 18.0 must not change the id.
        if isinstance(self.fallback_fonts, str) or not all(
                isinstance(f, str) for f in self.fallback_fonts):
            raise BadInput(f"RenderConfig.fallback_fonts must be a list of font names, "
                           f"got {self.fallback_fonts!r}")
        object.__setattr__(self, "fallback_fonts", tuple(self.fallback_fonts))
        for name in ("font_size", "line_height"):
            value = getattr(self, name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                object.__setattr__(self, name, float(value))
        self._validate()

    def _validate(self) -> None:
        for name in ("width", "height", "dpi", "tab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise BadInput(f"RenderConfig.{name} must be a positive integer, got {value!r}")
        for name in ("margin_top", "margin_right", "margin_bottom", "margin_left"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise BadInput(f"RenderConfig.{name} must be an integer >= 0, got {value!r}")
        if not (isinstance(self.font_size, (int, float)) and 1 <= self.font_size <= 1000):
            raise BadInput(f"RenderConfig.font_size must be in [1, 1000] px, got {self.font_size!r}")
        if not (isinstance(self.line_height, (int, float)) and 0.5 <= self.line_height <= 10):
            raise BadInput(f"RenderConfig.line_height must be in [0.5, 10], got {self.line_height!r}")
        if self.align not in ALIGNMENTS:
            raise BadInput(f"RenderConfig.align must be one of {ALIGNMENTS}, got {self.align!r}")
        if self.backend not in BACKENDS:
            raise BadInput(f"RenderConfig.backend must be one of {BACKENDS}, got {self.backend!r}")
        parse_colour(self.foreground)
        parse_colour(self.background)
        if not self.font:
            raise BadInput("RenderConfig.font must name a font file")
        if self.text_width < self.font_size:
            raise BadInput(
                f"margins leave {self.text_width} px of width; need at least font_size "
                f"({self.font_size}) px"
            )
        if self.lines_per_page < 1:
            raise BadInput(
                f"margins leave {self.text_height} px of height; one line needs "
                f"{self.line_pitch:.1f} px (font_size * line_height)"
            )

    # -- derived geometry -----------------------------------------------------------------
    @property
    def text_width(self) -> int:
        return self.width - self.margin_left - self.margin_right

    @property
    def text_height(self) -> int:
        return self.height - self.margin_top - self.margin_bottom

    @property
    def line_pitch(self) -> float:
        return float(self.font_size) * float(self.line_height)

    @property
    def lines_per_page(self) -> int:
        return int(self.text_height // self.line_pitch)

    @property
    def foreground_rgb(self) -> tuple[int, int, int]:
        return parse_colour(self.foreground)

    @property
    def background_rgb(self) -> tuple[int, int, int]:
        return parse_colour(self.background)

    @property
    def font_chain(self) -> tuple[str, ...]:
        """Primary font followed by the fallbacks, in lookup order."""
        return (self.font, *self.fallback_fonts)

    # -- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["fallback_fonts"] = list(self.fallback_fonts)
        return data

    def to_json(self, *, indent: int | None = None) -> str:
        """Canonical JSON (sorted keys); `indent` only for human-readable files."""
        separators = (",", ":") if indent is None else (",", ": ")
        return json.dumps(self.to_dict(), sort_keys=True, separators=separators, indent=indent)

    @functools.cached_property  # fields are frozen; rendering checks the id on every page
    def id(self) -> str:
        """Stable short id: the first 12 hex digits of sha256 of the canonical JSON."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()[:12]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RenderConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BadInput(f"unknown RenderConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> RenderConfig:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise BadInput("RenderConfig JSON must be an object")
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> RenderConfig:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json(indent=2) + "\n", encoding="utf-8")
        return path

    def replace(self, **changes: Any) -> RenderConfig:
        return dataclasses.replace(self, **changes)


# All named presets in one place. DeepSeek-OCR's native resolutions (Tiny/Small/Base/Large)
# plus `mini`, the page of our CPU codec: the codec may retune its numbers here.
PRESETS: dict[str, RenderConfig] = {
    "ds-tiny": RenderConfig(width=512, height=512, font_size=11.0, line_height=1.25,
                            margin_top=16, margin_right=16, margin_bottom=16, margin_left=16),
    "ds-small": RenderConfig(width=640, height=640, font_size=13.0, line_height=1.25,
                             margin_top=20, margin_right=20, margin_bottom=20, margin_left=20),
    "ds-base": RenderConfig(width=1024, height=1024, font_size=18.0, line_height=1.3,
                            margin_top=32, margin_right=32, margin_bottom=32, margin_left=32),
    "ds-large": RenderConfig(width=1280, height=1280, font_size=22.0, line_height=1.3,
                             margin_top=40, margin_right=40, margin_bottom=40, margin_left=40),
    # Tuned for codec/mini: an exact 14 px line pitch (11 * 14/11 == 14.0 in floats) so every
    # text line is a whole pixel band; 32 lines x 74 monospace columns.
    "mini": RenderConfig(width=512, height=512, dpi=96, font="DejaVuSansMono.ttf",
                         font_size=11.0, line_height=1.2727272727272727, margin_top=32,
                         margin_right=8, margin_bottom=32, margin_left=8),
    # codec/mini's Chinese page (mini-zh, issue #24): DejaVu Sans Mono 16 px, hanzi from the
    # shipped Noto Sans CJK SC subset, two cells each (render/fonts.py); 20 px line pitch;
    # 24 lines x 51 cells (25 hanzi).
    "mini-zh": RenderConfig(width=512, height=512, dpi=96, font="DejaVuSansMono.ttf",
                            font_size=16.0, line_height=1.25, margin_top=16, margin_right=8,
                            margin_bottom=16, margin_left=8),
}


def get_preset(name: str) -> RenderConfig:
    """The preset called `name`; a ValueError lists the valid names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise BadInput(
            f"unknown render preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}"
        ) from None
