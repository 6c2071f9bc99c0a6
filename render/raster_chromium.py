"""Optional rasterizer: headless Chromium through playwright (extra `chromium`).

Each page becomes one SVG in which every glyph gets its x position from the shared layout
(`<text x="x1 x2 ...">`) and every run its baseline `y`, so Chromium draws our layout, not
its own. Fonts are served to the page from the config's font files through an intercepted
`http://render.invalid/` origin, so nothing touches the network. One browser is started on
first use and reused for the life of the process.

Needs: `pip install .[chromium]` (playwright==1.65.2) and Debian's browser
(`apt-get install chromium`; playwright cannot download one here). Set `VST_CHROMIUM` to
use another executable. Collections (`.ttc`) are served whole; Chromium uses their face 0.
"""

from __future__ import annotations

import atexit
import html
import io
import os
import shutil
from typing import TYPE_CHECKING, Any

import numpy as np

from data.errors import MissingDependency
from render.boxes import missing_box_rects
from render.fonts import MISSING, chain_for, resolve_font

if TYPE_CHECKING:
    from render.config import RenderConfig
    from render.layout import Page

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    # Determinism: greyscale antialiasing, no hinting, no colour management, 1x pixels.
    "--disable-lcd-text", "--font-render-hinting=none", "--force-color-profile=srgb",
    "--force-device-scale-factor=1",
]
INSTALL_HINT = (
    "the 'chromium' backend needs playwright and a Chromium binary: pip install "
    "'visual-symbolic-transformer[chromium]' (playwright==1.65.2) and apt-get install chromium "
    "(or set VST_CHROMIUM to a Chromium executable)"
)
ORIGIN = "http://render.invalid"


def chromium_executable() -> str | None:
    candidate = os.environ.get("VST_CHROMIUM") or "/usr/bin/chromium"
    if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
        return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


def unavailable_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as error:
        return f"{INSTALL_HINT} ({error})"
    if chromium_executable() is None:
        return f"{INSTALL_HINT} (no chromium executable found)"
    return None


class _Browser:
    """One headless Chromium tab that serves fonts from local files."""

    def __init__(self) -> None:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        try:
            self._browser = self._playwright.chromium.launch(
                executable_path=chromium_executable(), args=CHROMIUM_ARGS
            )
            self.tab = self._browser.new_page(viewport={"width": 64, "height": 64})
        except Exception:
            self._playwright.stop()
            raise
        self.font_ids: dict[str, int] = {}
        self.tab.route(f"{ORIGIN}/**", self._serve)
        self.tab.goto(f"{ORIGIN}/")
        atexit.register(self.close)

    def _serve(self, route: Any) -> None:
        path = route.request.url[len(ORIGIN):]
        if path.startswith("/font/"):
            wanted = int(path.rsplit("/", 1)[1])
            spec = next(s for s, i in self.font_ids.items() if i == wanted)
            body = resolve_font(spec)[0].read_bytes()
            route.fulfill(status=200, body=body, content_type="font/ttf")
        else:
            route.fulfill(status=200, content_type="text/html",
                          body="<!doctype html><html><head></head><body></body></html>")

    def family(self, spec: str) -> str:
        """CSS family name for a font file, declaring it on first use."""
        if spec not in self.font_ids:
            font_id = self.font_ids[spec] = len(self.font_ids)
            rule = f"@font-face {{ font-family: f{font_id}; src: url('/font/{font_id}'); }}"
            self.tab.evaluate(
                "rule => { const s = document.createElement('style');"
                " s.textContent = rule; document.head.appendChild(s); }", rule)
        return f"f{self.font_ids[spec]}"

    def close(self) -> None:
        try:
            self._browser.close()
        finally:
            self._playwright.stop()


_browser: _Browser | None = None


def _get_browser() -> _Browser:
    global _browser
    if _browser is None:
        reason = unavailable_reason()
        if reason:
            raise MissingDependency(reason)
        _browser = _Browser()
    return _browser


def page_svg(page: Page, config: RenderConfig, families: dict[int, str]) -> str:
    """The SVG markup of one page (exposed for inspection and tests)."""
    offsets = chain_for(config).offsets  # wide characters centred in two monospace cells
    fg = config.foreground
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{config.width}" '
        f'height="{config.height}" style="display:block">',
        f'<rect width="100%" height="100%" fill="{config.background}"/>',
        f'<g fill="{fg}" font-size="{config.font_size}px" style="white-space:pre;'
        'font-kerning:none;font-variant-ligatures:none">',
    ]
    for line in page.lines:
        for run in line.runs:
            if run.font == MISSING:
                for x0, y0, x1, y1 in missing_box_rects(line, run, config):
                    w, h = x1 - x0 + 1, y1 - y0 + 1
                    parts.append(
                        f'<path shape-rendering="crispEdges" d="M{x0} {y0}h{w}v{h}h-{w}z'
                        f'M{x0 + 1} {y0 + 1}v{h - 2}h{w - 2}v-{h - 2}z" fill-rule="evenodd"/>'
                    )
                continue
            # Spaces draw nothing and every glyph has its own x, so they are left out:
            # Chromium drops a <text>'s leading spaces even under white-space:pre and
            # would then give their x positions to the characters that follow.
            glyphs = [(x, ch) for x, ch in zip(run.xs, run.text) if not ch.isspace()]
            if not glyphs:
                continue
            xs = " ".join(f"{line.x + x + offsets.get(ch, 0.0):.3f}" for x, ch in glyphs)
            shown = html.escape("".join(ch for _, ch in glyphs))
            parts.append(f'<text font-family="{families[run.font]}" x="{xs}" '
                         f'y="{line.baseline:.3f}">{shown}</text>')
    parts.append("</g></svg>")
    return "".join(parts)


_SHOW = """async ([markup, families]) => {
  document.body.style.margin = '0';
  document.body.innerHTML = markup;
  await Promise.all(families.map(f => document.fonts.load('16px ' + f)));
  await document.fonts.ready;
}"""


def rasterize_chromium(page: Page, config: RenderConfig) -> np.ndarray:
    """[H, W, 3] uint8 RGB screenshot of `page` drawn by headless Chromium."""
    from PIL import Image

    browser = _get_browser()
    tab = browser.tab
    size = {"width": config.width, "height": config.height}
    if tab.viewport_size != size:
        tab.set_viewport_size(size)
    used = sorted({run.font for line in page.lines for run in line.runs if run.font != MISSING})
    specs = chain_for(config).specs  # the config's fonts, then the shipped fallbacks
    families = {i: browser.family(specs[i]) for i in used}
    tab.evaluate(_SHOW, [page_svg(page, config, families), list(families.values())])
    png = tab.screenshot(type="png", animations="disabled", caret="hide")
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
