"""Font files and the one shared width metric every backend lays out with.

Widths come from the fonts' own advance tables (fontTools `hmtx`, unhinted, scaled to the
font size), so layout never depends on a rasterizer's hinting and all backends agree on
line breaks, page breaks and character spans.

Every chain ends with the fonts shipped in render/fonts/ (`SHIPPED_FALLBACKS`: a subset of
Noto Sans CJK SC, OFL 1.1, made by `python -m render.fonts_build`), so a pip-only install
draws Chinese, Japanese kana and Hangul. They are appended after the config's own fonts
rather than written into `RenderConfig.fallback_fonts`, so the ids of existing configs
(and of the stores and codecs that record them) do not change; English never reaches them.

On a monospace primary font (the `mini` preset) a wide character (East Asian Width W or F)
drawn by a fallback takes exactly two cells, centred in them, so CJK text stays on the
character grid the mini codec reads; proportional primaries keep the fonts' own advances.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import subprocess
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from data.errors import BadInput, MissingDependency, MissingPath

if TYPE_CHECKING:
    from PIL import ImageFont

    from render.config import RenderConfig

MISSING = -1  # no font in the chain has the character: drawn as a box and reported
INVISIBLE = -2  # default-ignorable / unsupported whitespace: advances, draws nothing


def bundled_font_dir() -> Path:
    """matplotlib's bundled TrueType folder (found without importing matplotlib)."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency("matplotlib is not installed; it ships the default DejaVu fonts",
                                hint="pip install matplotlib")
    return Path(list(spec.submodule_search_locations)[0]) / "mpl-data" / "fonts" / "ttf"


def shipped_font_dir() -> Path:
    """render/fonts/: the fonts this package ships (package data), with their licences."""
    return Path(__file__).parent / "fonts"


# Appended to every chain, after the config's fonts (see the module docstring).
SHIPPED_FALLBACKS: tuple[str, ...] = ("NotoSansCJKsc-VST.otf",)


def resolve_font(spec: str) -> tuple[Path, int]:
    """'DejaVuSans.ttf' (matplotlib's), 'NotoSansCJKsc-VST.otf' (shipped), '/abs/font.ttf'
    or '/abs/fonts.ttc#2' -> (path, face)."""
    name, _, face = spec.partition("#")
    if face and not face.isdigit():
        raise BadInput(f"font {spec!r}: the part after '#' must be a face number")
    candidates = [Path(name)] if Path(name).is_absolute() else [
        bundled_font_dir() / name, shipped_font_dir() / name, Path(name)]
    for path in candidates:
        if path.is_file():
            return path, int(face or 0)
    bundled = sorted(p.name for p in bundled_font_dir().glob("*.ttf"))
    shipped = sorted(p.name for p in shipped_font_dir().glob("*.[ot]tf"))
    raise MissingPath(
        f"font {spec!r} not found; use an absolute path, one of matplotlib's bundled "
        f"fonts ({', '.join(bundled)}) or one shipped in render/fonts ({', '.join(shipped)})"
    )


@dataclass
class FontFace:
    """Character coverage and advances of one face, in font units."""

    spec: str
    path: Path
    index: int
    family: str
    units_per_em: int
    ascent: int
    descent: int  # positive, below the baseline
    cmap: dict[int, str]
    advances: dict[str, int]
    fixed_pitch: bool = False  # the post table says monospace

    @property
    def is_cjk(self) -> bool:
        """A CJK font: it covers at least 1,000 of the URO ideographs (U+4E00-9FFF).
        (OS/2 code page bits cannot tell: STIX General claims every CJK code page.)"""
        return sum(0x4E00 <= cp <= 0x9FFF for cp in self.cmap) >= 1000

    @classmethod
    def load(cls, spec: str) -> FontFace:
        from fontTools.ttLib import TTFont

        path, index = resolve_font(spec)
        font = TTFont(str(path), fontNumber=index, lazy=True)
        if not any(tag in font for tag in ("glyf", "CFF ", "CFF2")):
            raise BadInput(
                f"font {spec!r} has no outlines (bitmap-only, e.g. colour emoji); "
                "pick an outline font"
            )
        names = font["name"]
        family = str(names.getDebugName(16) or names.getDebugName(1) or path.stem)
        hhea = font["hhea"]
        return cls(
            spec=spec,
            path=path,
            index=index,
            family=family,
            units_per_em=int(font["head"].unitsPerEm),
            ascent=int(hhea.ascent),
            descent=-int(hhea.descent),
            cmap=dict(font.getBestCmap() or {}),
            advances={name: adv for name, (adv, _lsb) in font["hmtx"].metrics.items()},
            fixed_pitch=bool("post" in font and font["post"].isFixedPitch),
        )


def _is_default_ignorable(ch: str) -> bool:
    cp = ord(ch)
    return (
        unicodedata.category(ch) == "Cf"
        or 0xFE00 <= cp <= 0xFE0F  # variation selectors
        or 0xE0100 <= cp <= 0xE01EF
        or cp == 0x034F  # combining grapheme joiner
    )


def is_wide(ch: str) -> bool:
    """East Asian Width W or F: ideographs, kana, Hangul, CJK and full-width punctuation."""
    return unicodedata.east_asian_width(ch) in ("W", "F")


class FontChain:
    """Primary font plus fallbacks at one size; answers 'which face, how wide' per char.

    `specs` are the config's fonts followed by `SHIPPED_FALLBACKS` (face indices in the
    layout's runs index this tuple). `offsets` holds the draw offset (px) of characters
    whose advance was widened to two monospace cells, so each backend centres them.
    """

    def __init__(self, specs: tuple[str, ...], size: float) -> None:
        if not specs:
            raise BadInput("a font chain needs at least one font")
        specs = tuple(specs) + tuple(s for s in SHIPPED_FALLBACKS if s not in specs)
        self.specs = specs
        self.size = float(size)
        self._faces: list[FontFace | None] = [FontFace.load(specs[0])] + [None] * (len(specs) - 1)
        self._lookup: dict[str, tuple[int, float]] = {}
        self.offsets: dict[str, float] = {}
        self._wide_order: list[int] | None = None
        primary = self.primary
        scale = self.size / primary.units_per_em
        self.ascent = primary.ascent * scale
        self.descent = primary.descent * scale
        self.space_advance = self._advance(0, " ") or self.size * 0.5
        self.box_advance = self._advance(0, "0") or self.size * 0.6
        # Monospace primary: wide fallback characters take two cells (see module doc).
        self.wide_cells = 2 * self.box_advance if primary.fixed_pitch else None

    @property
    def primary(self) -> FontFace:
        face = self._faces[0]
        assert face is not None
        return face

    def face(self, index: int) -> FontFace:
        """Face `index`, loading fallbacks only when a character first needs them."""
        face = self._faces[index]
        if face is None:
            face = self._faces[index] = FontFace.load(self.specs[index])
        return face

    def _advance(self, index: int, ch: str) -> float | None:
        face = self.face(index)
        glyph = face.cmap.get(ord(ch))
        if glyph is None:
            return None
        return face.advances.get(glyph, 0) * self.size / face.units_per_em

    def _cjk_first(self) -> list[int]:
        """Face order for wide characters: CJK fonts (`FontFace.is_cjk`) first, each group
        in chain order. So ideographs, kana and Hangul come from a CJK font whenever the
        chain has one that covers them: a Latin font's few stray kana (STIX General has
        の, 〒 and 〰) never mix into Japanese text, while wide symbols that only a Latin
        font has (DejaVu's 😀) still come from it. Loads every face once."""
        if self._wide_order is None:
            faces = range(len(self.specs))
            cjk = [i for i in faces if self.face(i).is_cjk]
            self._wide_order = cjk + [i for i in faces if i not in cjk]
        return self._wide_order

    def lookup(self, ch: str) -> tuple[int, float]:
        """(face index or MISSING/INVISIBLE, advance in px) for one character; cached."""
        hit = self._lookup.get(ch)
        if hit is not None:
            return hit
        result: tuple[int, float] | None = None
        wide = is_wide(ch)
        for index in self._cjk_first() if wide else range(len(self.specs)):
            advance = self._advance(index, ch)
            if advance is not None:
                if index and self.wide_cells is not None and wide and advance > 0:
                    # (zero-width glyphs, like the combining dakuten, stay zero-width)
                    self.offsets[ch] = max(0.0, (self.wide_cells - advance) / 2)
                    advance = self.wide_cells
                result = (index, advance)
                break
        if result is None:
            if ch.isspace():
                result = (INVISIBLE, self.space_advance)
            elif _is_default_ignorable(ch):
                result = (INVISIBLE, 0.0)
            elif wide:
                result = (MISSING, self.wide_cells or self.size)
            else:
                result = (MISSING, self.box_advance)
        self._lookup[ch] = result
        return result


@functools.lru_cache(maxsize=16)
def font_chain(specs: tuple[str, ...], size: float) -> FontChain:
    return FontChain(specs, size)


def chain_for(config: RenderConfig) -> FontChain:
    return font_chain(config.font_chain, float(config.font_size))


@functools.lru_cache(maxsize=32)
def pillow_font(spec: str, size: float) -> ImageFont.FreeTypeFont:
    from PIL import ImageFont

    path, index = resolve_font(spec)
    return ImageFont.truetype(str(path), size=size, index=index,
                              layout_engine=ImageFont.Layout.BASIC)


# -- optional system fallbacks (CJK, other scripts) -----------------------------------------
_FC_QUERIES = ("sans-serif:lang=zh-cn", "sans-serif:lang=ja", "sans-serif:lang=ko",
               "sans-serif:lang=ar", "sans-serif:lang=hi", "sans-serif:lang=th",
               "sans-serif:lang=he", "symbol")
_KNOWN_DEBIAN_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSansSymbols2-Regular.ttf",
    "/usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf",
    "/usr/share/fonts/truetype/unifont/unifont.ttf",
)


def find_system_fallbacks() -> tuple[str, ...]:
    """Outline fonts found via `fc-match` (or known Debian paths) for non-Latin scripts.

    Optional: the result depends on the host, so it is meant to be written into a config
    (see `with_system_fallbacks`), which then records exactly which files were used.
    """
    found: list[str] = []
    if shutil.which("fc-match"):
        for query in _FC_QUERIES:
            try:
                out = subprocess.run(["fc-match", "-f", "%{file}#%{index}", query],
                                     capture_output=True, text=True, timeout=10).stdout.strip()
            except (OSError, subprocess.SubprocessError):
                continue
            if out and not out.startswith("#"):
                found.append(out[:-2] if out.endswith("#0") else out)
    found.extend(p for p in _KNOWN_DEBIAN_FONTS if Path(p).is_file())
    result: list[str] = []
    seen_names = {"DejaVuSans.ttf", "DejaVuSansMono.ttf", "DejaVuSerif.ttf", "STIXGeneral.ttf"}
    for spec in found:
        name = Path(spec.partition("#")[0]).name
        if name in seen_names or spec in result:
            continue
        try:
            FontFace.load(spec)
        except (OSError, ValueError):
            continue  # bitmap-only or unreadable: not usable by every backend
        seen_names.add(name)
        result.append(spec)
    return tuple(result)


def with_system_fallbacks(config: RenderConfig) -> RenderConfig:
    """`config` with the host's extra fallback fonts appended (a new config id)."""
    extra = tuple(s for s in find_system_fallbacks() if s not in config.font_chain)
    return config.replace(fallback_fonts=config.fallback_fonts + extra)
