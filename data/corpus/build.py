"""Build a local corpus of real size (The Pile's format) from Debian documentation packages.

    vst corpus build --out DIR [--sources a,b] [--heldout-source debian-reference]
    vst corpus build --out DIR ...

Writes ``DIR/train.jsonl.zst`` (every document of every source but the held-out one),
``DIR/heldout_source.jsonl.zst`` (the held-out source, which training never sees) and
``DIR/manifest.json``. Records: ``{"text", "meta": {"pile_set_name", "licence", "path",
"id", "split"}}``. The held-out *documents* of the training file are those whose store id
``train.jsonl.zst:<line>`` (what ``data.corpus.read_corpus`` and therefore the visual-token
store call a record of that file) has ``data.corpus.split_of(id, val_fraction) == "val"``;
``meta.split`` spells it out. Convert ``DIR/train.jsonl.zst`` (the file, not ``DIR``) so the
store's ids are exactly these. The output is byte-identical for the same installed files.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Optional

import typer
import zstandard

from data.corpus.sources import ALL_SOURCE_NAMES, SOURCE_NAMES, resolve_root, source_by_name
from data.corpus.splits import split_of
from data.corpus.text import MAX_PART_CHARS, content_filter, normalise, split_parts
from data.corpus.zh import zh_content_filter
from data.errors import BadInput

TRAIN_FILE = "train.jsonl.zst"
HELDOUT_FILE = "heldout_source.jsonl.zst"
MANIFEST_FILE = "manifest.json"
DEFAULT_HELDOUT = "debian-reference"
DEFAULT_VAL_FRACTION = 0.05
ZSTD_LEVEL = 10


@dataclass
class SourceReport:
    name: str
    licence: str
    apt_package: str | None
    found: bool = False
    reason: str | None = None
    path: str | None = None
    files_seen: int = 0
    documents: int = 0  # source documents kept (before splitting into parts)
    records: int = 0    # records written (parts counted)
    split_documents: int = 0  # documents that became more than one record
    characters: int = 0
    bytes: int = 0
    duplicates_removed: int = 0
    filtered: dict = field(default_factory=dict)
    capped: bool = False
    train_records: int = 0
    val_records: int = 0
    val_characters: int = 0


class _Writer:
    """A zstd JSONL file written through a temporary name; counts its lines."""

    def __init__(self, path: Path) -> None:
        self.path, self.tmp = path, path.with_name(path.name + ".tmp")
        self._fh = self.tmp.open("wb")
        compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)
        self._writer = compressor.stream_writer(self._fh, closefd=False)
        self.lines = 0

    def write(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
        self._writer.write(line.encode("utf-8"))
        self.lines += 1

    def close(self) -> dict:
        self._writer.close()
        self._fh.close()
        self.tmp.replace(self.path)
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
        return {"records": self.lines, "compressed_bytes": self.path.stat().st_size,
                "sha256": digest}


def write_corpus(records, path: str | Path) -> dict:
    """Pile-format records (``{"text", "meta"}``) as a ``.jsonl.zst`` corpus, written through
    a temporary name; returns its record count, compressed size and sha256."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    writer = _Writer(Path(path))
    try:
        for record in records:
            writer.write(record)
        return writer.close()
    except BaseException:
        writer.tmp.unlink(missing_ok=True)
        raise


def _parse_list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def build_corpus(out_dir: str | Path, *, sources: list[str] | None = None,
                 heldout_source: str | None = DEFAULT_HELDOUT,
                 val_fraction: float = DEFAULT_VAL_FRACTION,
                 max_chars_per_source: int | None = None, max_docs: int | None = None,
                 roots: dict[str, str | Path] | None = None,
                 max_part_chars: int = MAX_PART_CHARS, log=print) -> dict:
    """Build the corpus into ``out_dir``; returns the manifest (also written as JSON).

    ``roots`` overrides source roots by name (for pydoc: a comma-separated module list).
    ``max_chars_per_source`` stops a source once it has given that many characters (the
    last document may overshoot); ``max_docs`` caps documents per source.
    """
    t0 = time.perf_counter()
    names = list(sources) if sources else list(SOURCE_NAMES)
    chosen = [source_by_name(n) for n in names]  # raises on an unknown name
    if heldout_source:
        source_by_name(heldout_source)  # a misspelt name is an error
        if heldout_source not in names:
            log(f"[corpus] held-out source {heldout_source!r} is not among {names}: "
                f"no source is held out")
            heldout_source = None
    if not 0 <= val_fraction < 1:
        raise BadInput(f"val_fraction must be in [0, 1), got {val_fraction}")
    roots = dict(roots or {})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The held-out source goes first so that a text it shares with another source stays in
    # the held-out file and is removed from training as a duplicate (never the reverse).
    order = sorted(chosen, key=lambda s: s.name != heldout_source)
    seen: set[bytes] = set()
    reports: dict[str, SourceReport] = {}
    writers = {"train": _Writer(out_dir / TRAIN_FILE), "heldout": _Writer(out_dir / HELDOUT_FILE)}
    try:
        for source in order:
            report = reports[source.name] = SourceReport(source.name, source.licence,
                                                         source.apt_package)
            if source.name == "pydoc":
                modules = _parse_list(str(roots["pydoc"])) if "pydoc" in roots else None
                root, report.path = None, "pydoc:" + ("," .join(modules) if modules
                                                      else "stdlib")
                candidates = source.reader(None, modules)
            else:
                root, report.reason = resolve_root(source, roots.get(source.name))
                if root is None:
                    log(f"[corpus] {source.name}: {report.reason}")
                    continue
                report.path = str(root)
                candidates = source.reader(root)
            report.found = True
            writer = writers["heldout" if source.name == heldout_source else "train"]
            _take_source(source, candidates, report, writer, seen, val_fraction,
                         max_chars_per_source, max_docs, max_part_chars)
            log(f"[corpus] {source.name}: {report.documents} documents, "
                f"{report.characters:,} characters from {report.path}")
        files = {name: w.close() for name, w in writers.items()}
    except BaseException:
        for w in writers.values():
            w.tmp.unlink(missing_ok=True)
        raise
    manifest = _manifest(names, reports, files, heldout_source, val_fraction,
                         max_chars_per_source, max_docs, max_part_chars,
                         time.perf_counter() - t0)
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _take_source(source, candidates, report: SourceReport, writer: _Writer, seen: set,
                 val_fraction: float, max_chars: int | None, max_docs: int | None,
                 max_part_chars: int) -> None:
    heldout = writer.path.name == HELDOUT_FILE
    for cand in candidates:
        report.files_seen += 1
        reason = cand.filtered
        text = None
        if reason is None:
            text = normalise(cand.text)
            reason = zh_content_filter(text) if source.language == "zh" else content_filter(text)
        if reason is not None:
            report.filtered[reason] = report.filtered.get(reason, 0) + 1
            continue
        digest = hashlib.sha256(text.encode("utf-8")).digest()
        if digest in seen:
            report.duplicates_removed += 1
            continue
        seen.add(digest)
        doc_id = f"{source.name}/{cand.path}" + (f"#{cand.section}" if cand.section else "")
        parts = split_parts(text, max_part_chars)
        report.documents += 1
        report.split_documents += len(parts) > 1
        for k, part in enumerate(parts):
            store_id = f"{writer.path.name}:{writer.lines}"  # what read_corpus will call it
            split = "heldout_source" if heldout else split_of(store_id, val_fraction)
            meta = {"pile_set_name": source.name, "licence": source.licence,
                    "path": cand.path, "split": split,
                    "id": doc_id + (f"#part-{k:03d}" if len(parts) > 1 else "")}
            writer.write({"text": part, "meta": meta})
            report.records += 1
            report.characters += len(part)
            report.bytes += len(part.encode("utf-8"))
            if split == "val":
                report.val_records += 1
                report.val_characters += len(part)
            elif split == "train":
                report.train_records += 1
        if (max_docs is not None and report.documents >= max_docs) or \
                (max_chars is not None and report.characters >= max_chars):
            report.capped = True
            return


def _manifest(names, reports, files, heldout_source, val_fraction, max_chars, max_docs,
              max_part_chars, wall_s) -> dict:
    per_source = {}
    for name in names:
        r = reports[name]
        entry = {"found": r.found, "path": r.path, "apt_package": r.apt_package,
                 "licence": r.licence, "documents": r.documents, "records": r.records,
                 "split_documents": r.split_documents, "characters": r.characters,
                 "bytes": r.bytes, "duplicates_removed": r.duplicates_removed,
                 "filtered": dict(sorted(r.filtered.items())), "files_seen": r.files_seen,
                 "capped": r.capped,
                 "file": HELDOUT_FILE if name == heldout_source else TRAIN_FILE}
        if not r.found:
            entry["reason"] = r.reason
        if name != heldout_source:
            entry.update(train_records=r.train_records, val_records=r.val_records,
                         val_characters=r.val_characters)
        per_source[name] = entry
    found = [reports[n] for n in names if reports[n].found]
    train = [r for r in found if r.name != heldout_source]
    held = [r for r in found if r.name == heldout_source]
    return {
        "format": "The Pile: zstd JSONL, {text, meta: {pile_set_name, licence, path, id, split}}",
        "sources": per_source,
        "totals": {
            "documents": sum(r.documents for r in found),
            "records": sum(r.records for r in found),
            "characters": sum(r.characters for r in found),
            "bytes": sum(r.bytes for r in found),
            "duplicates_removed": sum(r.duplicates_removed for r in found),
            "train_characters": sum(r.characters for r in train),
            "val_records": sum(r.val_records for r in train),
            "val_characters": sum(r.val_characters for r in train),
            "heldout_source_characters": sum(r.characters for r in held),
        },
        "files": {TRAIN_FILE: files["train"], HELDOUT_FILE: files["heldout"]},
        "heldout_source": heldout_source,
        "val_fraction": val_fraction,
        "split_rule": (f"record at 0-based line N of {TRAIN_FILE} is held out (val) iff "
                       f"data.corpus.split_of('{TRAIN_FILE}:N', {val_fraction}) == 'val'; "
                       f"that is the id data.corpus.read_corpus and the store give it when "
                       f"{TRAIN_FILE} itself is converted. Source {heldout_source!r} is "
                       f"wholly in {HELDOUT_FILE}."),
        "limits": {"max_chars_per_source": max_chars, "max_docs": max_docs,
                   "max_part_chars": max_part_chars},
        "wall_s": round(wall_s, 2),
    }


def format_table(manifest: dict) -> str:
    """A plain-text table of the sources: found or why not, documents, characters."""
    rows = [("source", "found", "docs", "records", "characters", "MB", "dups", "filtered",
             "licence")]
    for name, s in manifest["sources"].items():
        tag = ("held-out" if name == manifest["heldout_source"] else "yes") if s["found"] \
            else f"NO: apt-get install {s['apt_package']}"
        rows.append((name, tag, f"{s['documents']:,}", f"{s['records']:,}",
                     f"{s['characters']:,}", f"{s['bytes'] / 1e6:.1f}",
                     str(s["duplicates_removed"]), str(sum(s["filtered"].values())),
                     s["licence"]))
    t = manifest["totals"]
    rows.append(("total", "", f"{t['documents']:,}", f"{t['records']:,}",
                 f"{t['characters']:,}", f"{t['bytes'] / 1e6:.1f}",
                 str(t["duplicates_removed"]), "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i in (0, 1, 8) else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths))).rstrip() for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)


def corpus_build_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory (created).")],
    sources: Annotated[Optional[str], typer.Option(
        help=f"Comma-separated sources to use (default: all of {', '.join(SOURCE_NAMES)}; "
             f"also: {', '.join(ALL_SOURCE_NAMES[len(SOURCE_NAMES):])}).")
    ] = None,
    heldout_source: Annotated[str, typer.Option(
        help="Source written to heldout_source.jsonl.zst that training never sees; '' for "
             "none.")] = DEFAULT_HELDOUT,
    val_fraction: Annotated[float, typer.Option(
        help="Share of training-file records held out by data.corpus.split_of.")
    ] = DEFAULT_VAL_FRACTION,
    max_chars_per_source: Annotated[Optional[int], typer.Option(
        help="Stop a source after this many characters.")] = None,
    max_docs: Annotated[Optional[int], typer.Option(
        help="Most documents per source.")] = None,
    root: Annotated[Optional[list[str]], typer.Option(
        help="Override a source root: NAME=PATH (repeatable; pydoc=mod1,mod2 picks modules).")
    ] = None,
) -> None:
    """Build a local corpus (The Pile's format) from Debian documentation packages and pydoc.

    A missing package is reported with its apt name, never an error. Install the sources:

    apt-get install -y python3.11-doc linux-doc-6.1 debian-reference-en perl-doc postgresql-doc-15
    """
    overrides = {}
    for item in root or []:
        name, sep, path = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--root expects NAME=PATH, got {item!r}")
        overrides[name.strip()] = path
    manifest = build_corpus(out, sources=_parse_list(sources),
                            heldout_source=heldout_source or None, val_fraction=val_fraction,
                            max_chars_per_source=max_chars_per_source, max_docs=max_docs,
                            roots=overrides, log=lambda m: typer.echo(m, err=True))
    typer.echo(format_table(manifest))
    t = manifest["totals"]
    typer.echo(f"\n{t['bytes'] / 1e6:.1f} MB of text ({t['characters']:,} characters) in "
               f"{manifest['wall_s']:.0f} s; held-out source: {manifest['heldout_source']} "
               f"({t['heldout_source_characters']:,} chars); val records in training file: "
               f"{t['val_records']:,}; duplicates removed: {t['duplicates_removed']:,}")
    missing = [s["apt_package"] for s in manifest["sources"].values() if not s["found"]]
    if missing:
        typer.echo(f"missing sources; install with: apt-get install -y {' '.join(missing)}")
    typer.echo(f"wrote {Path(out) / TRAIN_FILE}, {Path(out) / HELDOUT_FILE}, "
               f"{Path(out) / MANIFEST_FILE}")
