"""The visual-token store's on-disk format: file names, ``StoreMeta``, ``PageRecord``, errors,
part names and ``store.json`` (``create_store`` / ``read_store_meta``).

The store: parts written independently, consolidated by a manifest. Layout of a store root::

    store.json                 StoreMeta: D, n, grid, codec, render config, dtype, layout
    manifest.json              consolidated parts: counts and checksums (see consolidate())
    parts/part-00007/          one complete part (renamed into place only when finished)
        tokens.zarr | tokens.npy   [pages, n, D] (fixed n) or [tokens, D] (variable n)
        index.parquet          one row per page: doc_id, page, char span, text, config, offsets
        part.json              completion marker: counts, sha256 of tokens, chunks and index
    parts/.tmp-part-00008-<random>/   a part being written (or left by a crash): never read

A part holds whole documents: all pages of a document, in page order, in one part. A writer
(``StoreWriter``) needs no coordination with other writers, so parts can be written from Ray
tasks or separate processes; ``part_status`` / ``verify_part`` tell a later run which parts
are complete and intact, and ``consolidate`` writes the manifest that readers use.

    vst store info ROOT       # the store.json of a store, with its totals
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from data.errors import BadStore
from data.store.token_arrays import LAYOUTS, storage_dtype

FORMAT = "vst-token-store"
FORMAT_VERSION = 1
STORE_META_FILE = "store.json"
MANIFEST_FILE = "manifest.json"
PARTS_DIR = "parts"
PART_MARKER = "part.json"
INDEX_FILE = "index.parquet"
TMP_PREFIX = ".tmp-"
_PART_NAME = re.compile(r"^part-[A-Za-z0-9_.-]+$")


class StoreError(Exception):
    """Misuse of the store's API (a bug), and the base of the store's errors below."""


class StoreOpenError(StoreError, BadStore):
    """A store that cannot be opened, or holds other metadata than asked: the user's to fix."""


class StoreCorruptError(StoreError, BadStore):
    """Stored bytes disagree with the recorded checksums or counts; the message names the part."""


class PartExistsError(StoreError, BadStore):
    """A complete part with this id exists already (pass overwrite=True to replace it)."""


@dataclass(frozen=True)
class StoreMeta:
    """What every token in a store shares. ``n=None`` means a variable number of tokens a page."""

    D: int
    n: int | None
    grid: tuple[int, int] | None
    codec_name: str
    codec_mode: str
    codec_version: str
    render_config: dict
    render_config_id: str
    dtype: str = "float16"
    layout: str = "zarr"

    def __post_init__(self) -> None:
        storage_dtype(self.dtype)  # validates
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.D < 1 or (self.n is not None and self.n < 1):
            raise ValueError(f"D and n must be positive, got D={self.D} n={self.n}")
        if self.grid is not None:
            object.__setattr__(self, "grid", tuple(int(x) for x in self.grid))
            if self.n is not None and self.grid[0] * self.grid[1] != self.n:
                raise ValueError(f"grid {self.grid} does not hold n={self.n} tokens")

    @property
    def fixed_n(self) -> bool:
        return self.n is not None

    def to_json(self) -> dict:
        out = asdict(self)
        out["grid"] = list(self.grid) if self.grid is not None else None
        return out

    @classmethod
    def from_json(cls, data: dict) -> "StoreMeta":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_codec(cls, codec: Any, *, mode: str = "default", dtype: str = "float16",
                   layout: str = "zarr") -> "StoreMeta":
        """Meta from a codec object (``D``, ``n``, ``grid``, ``version``, ``render_config``)."""
        config = codec.render_config
        return cls(D=int(codec.D), n=codec.n, grid=codec.grid,
                   codec_name=getattr(codec, "name", type(codec).__name__), codec_mode=mode,
                   codec_version=str(codec.version), render_config=json.loads(config.to_json()),
                   render_config_id=str(config.id), dtype=dtype, layout=layout)


@dataclass(frozen=True)
class PageRecord:
    """One row of a part's page index."""

    doc_id: str
    page: int
    char_start: int
    char_end: int
    text: str
    render_config_id: str
    codec_name: str
    codec_mode: str
    codec_version: str
    token_offset: int
    token_count: int
    part: str = ""


# ---------------------------------------------------------------- small file helpers


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def part_name(part_id: int | str) -> str:
    name = f"part-{part_id:05d}" if isinstance(part_id, int) else str(part_id)
    if not name.startswith("part-"):
        name = f"part-{name}"
    if not _PART_NAME.match(name):
        raise ValueError(f"bad part id {part_id!r}: use an int or [A-Za-z0-9_.-]")
    return name


# ---------------------------------------------------------------- store metadata


def create_store(root: str | Path, meta: StoreMeta) -> StoreMeta:
    """Create ``root/store.json`` unless it exists; then it must hold the same meta.

    Safe to call from many writers at once: the file appears atomically (hard link of a
    finished temp file), and the loser of a race compares instead of overwriting.
    """
    root = Path(root)
    (root / PARTS_DIR).mkdir(parents=True, exist_ok=True)
    target = root / STORE_META_FILE
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta.to_json()}
    if not target.exists():
        tmp = root / f"{TMP_PREFIX}{STORE_META_FILE}-{uuid.uuid4().hex[:8]}"
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        try:
            os.link(tmp, target)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    existing = read_store_meta(root)
    if existing != meta:
        raise StoreOpenError(f"{target} holds different metadata: existing {existing}, "
                             f"given {meta}", hint="write to another directory")
    return existing


def read_store_meta(root: str | Path) -> StoreMeta:
    path = Path(root) / STORE_META_FILE
    if not path.exists():
        raise StoreOpenError(f"no {STORE_META_FILE} in {root}: not a token store",
                             hint="give a store written by `vst convert`")
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
        raise StoreOpenError(f"{path}: unsupported format {data.get('format')!r} "
                             f"v{data.get('format_version')}",
                             hint=f"this version reads {FORMAT} v{FORMAT_VERSION}")
    return StoreMeta.from_json(data)
