"""Context/continuation pairs for the context-compression arms (issue #16).

A pair is k consecutive full pages of a document as the codec pages it (the context)
and the `cont_bytes` UTF-8 bytes of the document that follow them (the continuation).
Every arm reads the same context; they differ only in its representation:

- `vis`: the frozen codec's tokens of the k rendered pages, [k*n, D] (the visual arm);
- `ctx` / `ctx_len`: the context's UTF-8 bytes (truncation, full text, the conv encoder);
- `seg`: for every context byte, the visual token whose region shows it (mean pooling
  averages byte embeddings over exactly the span each visual token covers);
- `nxt` / `nxt_text` / `nxt_line_end`: the codec's tokens, text and layout-line ends of
  the page that follows the context (it starts where the continuation starts), for the
  pure-VST row: a VST predicts those tokens and the frozen decoder scores the text.

Every arm is scored on the same bytes: the first whole layout lines of the continuation
page that fit in `predict_bytes` (`Pairs.score_len`), so the frozen decoder (which reads
a page line by line) and the byte-level arms see exactly the same text.

The layout map (`token_of_chars`) is the codec's own: the `mini` grid's rows are bands of
`lines_per_page / rows` lines and its columns split the page width (mode `base`: two
tokens per line, left and right half), so a character belongs to the token of its line's
band and of the column that holds the centre of its box (`render.layout.char_boxes`).
A codec without a layout (the `toy` codec's `CharPage`s carry no lines) falls back to
equal character windows over each page's text, which for `toy` is exact (token j binds
characters [j*c, (j+1)*c) of its page).

    from vst.compression_data import build_pairs
    pairs = build_pairs(docs, codec, pages=2, cont_bytes=512)   # -> Pairs (numpy arrays)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch


@dataclass
class Pairs:
    """Prepared pairs as arrays (N pairs); `save`/`load` keep them in one .npz."""

    vis: np.ndarray  # [N, P, D] float16: the codec's tokens of the context pages
    ctx: np.ndarray  # [N, Lmax] uint8: context bytes, right-padded with 0
    ctx_len: np.ndarray  # [N] int32: context bytes
    seg: np.ndarray  # [N, Lmax] int16: visual token (0..P-1) showing each byte; -1 padding
    cont: np.ndarray  # [N, cont_bytes] uint8: the continuation
    page_end: np.ndarray  # [N, k] int32: byte offset where each context page ends
    val: np.ndarray  # [N] bool: the document is held out (data.corpus.split_of)
    nxt: np.ndarray  # [N, n, D] float16: the codec's tokens of the continuation page
    nxt_text: np.ndarray  # [N, Lp] uint8: the continuation page's bytes, right-padded with 0
    nxt_len: np.ndarray  # [N] int32: bytes of the continuation page
    nxt_line_end: np.ndarray  # [N, lines] int32: byte end of each layout line of that page
    #   (NO_LINE past the page's lines; one line for a codec without a line layout)

    @property
    def P(self) -> int:
        return int(self.vis.shape[1])

    def __len__(self) -> int:
        return len(self.ctx_len)

    def subset(self, index) -> Pairs:
        return Pairs(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def page_texts(self, i: int) -> list[str]:
        """The context pages of pair i as text (for reconstruction against the decoder)."""
        raw = bytes(self.ctx[i, : self.ctx_len[i]])
        bounds = [0, *self.page_end[i].tolist()]
        return [raw[a:b].decode("utf-8", "replace") for a, b in zip(bounds, bounds[1:])]

    def text_digest(self) -> str:
        """A digest of everything a text-only arm reads and is scored on: two modes of one
        codec that page text alike give the same digest (their pairs differ in tokens)."""
        import hashlib

        h = hashlib.sha1()
        for a in (self.ctx, self.ctx_len, self.cont, self.val, self.nxt_line_end):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]

    def next_page_text(self, i: int) -> str:
        return bytes(self.nxt_text[i, : self.nxt_len[i]]).decode("utf-8", "replace")

    def score_lines(self, limit: int) -> np.ndarray:
        """[N] how many whole layout lines of each continuation page end within `limit`
        bytes (0: even the first line is longer; such a pair cannot be scored alike)."""
        return (self.nxt_line_end <= limit).sum(1)

    def score_len(self, limit: int) -> np.ndarray:
        """[N] bytes every arm is scored on: the first whole lines within `limit` bytes."""
        m = self.score_lines(limit)
        ends = np.take_along_axis(self.nxt_line_end, np.maximum(m - 1, 0)[:, None], 1)[:, 0]
        return np.where(m > 0, ends, 0).astype(np.int64)

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, **{f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def load(cls, path: str | Path) -> Pairs:
        with np.load(path) as z:
            return cls(**{f.name: z[f.name] for f in fields(cls)})


NO_LINE = np.iinfo(np.int32).max  # line-end padding: never within a byte limit


def line_ends(codec, page) -> list[int]:
    """Byte end of each layout line of `page` within its text, as the codec's `line_nll`
    numbers them (the whole page as one line for a codec without a line layout)."""
    lines = getattr(page, "lines", None)
    if not lines or codec.n_lines == 1:
        return [len(page.text.encode("utf-8"))]
    return [len(page.text[: ln.end - page.start].encode("utf-8")) for ln in lines]


def token_of_chars(codec, page) -> np.ndarray:
    """Which of the codec's n tokens shows each character of `page.text` ([len] int)."""
    n = codec.n
    text = page.text
    grid, cfg, lines = codec.grid, codec.render_config, getattr(page, "lines", None)
    if not text:
        return np.zeros(0, dtype=np.int64)
    if lines is None or cfg is None or not grid or grid[0] * grid[1] != n:
        # no layout map: equal character windows over the page's text
        return np.minimum(np.arange(len(text)) * n // len(text), n - 1)
    from render.layout import char_boxes

    rows, cols = grid
    per_row = cfg.lines_per_page / rows
    out = np.empty(len(text), dtype=np.int64)
    boxes = char_boxes(page, cfg)
    k = 0
    for li, line in enumerate(lines):
        row = min(rows - 1, int(li / per_row))
        for _ in range(line.end - line.start):
            x0, _, x1, _ = boxes[k]
            col = min(cols - 1, max(0, int((x0 + x1) / 2 / (cfg.width / cols))))
            out[k] = row * cols + col
            k += 1
    if k != len(text):
        raise ValueError(f"layout covers {k} of {len(text)} characters of a page")
    return out


def _byte_seg(text: str, token: np.ndarray) -> np.ndarray:
    """Per-character token ids -> per-UTF-8-byte token ids."""
    widths = np.fromiter((len(ch.encode("utf-8")) for ch in text), dtype=np.int64,
                         count=len(text))
    return np.repeat(token, widths)


# A `mini` page holds 32 lines of at most ~80 characters: no page holds more.
PAGE_CHARS_MAX = 4096


def pair_windows(text: str, codec, pages: int, cont_chars: int, per_doc: int):
    """Up to `per_doc` non-overlapping windows of `pages` full pages of `text`, each
    followed by a whole page and at least `cont_chars` characters:
    [(context pages, continuation page, continuation text)]."""
    # pages before the last one of a prefix are the pages of the whole text (layout is
    # greedy and forward-only), so a long document is paged only as far as needed; the
    # last page of a cut prefix may be short, so it never serves as a continuation page
    limit = (per_doc + 1) * pages * PAGE_CHARS_MAX + cont_chars
    all_pages = codec.paginate(text[:limit])
    whole = len(all_pages) - (1 if len(text) > limit else 0)
    out = []
    for start in range(0, whole - pages, pages):
        window = all_pages[start:start + pages]
        tail = text[window[-1].end:window[-1].end + cont_chars]
        if len(tail) < cont_chars:
            break
        out.append((window, all_pages[start + pages], tail))
        if len(out) >= per_doc:
            break
    return out


def build_pairs(docs: Iterable, codec, pages: int = 2, cont_bytes: int = 512,
                per_doc: int = 2, max_pairs: int | None = None, val_fraction: float = 0.05,
                batch: int = 16, progress=None) -> Pairs:
    """Pairs from documents (`data.corpus.Document`s): render and encode the context pages
    and the continuation page with the frozen codec (each page once: a window's
    continuation page is the next window's first page), keep their text, the layout map
    and the continuation.

    The continuation takes cont_bytes * 2 characters and keeps its first cont_bytes bytes
    (enough for any text under 2 bytes a character); windows without them are skipped.
    """
    from data.corpus import split_of

    rows: list[tuple] = []
    todo: dict[tuple[int, int], object] = {}  # (doc ordinal, page index) -> page to encode
    pending: list[tuple] = []  # windows whose pages are not encoded yet

    def flush():
        if not pending:
            return
        keys = list(todo)
        images = np.stack([codec.rasterize(todo[k]) for k in keys])
        with torch.no_grad():
            toks = codec.encode(images).float().cpu().numpy()
        of = dict(zip(keys, toks))
        for d, window, nxt, tail, val in pending:
            vis = np.concatenate([of[(d, p.index)] for p in window])
            rows.append(_row(codec, window, nxt, tail, val, vis, of[(d, nxt.index)],
                             cont_bytes))
        pending.clear()
        todo.clear()
        if progress:
            progress(len(rows))

    for d, doc in enumerate(docs):
        val = split_of(doc.id, val_fraction) == "val"
        for window, nxt, tail in pair_windows(doc.text, codec, pages, 2 * cont_bytes, per_doc):
            if len(tail.encode("utf-8")) < cont_bytes:
                continue
            pending.append((d, window, nxt, tail, val))
            todo.update({(d, p.index): p for p in (*window, nxt)})
            if len(todo) >= batch:
                flush()
        if max_pairs is not None and len(rows) + len(pending) >= max_pairs:
            break
    flush()
    rows = rows[:max_pairs]
    if not rows:
        raise ValueError("no document is long enough for a context/continuation pair")
    N = len(rows)

    def padded(values, dtype, fill=0):
        out = np.full((N, max(len(v) for v in values)), fill, dtype)
        for i, v in enumerate(values):
            out[i, : len(v)] = v
        return out

    ctx = [np.frombuffer(r[1], np.uint8) for r in rows]
    nxt_text = [np.frombuffer(r[7], np.uint8) for r in rows]
    return Pairs(vis=np.stack([r[0] for r in rows]).astype(np.float16),
                 ctx=padded(ctx, np.uint8), ctx_len=np.array([len(c) for c in ctx], np.int32),
                 seg=padded([r[2] for r in rows], np.int16, -1),
                 cont=np.stack([r[3] for r in rows]),
                 page_end=np.stack([r[4] for r in rows]).astype(np.int32),
                 val=np.array([r[5] for r in rows], bool),
                 nxt=np.stack([r[6] for r in rows]).astype(np.float16),
                 nxt_text=padded(nxt_text, np.uint8),
                 nxt_len=np.array([len(t) for t in nxt_text], np.int32),
                 nxt_line_end=padded([r[8] for r in rows], np.int32, NO_LINE))


def _row(codec, window, nxt, tail, val, vis, nxt_vis, cont_bytes):
    raw, segs, ends = b"", [], []
    for j, page in enumerate(window):
        raw += page.text.encode("utf-8")
        segs.append(_byte_seg(page.text, token_of_chars(codec, page)) + j * codec.n)
        ends.append(len(raw))
    cont = np.frombuffer(tail.encode("utf-8")[:cont_bytes], np.uint8)
    return (vis, raw, np.concatenate(segs), cont, np.array(ends), val, nxt_vis,
            nxt.text.encode("utf-8"), line_ends(codec, nxt))
