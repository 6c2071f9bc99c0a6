"""Streaming corpus readers: The Pile (.jsonl.zst), .jsonl, .txt, .parquet, or a directory of them.

Every reader is a generator that holds at most one record (or one parquet batch) in memory.

Policy for bad input (nothing raises, nothing is dropped without a record in the SkipLog):

- invalid UTF-8 bytes (in a JSONL line, a .txt file or a parquet binary column): the document
  is **skipped** with the byte offset in the reason. We do not repair with U+FFFD because a
  replacement character would be rendered, encoded and later "read back" as if it were text.
- lone surrogates from JSON escapes (``"\\ud800"``): skipped, same reason (not valid Unicode).
- invalid JSON, a non-object record, a missing / null / non-string text field: skipped.
- control characters (C0 except tab, newline, carriage return and form feed; DEL; C1),
  NUL included: **removed**, recorded as a repair with the count. Form feed stays: it is a
  common page-break marker in real corpora.
- empty or whitespace-only documents (after repair): skipped.
- documents longer than ``max_chars`` characters (``oversized``):
  ``"split"`` (the default): cut into consecutive parts of at most ``max_chars`` (after a line
  break near the limit, else after a space, else hard), each a Document with id
  ``<id>#part-<k>`` and meta ``part_of``, ``part_index``, ``part_count``; the split is recorded
  with action "split". A part id has its document's train/val split (``splits.split_of``), so
  a document is never spread over both. Whitespace-only parts (a long run of blanks cut hard)
  are left out and counted in the record. Only a JSONL line or .txt file over
  ``MAX_SPLIT_BYTES`` (1 GiB) is still skipped, unparsed, so that memory stays bounded.
  ``"drop"``: skipped (a JSONL line too long to possibly hold a document within the limit is
  skipped without being parsed or fully buffered).
- a truncated / corrupt compressed stream or parquet file: the rest of that file is skipped
  with one record naming the last good record.

Document ids are ``<source>:<record>``: ``source`` is the file's path relative to the corpus
directory (or its name when a single file is given) and ``record`` the 0-based line number
(JSONL, blank and bad lines counted) or row number (parquet). A ``.txt`` file is one
document whose id is just its source. Ids therefore do not depend on sharding or on skips.

Sharding (``shard_plan``): shards own files, or slices of files, never the whole corpus, so a
shard of a corpus of many files opens only its own files. Each file is cut into
``ceil(num_shards * size / total size)`` slices (``.txt`` files and unsupported files: one),
document ``id`` of a cut file belonging to slice ``crc32(id) % slices``; the slices go to
shards largest first, each to the least-loaded shard. A corpus of at least ``num_shards``
similar files thus gives every shard whole files; one big file gives every shard a slice of it
(its lines are all decompressed, only the shard's are parsed). The plan depends only on the
file names and sizes, so it is the same in every process; every document is in exactly one
shard, and a file-level skip is recorded by the shard that holds the file's slice 0.
"""

from __future__ import annotations

import heapq
import io
import json
import re
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import zstandard

from data.corpus.splits import part_id
from data.errors import BadInput, existing_path

DEFAULT_MAX_CHARS = 2_000_000
PARQUET_BATCH_ROWS = 1024
# A JSON string escapes one character into at most 12 bytes (a \uXXXX\uXXXX pair).
_JSON_BYTES_PER_CHAR = 12
_LINE_SLACK_BYTES = 1 << 20
_READ_BLOCK = 1 << 20

SUFFIXES = (".jsonl.zst", ".jsonl", ".parquet", ".txt")
OVERSIZED = ("split", "drop")  # what read_corpus does with a document over max_chars
# Largest JSONL line / .txt file read when oversized documents are split: a document is held
# whole while it is cut, so this bounds the reader's memory (a few times this, as str).
MAX_SPLIT_BYTES = 1 << 30

# C0 controls except \t \n \f \r; DEL; C1 controls.
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")


@dataclass
class Document:
    id: str
    text: str
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Skip:
    """One bad record: what was skipped (or repaired), where, and why."""

    source: str
    item: str
    reason: str
    action: str = "skip"  # "skip", "repair" or "split" here; later stages add e.g. "report"


class SkipLog:
    """An append-only record of skipped and repaired items; can be written as JSONL."""

    def __init__(self) -> None:
        self.entries: list[Skip] = []

    def add(self, source: str, item: str, reason: str, action: str = "skip") -> None:
        self.entries.append(Skip(source, item, reason, action))

    def append(self, entry: Skip) -> None:
        self.entries.append(entry)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Skip]:
        return iter(self.entries)

    @property
    def skipped(self) -> list[Skip]:
        return [e for e in self.entries if e.action == "skip"]

    @property
    def repaired(self) -> list[Skip]:
        return [e for e in self.entries if e.action == "repair"]

    @property
    def split(self) -> list[Skip]:
        """Oversized documents that were cut into parts (nothing lost)."""
        return [e for e in self.entries if e.action == "split"]

    def counts(self) -> Counter:
        """Counts by (action, reason kind), the reason cut at its first ':'."""
        return Counter((e.action, e.reason.split(":", 1)[0]) for e in self.entries)

    def write_jsonl(self, path: str | Path) -> Path:
        path = Path(path)
        with path.open("w", encoding="utf-8") as fh:
            for entry in self.entries:
                fh.write(json.dumps(asdict(entry), ensure_ascii=False) + "\n")
        return path


def shard_of(key: str, num_shards: int) -> int:
    """Stable shard of a document id (or source name); identical across runs and machines."""
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % num_shards


FileSlices = tuple[int, frozenset]  # (slices the file is cut into, the ones a shard holds)


def shard_plan(files: list[tuple[str, int, bool]], num_shards: int) -> list[dict[str, FileSlices]]:
    """Which slices of which files each shard reads (see the module docstring).

    ``files``: (source, size in bytes, splittable) in reading order. Returns one dict per shard,
    source -> (slice count, slice indices held); a shard's files are read in ``files`` order.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be at least 1, got {num_shards}")
    total = sum(size for _, size, _ in files) or 1
    units = []  # (weight, source, slice index, slice count)
    for source, size, splittable in files:
        k = min(num_shards, max(1, -(-num_shards * size // total))) if splittable else 1
        units.extend((size / k, source, j, k) for j in range(k))
    units.sort(key=lambda u: (-u[0], u[1], u[2]))  # largest first; ties in a fixed order
    loads = [(0.0, i) for i in range(num_shards)]  # a heap: the least-loaded shard first
    held: list[dict[str, set]] = [{} for _ in range(num_shards)]
    counts: dict[str, int] = {}
    for weight, source, j, k in units:
        load, shard = heapq.heappop(loads)
        heapq.heappush(loads, (load + weight, shard))
        held[shard].setdefault(source, set()).add(j)
        counts[source] = k
    order = {src: i for i, (src, _, _) in enumerate(files)}
    return [{src: (counts[src], frozenset(h[src])) for src in sorted(h, key=order.__getitem__)}
            for h in held]


def corpus_files(path: str | Path) -> list[tuple[str, int, bool]]:
    """(source, size, splittable) of every file of a corpus, in reading order (shard_plan's
    input; with the sizes it also fingerprints the corpus)."""
    path = Path(path)
    if path.is_file():
        return [(path.name, path.stat().st_size, corpus_suffix(path) not in (None, ".txt"))]
    return [(f.relative_to(path).as_posix(), f.stat().st_size,
             corpus_suffix(f) not in (None, ".txt")) for f in _files(path)]


def split_oversized(text: str, max_chars: int) -> list[str]:
    """Consecutive pieces of at most ``max_chars`` whose concatenation is ``text``.

    A cut falls after the last line break in the last fifth of the window, else after the
    last space or tab there, else at ``max_chars`` (text without blanks, e.g. base64), so
    that words and usually lines stay whole on one side of the cut.
    """
    pieces: list[str] = []
    start = 0
    while len(text) - start > max_chars:
        end = start + max_chars
        low = end - max(1, max_chars // 5)
        cut = text.rfind("\n", low, end) + 1
        if cut == 0:
            cut = max(text.rfind(" ", low, end), text.rfind("\t", low, end)) + 1
        if cut == 0:
            cut = end
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def clean_text(text: str) -> tuple[str, int]:
    """Remove control characters (see module docstring); returns the text and how many went."""
    cleaned, removed = _CONTROL_CHARS.subn("", text)
    return cleaned, removed


class _Context:
    """Per-call settings shared by the readers."""

    def __init__(self, text_field: str, shard_index: int, num_shards: int,
                 max_chars: int | None, skips: SkipLog | None, oversized: str = "split",
                 id_field: str | None = None) -> None:
        if num_shards < 1 or not 0 <= shard_index < num_shards:
            raise ValueError(f"need 0 <= shard_index < num_shards, got {shard_index}/{num_shards}")
        if max_chars is not None and max_chars < 1:
            raise BadInput(f"max_chars must be positive or None, got {max_chars}")
        if oversized not in OVERSIZED:
            raise BadInput(f"oversized must be one of {OVERSIZED}, got {oversized!r}")
        self.text_field = text_field
        self.oversized = oversized
        self.id_field = id_field
        self.max_chars = max_chars
        self.skips = skips if skips is not None else SkipLog()
        self.slices: FileSlices = (1, frozenset({0}))  # of the file being read

    def owns(self, doc_id: str) -> bool:
        """Whether this shard reads document ``doc_id`` of the current file."""
        k, held = self.slices
        return k == 1 or shard_of(doc_id, k) in held

    def owns_file(self) -> bool:
        """Whether file-level problems of the current file are this shard's to record."""
        return 0 in self.slices[1]

    def skip(self, source: str, item: str, reason: str) -> None:
        self.skips.add(source, item, reason)

    def byte_limit(self, per_char: int, slack: int = 0) -> int | None:
        """Most bytes of one record read before it is skipped unparsed: what could hold
        ``max_chars`` characters, or at least MAX_SPLIT_BYTES when oversized ones are split."""
        if self.max_chars is None:
            return None
        limit = self.max_chars * per_char + slack
        return max(limit, MAX_SPLIT_BYTES) if self.oversized == "split" else limit

    def make_documents(self, source: str, doc_id: str, text: Any, meta: dict) -> list[Document]:
        """Validate and repair one text: one Document, several parts of an oversized one
        (``oversized="split"``), or none (with a recorded skip) when it is unusable."""
        named = meta.get(self.id_field) if self.id_field else None
        if isinstance(named, str) and named:
            doc_id = named
        if text is None:
            self.skip(source, doc_id, f"missing text field {self.text_field!r}")
            return []
        if isinstance(text, (bytes, bytearray)):
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError as err:
                self.skip(source, doc_id, f"invalid UTF-8: byte {err.start}: {err.reason}")
                return []
        if not isinstance(text, str):
            self.skip(source, doc_id, f"text field is {type(text).__name__}, not a string")
            return []
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            self.skip(source, doc_id, f"invalid Unicode: lone surrogate at char {err.start}")
            return []
        text, removed = clean_text(text)
        if not text.strip():
            self.skip(source, doc_id, "empty document")
            return []
        if removed:
            self.skips.add(source, doc_id, f"control characters: removed {removed}", "repair")
        if self.max_chars is None or len(text) <= self.max_chars:
            return [Document(doc_id, text, meta)]
        reason = f"oversized: {len(text)} chars > max_chars={self.max_chars}"
        if self.oversized == "drop":
            self.skip(source, doc_id, reason)
            return []
        return self._split(source, doc_id, text, meta, reason)

    def _split(self, source: str, doc_id: str, text: str, meta: dict,
               reason: str) -> list[Document]:
        pieces = split_oversized(text, self.max_chars)
        kept = [piece for piece in pieces if piece.strip()]
        blank = len(pieces) - len(kept)
        note = f"; {blank} whitespace-only parts left out" if blank else ""
        self.skips.add(source, doc_id, f"{reason}; split into {len(kept)} parts{note}", "split")
        return [Document(part_id(doc_id, k), piece,
                         {**meta, "part_of": doc_id, "part_index": k, "part_count": len(kept)})
                for k, piece in enumerate(kept)]


def _split_record(obj: dict, text_field: str) -> tuple[Any, dict]:
    """Text and meta of one JSON object: nested ``meta`` merged with the other top-level keys."""
    meta = {k: v for k, v in obj.items() if k not in (text_field, "meta")}
    nested = obj.get("meta")
    if isinstance(nested, dict):
        meta.update(nested)
    elif "meta" in obj:
        meta["meta"] = nested
    return obj.get(text_field), meta


def _lines(stream: io.BufferedIOBase, limit: int | None) -> Iterator[bytes | None]:
    """Lines of a binary stream; None stands for a line longer than ``limit`` (drained, unread)."""
    while True:
        line = stream.readline(limit) if limit else stream.readline()
        if not line:
            return
        if limit and len(line) >= limit and not line.endswith(b"\n"):
            while True:  # discard the rest of the oversized line in bounded pieces
                rest = stream.readline(_READ_BLOCK)
                if not rest or rest.endswith(b"\n"):
                    break
            yield None
            continue
        yield line


def _read_jsonl_stream(stream: io.BufferedIOBase, source: str, ctx: _Context) -> Iterator[Document]:
    limit = ctx.byte_limit(_JSON_BYTES_PER_CHAR, _LINE_SLACK_BYTES)
    line_no = -1
    try:
        for line_no, line in enumerate(_lines(stream, limit)):
            doc_id = f"{source}:{line_no}"
            if not ctx.owns(doc_id):
                continue
            if line is None:
                ctx.skip(source, doc_id, f"oversized: line longer than {limit} bytes")
                continue
            yield from _parse_json_line(line, source, doc_id, ctx)
    except GeneratorExit:  # closed early (at exit, module globals such as `zstandard`
        raise  # may already be gone: the clause below must not be evaluated)
    except zstandard.ZstdError as err:
        if ctx.owns_file():
            ctx.skip(source, f"{source}:{line_no + 1}",
                     f"corrupt compressed stream after line {line_no}; rest of file skipped: {err}")


def _parse_json_line(line: bytes, source: str, doc_id: str, ctx: _Context) -> list[Document]:
    try:
        decoded = line.decode("utf-8")
    except UnicodeDecodeError as err:
        ctx.skip(source, doc_id, f"invalid UTF-8: byte {err.start}: {err.reason}")
        return []
    if not decoded.strip():
        ctx.skip(source, doc_id, "blank line")
        return []
    try:
        obj = json.loads(decoded)
    except json.JSONDecodeError as err:
        ctx.skip(source, doc_id, f"invalid JSON: {err.msg} at char {err.pos}")
        return []
    if not isinstance(obj, dict):
        ctx.skip(source, doc_id, f"invalid record: JSON {type(obj).__name__}, not an object")
        return []
    text, meta = _split_record(obj, ctx.text_field)
    return ctx.make_documents(source, doc_id, text, meta)


def _read_jsonl(path: Path, source: str, ctx: _Context) -> Iterator[Document]:
    with path.open("rb") as fh:
        yield from _read_jsonl_stream(fh, source, ctx)


class _ZstdFrames(io.RawIOBase):
    """Decompressed bytes of a file of one or more zstd frames.

    zstandard's own stream_reader ends quietly on a truncated file; this one raises ZstdError
    so that a cut-off download is recorded instead of looking like a short corpus.
    """

    def __init__(self, raw: io.BufferedIOBase) -> None:
        super().__init__()
        self._raw = raw
        # The Pile's shards were written with long windows; allow up to 2 GiB of window.
        self._decompressor = zstandard.ZstdDecompressor(max_window_size=2**31)
        self._frame = self._decompressor.decompressobj()
        self._in_frame = False  # bytes of the current frame seen, frame not finished
        self._pending = b""
        self._offset = 0  # read position inside _pending (avoids re-slicing large buffers)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self._offset >= len(self._pending):
            compressed = self._raw.read(_READ_BLOCK)
            if not compressed:
                if self._in_frame:
                    raise zstandard.ZstdError("truncated zstd stream (frame not finished)")
                return 0
            self._pending, self._offset = self._feed(compressed), 0
        size = min(len(buffer), len(self._pending) - self._offset)
        buffer[:size] = memoryview(self._pending)[self._offset:self._offset + size]
        self._offset += size
        return size

    def _feed(self, compressed: bytes) -> bytes:
        out = []
        while compressed:
            self._in_frame = True
            out.append(self._frame.decompress(compressed))
            if not self._frame.eof:
                break
            compressed = self._frame.unused_data  # the next frame starts here
            self._frame = self._decompressor.decompressobj()
            self._in_frame = False
        return b"".join(out)


def _read_jsonl_zst(path: Path, source: str, ctx: _Context) -> Iterator[Document]:
    with path.open("rb") as raw:
        stream = io.BufferedReader(_ZstdFrames(raw), _READ_BLOCK)
        yield from _read_jsonl_stream(stream, source, ctx)


def _read_txt(path: Path, source: str, ctx: _Context) -> Iterator[Document]:
    if not ctx.owns_file():
        return
    # UTF-8 uses at most 4 bytes a character: a larger file cannot fit within max_chars.
    limit = ctx.byte_limit(4)
    if limit is not None and path.stat().st_size > limit:
        what = "MAX_SPLIT_BYTES" if limit == MAX_SPLIT_BYTES else "4*max_chars"
        ctx.skip(source, source, f"oversized: {path.stat().st_size} bytes > {what}")
        return
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):  # a byte-order mark marks the encoding, not text
        data = data[3:]
    yield from ctx.make_documents(source, source, data, {"source": source})


def _read_parquet(path: Path, source: str, ctx: _Context) -> Iterator[Document]:
    import pyarrow.parquet as pq  # heavy import kept local: most callers read JSONL

    try:
        pfile = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a corrupt footer
        if ctx.owns_file():
            ctx.skip(source, source, f"unreadable parquet file: {err}")
        return
    if ctx.text_field not in pfile.schema_arrow.names:
        if ctx.owns_file():
            ctx.skip(source, source, f"missing text field {ctx.text_field!r}: no such column")
        return
    row = 0
    try:
        for batch in pfile.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            records = batch.to_pylist()
            for offset, obj in enumerate(records):
                doc_id = f"{source}:{row + offset}"
                if ctx.owns(doc_id):
                    text, meta = _split_record(obj, ctx.text_field)
                    yield from ctx.make_documents(source, doc_id, text, meta)
            row += len(records)
    except Exception as err:
        if ctx.owns_file():
            ctx.skip(source, f"{source}:{row}",
                     f"corrupt parquet data from row {row}; rest skipped: {err}")


_READERS = {
    ".jsonl.zst": _read_jsonl_zst,
    ".jsonl": _read_jsonl,
    ".parquet": _read_parquet,
    ".txt": _read_txt,
}


def corpus_suffix(path: Path) -> str | None:
    """The supported suffix a file name ends with, or None."""
    name = path.name.lower()
    return next((s for s in SUFFIXES if name.endswith(s)), None)


def _files(root: Path) -> Iterator[Path]:
    """All files under a directory in a stable (sorted, depth-first) order."""
    for child in sorted(root.iterdir(), key=lambda p: p.name):
        if child.is_dir():
            yield from _files(child)
        else:
            yield child


def read_corpus(path: str | Path, *, text_field: str = "text", shard_index: int = 0,
                num_shards: int = 1, max_chars: int | None = DEFAULT_MAX_CHARS,
                skips: SkipLog | None = None, oversized: str = "split",
                id_field: str | None = None) -> Iterator[Document]:
    """Stream the documents of one corpus file or a directory of them (any mix of formats).

    ``id_field``: a record field (top-level or in ``meta``) whose string names the document
    (e.g. an SFT set's ``SAMPLE#segment``); default, and for records without it, the file
    and line (``<file>:<n>``).

    ``oversized``: what becomes of a document over ``max_chars``: "split" into ordered parts
    (ids ``<id>#part-<k>``; see the module docstring) or "drop" (skipped); both are recorded.

    Usage errors (a missing path, a single file of an unsupported type, bad shard arguments)
    raise; problems with the data itself become entries in ``skips``.
    """
    path = Path(path)
    ctx = _Context(text_field, shard_index, num_shards, max_chars, skips, oversized, id_field)
    existing_path(path, "corpus path")
    if path.is_file() and corpus_suffix(path) is None:
        raise BadInput(f"unsupported corpus file {path}; expected one of {SUFFIXES}")
    plan = shard_plan(corpus_files(path), num_shards)[shard_index]
    for source, ctx.slices in plan.items():
        file = path if path.is_file() else path / source
        suffix = corpus_suffix(file)
        if suffix is None:
            if ctx.owns_file():
                ctx.skip(source, source, "unsupported file type")
            continue
        yield from _READERS[suffix](file, source, ctx)

