"""Training pages for the mini codec: rendered demo-corpus text plus synthetic text.

Real pages come from the demo corpus (pydoc of the standard library), paginated from a
random line of a random document so that page and band boundaries vary. Synthetic pages
(random words, numbers, punctuation, indentation and non-ASCII characters) keep the
codec a reader of glyphs rather than a model of pydoc's phrasing.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import numpy as np
import torch

from codec.mini import vocab
from codec.mini.layout import band_spans
from codec.mini.vocab import EXTRA_CHARS

_WORD = re.compile(r"\S+")


@dataclass
class PageSample:
    ink: np.ndarray  # uint8 [H, W] gray, 255 = white
    text: str
    lines: list[tuple[int, int]]  # line spans relative to `text`
    frames: list[np.ndarray | None]  # per line: the canonical CTC path (None: no alignment)


def aligned_path(line, text: str, frames: int, cell: float,
                 chars: vocab.Vocab = vocab.EN) -> np.ndarray | None:
    """The canonical CTC path of a line: the character in cell c at frame 2c (blanks at odd
    frames) and the line terminator in the cell after the last character. Dense,
    layout-given supervision that trains in minutes. None when glyphs and characters do not
    map one to one onto cells (tabs, controls, wide fallback glyphs, overflow)."""
    body = text.removesuffix("\n")
    if body and body[-1] in "\r\v\f\x85\u2028\u2029":
        return None
    if "".join(run.text for run in line.runs) != body:
        return None
    cells = [round(x / cell) for run in line.runs for x in run.xs]
    path = np.zeros(frames, dtype=np.int16)
    ids = chars.encode(text)
    last = -1
    for ch_id, c in zip(ids, cells):
        if c <= last or 2 * c >= frames:
            return None
        path[2 * c] = ch_id
        last = c
    if len(ids) > len(cells):  # the terminator
        if 2 * (last + 1) >= frames:
            return None
        path[2 * (last + 1)] = ids[-1]
    return path


def line_frames(render_config) -> tuple[int, float]:
    """CTC frames per line and the character cell width (px) of the mini encoder's page."""
    from codec.mini.model import Geometry, MiniConfig

    cfg = MiniConfig(geometry=Geometry.of(render_config))
    return cfg.frames_per_line, cfg.geometry.cell_width


def to_sample(page, image: np.ndarray, render_config,
              chars: vocab.Vocab = vocab.EN) -> PageSample:
    frames, px = line_frames(render_config)
    spans = [(ln.start - page.start, ln.end - page.start) for ln in page.lines]
    paths = [aligned_path(ln, page.text[a:b], frames, px, chars)
             for ln, (a, b) in zip(page.lines, spans)]
    return PageSample(image.mean(-1).astype(np.uint8) if image.ndim == 3 else image,
                      page.text, spans, paths)


def bands_of(sample: PageSample, rows: int, lines_per_band: int) -> list[str]:
    spans = band_spans([_Span(*s) for s in sample.lines], rows, lines_per_band)
    return ["" if s is None else sample.text[s[0]:s[1]] for s in spans]


@dataclass
class _Span:
    start: int
    end: int


def synthetic_text(rng: random.Random, vocab: list[str], n_lines: int = 40,
                   max_width: int = 72) -> str:
    """Lines of random words, digits, symbols and indentation (not pydoc's phrasing)."""
    symbols = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
    lines = []
    for _ in range(n_lines):
        if rng.random() < 0.08:
            lines.append("")
            continue
        indent = " " * rng.choice([0, 0, 0, 2, 4, 4, 8, 12])
        words = []
        for _ in range(rng.randint(1, 14)):
            r = rng.random()
            if r < 0.55:
                w = rng.choice(vocab)
            elif r < 0.7:
                w = str(rng.randint(0, 10 ** rng.randint(1, 8)))
            elif r < 0.85:
                w = "".join(rng.choice(symbols) for _ in range(rng.randint(1, 4)))
            elif r < 0.93:
                w = "".join(rng.choice(EXTRA_CHARS) for _ in range(rng.randint(1, 3)))
            else:
                w = "".join(chr(rng.randint(33, 126)) for _ in range(rng.randint(2, 10)))
            if rng.random() < 0.1:
                w = w.upper()
            words.append(w)
        sep = " " if rng.random() < 0.9 else "  "
        line = indent + words[0]
        for w in words[1:]:  # hard breaks only: soft wraps come from real long lines
            if len(line) + len(sep) + len(w) > max_width:
                break
            line += sep + w
        lines.append(line[:max_width])
    return "\n".join(lines) + "\n"


def _cell(rng: random.Random, vocab: list[str]) -> str:
    words = [rng.choice(vocab) for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.4:
        words = ['"' + w + '"' for w in words]
        return (", " if rng.random() < 0.5 else " ").join(words)
    return " ".join(words)


def structured_text(rng: random.Random, vocab: list[str], n_lines: int = 40) -> str:
    """Column-aligned text: grid tables (with borders that may be wider than the page, so
    the renderer breaks them mid-run), aligned columns separated by long runs of spaces,
    and grammar-like lines full of double quotes. Documentation is full of these, and a
    line reader must learn that a run of blanks is not the end of a line."""
    lines: list[str] = []
    while len(lines) < n_lines:
        kind = rng.random()
        if kind < 0.45:  # a grid table
            widths = [rng.randint(6, 50) for _ in range(rng.randint(2, 3))]
            rule = "+" + "+".join((w + 2) * rng.choice("-=") for w in widths) + "+"
            rule = rule.replace("=", "-") if "-" in rule else rule
            lines.append(rule)
            for _ in range(rng.randint(1, 5)):
                cells = [_cell(rng, vocab)[:w] for w in widths]
                lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |")
                if rng.random() < 0.5:
                    lines.append(rule.replace("=", "-"))
        elif kind < 0.75:  # aligned columns
            indent = " " * rng.choice([0, 3, 4, 8])
            col = rng.randint(12, 40)
            for _ in range(rng.randint(2, 6)):
                left = _cell(rng, vocab)[:col - 2]
                lines.append((indent + left.ljust(col) + _cell(rng, vocab))[:72])
        else:  # grammar productions
            name = rng.choice(vocab)
            alts = " | ".join('"' + rng.choice(vocab) + '"' for _ in range(rng.randint(1, 4)))
            lines.append(f"   {name} ::= {alts}"[:72])
            if rng.random() < 0.5:
                lines.append(" " * (len(name) + 7) + "| " + _cell(rng, vocab)[:50])
        if rng.random() < 0.3:
            lines.append("")
    return "\n".join(lines[:n_lines]) + "\n"


def hanzi_text(rng: random.Random, hanzi: str, words: list[str], n_lines: int = 30,
               max_cells: int = 60) -> str:
    """Lines of random GB2312 hanzi (each equally likely, so rare characters are seen as
    often as common ones), full-width punctuation and a few words of the corpus."""
    punct = "，。、；：？！“”（）《》「」【】—…·％＃＠"
    lines = []
    for _ in range(n_lines):
        if rng.random() < 0.06:
            lines.append("")
            continue
        line, width = [], 0
        target = rng.randint(4, max_cells)
        while width < target:
            r = rng.random()
            if r < 0.8:
                piece = "".join(rng.choice(hanzi) for _ in range(rng.randint(1, 8)))
            elif r < 0.9:
                piece = rng.choice(punct)
            else:
                piece = rng.choice(words) if words else "x"
                piece = (" " + piece + " ") if piece.isascii() else piece
            cells = sum(1 if ch.isascii() else 2 for ch in piece)
            if width + cells > max_cells:
                break
            line.append(piece)
            width += cells
        lines.append("".join(line).strip())
    return "\n".join(lines) + "\n"


class PageStream(torch.utils.data.IterableDataset):
    """Endless, seeded stream of rendered training pages (`chars`: the vocabulary the
    canonical paths use; with `hanzi`, synthetic pages are random GB2312 hanzi lines half
    of the time)."""

    def __init__(self, texts: list[str], render_config, seed: int = 0, synthetic: float = 0.25,
                 structured: float = 0.0, chars: vocab.Vocab = vocab.EN, hanzi: str = ""):
        self.texts = texts
        self.chars = chars
        self.hanzi = hanzi
        self.render_config = render_config
        self.seed = seed
        self.synthetic = synthetic
        self.structured = structured  # share of structured_text pages (tables, columns)
        self.vocab = sorted({w for t in texts[:50] for w in _WORD.findall(t) if len(w) < 20})

    def __iter__(self):
        from render import paginate, rasterize

        info = torch.utils.data.get_worker_info()
        rng = random.Random(self.seed * 1000 + (info.id if info else 0))
        cfg = self.render_config
        while True:
            draw = rng.random()
            if draw < self.structured:
                text = structured_text(rng, self.vocab)
            elif draw < self.structured + self.synthetic:
                text = (hanzi_text(rng, self.hanzi, self.vocab)
                        if self.hanzi and rng.random() < 0.5 else synthetic_text(rng, self.vocab))
            else:
                doc = rng.choice(self.texts)
                starts = [0] + [m.end() for m in re.finditer("\n", doc)][:-1]
                text = doc[rng.choice(starts):]
            page = next(iter(paginate(text, cfg)))
            yield to_sample(page, rasterize(page, cfg), cfg, self.chars)


def collate(samples: list[PageSample]) -> list[PageSample]:
    return samples


def render_pages(texts: list[str], render_config, max_pages: int,
                 chars: vocab.Vocab = vocab.EN) -> list[PageSample]:
    """Up to max_pages pages of `texts` (validation sets), spread over the documents: the
    first page of documents picked evenly along the list, then their second pages, and so
    on. (Every page of the first documents in order made a mini-zh run validate on English
    pages only: its corpus lists its English source first.)"""
    from render import paginate, rasterize

    if max_pages <= 0 or not texts:
        return []
    n, k = len(texts), min(len(texts), max_pages)
    # documents i * n / k (distinct, in order), each paginated lazily: long docs stay cheap
    streams = [iter(paginate(texts[i * n // k], render_config)) for i in range(k)]
    out: list[PageSample] = []
    while streams:
        going = []
        for doc in streams:
            page = next(doc, None)
            if page is None:
                continue
            out.append(to_sample(page, rasterize(page, render_config), render_config, chars))
            if len(out) == max_pages:
                return out
            going.append(doc)
        streams = going
    return out
