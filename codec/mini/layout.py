"""Which text each band of visual tokens must read: the renderer's own line spans.

A band is `lines_per_band` consecutive lines of a page; its text is the exact source span
of those lines (consumed whitespace and line terminators included), so the bands of a
page concatenate back to the page text.
"""

from __future__ import annotations

from collections.abc import Sequence


def band_spans(lines: Sequence, rows: int, lines_per_band: int) -> list[tuple[int, int] | None]:
    """(start, end) source span of each band from a page's `Line`s; None for empty bands."""
    spans: list[tuple[int, int] | None] = []
    for r in range(rows):
        chunk = lines[r * lines_per_band:(r + 1) * lines_per_band]
        spans.append((chunk[0].start, chunk[-1].end) if chunk else None)
    return spans


def page_bands(page, rows: int, lines_per_band: int) -> list[str]:
    """Band texts of a rendered `Page` (spans are relative to the page's document)."""
    out = []
    for span in band_spans(page.lines, rows, lines_per_band):
        out.append("" if span is None else page.text[span[0] - page.start:span[1] - page.start])
    return out


def text_bands(text: str, render_config, rows: int, lines_per_band: int) -> list[str]:
    """Lay `text` out as one page and split it into band texts.

    Text beyond the first page (it would not have fitted the page the tokens came from)
    goes to the last band, where the likelihood charges for it rather than dropping it.
    """
    from render import paginate

    page = next(iter(paginate(text, render_config)))
    bands = page_bands(page, rows, lines_per_band)
    if page.end < len(text):
        bands[-1] += text[page.end:]
    return bands


def settle_line_ends(bands: list[str], setter) -> list[str]:
    """Make decoded one-line bands agree with the renderer's greedy line breaking.

    A line that ends in a soft wrap (its text ends with the consumed space) is only
    possible when the next line's first word would not have fitted; otherwise the line
    must have ended with a hard break. The read-out cannot always tell the two apart
    (both look the same on the page), but the layout rule can. `setter` is the
    renderer's `Typesetter` for the codec's page.
    """
    out = list(bands)
    for i in range(len(out) - 1):
        line, nxt = out[i], out[i + 1]
        if not line.endswith(" ") or "\n" in line or not nxt:
            continue
        first = nxt.split("\n", 1)[0]
        if not first.strip():  # a wrap never continues with an empty line
            out[i] = line[:-1] + "\n"
            continue
        joined = line + first
        if setter.find_break(joined, 0, len(joined)) != len(line):
            out[i] = line[:-1] + "\n"
    return out


# Full pages end in at most this many blank lines (a page break inside a paragraph
# break): held-out pydoc topics, 69 of 329 full `mini` pages end in one and 4 in two;
# /usr/share/doc copyright files, 1,053 and 9 of 14,055; none in more.
PAGE_END_BLANK_LINES = 2


def drop_blank_tail(bands: list[str], keep: int = PAGE_END_BLANK_LINES) -> list[str]:
    r"""Decoded bands below the page's last inked one read as nothing, unless they are few
    enough (`keep`) to be the blank lines a full page can end in.

    The truth has empty bands below a short page's text but "\n" for blank lines in the
    text, and on the page both are white. The reader tells them apart by where they are
    (it reads a full page's final blank line as "\n": 22 of 22 held-out pydoc pages), but
    the shipped `base` reader also read most of a short page's blank area as newlines:
    on 64 held-out pydoc pages 115 trailing newlines too many, up to 21 on a page, and 10
    with this rule (`small`: 52, up to 12, and 9). A blank tail longer than any full page
    ends in is blank area; a shorter one keeps the reader's reading. The last inked band
    keeps its own line end, which is part of the text (a hard break, or a wrap onto the
    next page); the 10 left are such line ends on pages whose document ends without one.
    """
    last = max((i for i, band in enumerate(bands) if band.strip()), default=-1)
    if len(bands) - 1 - last <= keep:
        return list(bands)
    return bands[:last + 1] + [""] * (len(bands) - last - 1)
