"""Render throughput on one core: every available backend on the same ~3000-char 1024² page.

    python benchmarks/render_bench.py            # ~30 s; --seconds 1 for a quicker run

Pins the process to one CPU and sets the BLAS/OpenMP thread variables to 1 before numpy
loads (no torch involved). For each backend it reports layout + rasterize pages/s and
rasterize-only pages/s (per CPU-second, plus wall-clock), next to two references drawn from the same lines in the same run:
naive Pillow (`ImageDraw.text` per line) and a bare pycairo loop (`show_text` per line,
skipped with a note when pycairo is missing). PNG encoding is timed separately.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from render import get_preset, paginate, rasterize  # noqa: E402
from render.config import RenderConfig  # noqa: E402
from render.fonts import resolve_font  # noqa: E402
from render.layout import Page  # noqa: E402
from render.raster import backend_error, encode_png  # noqa: E402

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from "
         "at which but have an they you were her she there one all we their system model "
         "attention sequence length quadratic compression optical encoder decoder token page "
         "visual document context window throughput memory latency benchmark precision").split()


def sample_text(n_chars: int = 3000, seed: int = 0) -> str:
    """Deterministic English-like prose with punctuation, digits and paragraph breaks."""
    rng = random.Random(seed)
    parts: list[str] = []
    size = 0
    while size < n_chars:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 18)))
        sentence = sentence.capitalize() + rng.choice([".", ".", ",", ";", f" ({rng.randint(1, 999)})."])
        parts.append(sentence + ("\n\n" if rng.random() < 0.08 else " "))
        size += len(parts[-1])
    return "".join(parts)[:n_chars]


def random_words_text(n_chars: int, seed: int = 1) -> str:
    """Worst case for the word cache: random letter strings that almost never repeat."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    words: list[str] = []
    while sum(map(len, words)) + len(words) < n_chars:
        words.append("".join(rng.choice(letters) for _ in range(rng.randint(2, 10))))
    return " ".join(words)[:n_chars]


def cycling(pages: list[Page], config: RenderConfig) -> Callable[[], object]:
    """Rasterize a different page on every call."""
    state = {"i": 0}

    def draw() -> object:
        state["i"] = (state["i"] + 1) % len(pages)
        return rasterize(pages[state["i"]], config)

    return draw


def rate(work: Callable[[], object], seconds: float) -> tuple[float, float]:
    """(calls per CPU-second, calls per wall-second) of `work` after one warm-up call.

    CPU time of this process is the steadier number on a shared machine; Chromium draws in
    its own processes, so only its wall-clock rate is meaningful.
    """
    work()
    count = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while True:
        work()
        count += 1
        wall = time.perf_counter() - wall0
        if wall >= seconds and count >= 3:
            cpu = max(time.process_time() - cpu0, 1e-9)
            return count / cpu, count / wall


def naive_pillow(page: Page, config: RenderConfig, text: str) -> Callable[[], object]:
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    path, index = resolve_font(config.font)
    font = ImageFont.truetype(str(path), size=config.font_size, index=index)
    lines = [(line.x, line.baseline, text[line.start:line.end].rstrip()) for line in page.lines]

    def draw() -> object:
        image = Image.new("RGB", (config.width, config.height), config.background)
        pen = ImageDraw.Draw(image)
        for x, baseline, content in lines:
            pen.text((x, baseline), content, fill=config.foreground, font=font, anchor="ls")
        return np.asarray(image)

    return draw


def bare_cairo(page: Page, config: RenderConfig, text: str) -> Callable[[], object] | None:
    try:
        import cairo
    except ImportError:
        return None
    import numpy as np

    lines = [(line.x, line.baseline, text[line.start:line.end].rstrip()) for line in page.lines]
    family = "DejaVu Sans Mono" if "Mono" in config.font else "DejaVu Sans"

    def draw() -> object:
        surface = cairo.ImageSurface(cairo.FORMAT_RGB24, config.width, config.height)
        cr = cairo.Context(surface)
        cr.set_source_rgb(1, 1, 1)
        cr.paint()
        cr.set_source_rgb(0, 0, 0)
        cr.select_font_face(family)
        cr.set_font_size(config.font_size)
        for x, baseline, content in lines:
            cr.move_to(x, baseline)
            cr.show_text(content)
        surface.flush()
        data = np.ndarray((config.height, surface.get_stride() // 4, 4), np.uint8,
                          buffer=surface.get_data())
        return np.ascontiguousarray(data[:, : config.width, 2::-1])

    return draw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--preset", default="ds-base")
    parser.add_argument("--chars", type=int, default=3000)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    base = get_preset(args.preset)
    text = sample_text(args.chars)
    pages = list(paginate(text, base))
    page = pages[0]
    print(f"page: {args.preset} {base.width}x{base.height}, font {base.font} {base.font_size}px, "
          f"{page.end - page.start} chars on page 0 ({len(pages)} page(s)), 1 core\n")

    rows: list[tuple[str, float | None, float | None, str]] = []
    rows.append(("layout only (shared typesetter)",
                 *rate(lambda: list(paginate(text, base)), args.seconds), ""))
    for backend in ("pillow", "cairo", "chromium"):
        reason = backend_error(backend)
        if reason:
            rows.append((backend, None, None, "unavailable: " + reason[:70]))
            continue
        config = base.replace(backend=backend)
        laid_out = next(paginate(text, config))
        seconds = args.seconds if backend != "chromium" else max(args.seconds, 5.0)
        full = rate(lambda: [rasterize(p, config) for p in paginate(text, config)], seconds)
        draw = rate(lambda: rasterize(laid_out, config), seconds)
        note = "default" if backend == "pillow" else ""
        if backend == "chromium":
            full, draw, note = (None, full[1]), (None, draw[1]), "browser CPU not counted: use wall"
        rows.append((f"{backend}: layout + rasterize", *full, note))
        rows.append((f"{backend}: rasterize only", *draw, ""))

    varied = list(paginate(sample_text(300_000, seed=7), base))
    rows.append((f"pillow: rasterize, {len(varied)} distinct prose pages",
                 *rate(cycling(varied, base), args.seconds), "cold start included"))
    noise = list(paginate(random_words_text(300_000), base))
    rows.append((f"pillow: rasterize, {len(noise)} random-word pages",
                 *rate(cycling(noise, base), args.seconds), "word cache useless"))
    rows.append(("reference: naive Pillow ImageDraw.text/line",
                 *rate(naive_pillow(page, base, text), args.seconds), "same lines"))
    cairo_loop = bare_cairo(page, base, text)
    if cairo_loop is None:
        rows.append(("reference: bare pycairo show_text/line", None, None,
                     "skipped: pycairo not installed"))
    else:
        rows.append(("reference: bare pycairo show_text/line",
                     *rate(cairo_loop, args.seconds), "toy font API, same lines"))

    image = rasterize(page, base)
    for level in (1, 6):
        size = len(encode_png(image, base.dpi, compress_level=level))
        rows.append((f"PNG encode only (zlib level {level})",
                     *rate(lambda: encode_png(image, base.dpi, compress_level=level), args.seconds),
                     f"{size / 1024:.0f} KiB/page"))

    def cell(value: float | None) -> str:
        return f"{value:9.1f}" if value else f"{'-':>9}"

    def ms(value: float | None) -> str:
        return f"{1000 / value:9.2f}" if value else f"{'-':>9}"

    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}} | {'pages/s':>9} | {'ms/page':>9} | {'wall p/s':>9} | note")
    print(f"{'':-<{width}}-|{'':-<11}|{'':-<11}|{'':-<11}|------")
    for what, cpu_rate, wall_rate, note in rows:
        print(f"{what:<{width}} | {cell(cpu_rate)} | {ms(cpu_rate)} | {cell(wall_rate)} | {note}")
    print("\npages/s and ms/page: per CPU-second of this process (one pinned core); "
          f"load average now {os.getloadavg()[0]:.1f}")

if __name__ == "__main__":
    main()
