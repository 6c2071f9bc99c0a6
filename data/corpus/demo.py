"""A local demo corpus in The Pile's format, built from text every Python installation has.

Training text: the standard library's own documentation as rendered by ``pydoc`` for a fixed,
sorted list of modules. Held-out text (for codec evaluation) comes from a different source:
the language-reference topics in ``pydoc_data.topics``. Nothing is downloaded and the repo
commits no third-party text. Output is deterministic for a given Python build.

    vst corpus demo --out DIR [--n-docs 64] [--max-chars 20000] [--seed 0]
"""

from __future__ import annotations

import functools
import importlib
import json
import random
import re
from pathlib import Path
from typing import Iterator

import zstandard

from data.errors import BadInput

PILE_SET_NAME = "PythonStdlibDocs"
DEMO_FILE_NAME = "demo.jsonl.zst"
ZSTD_LEVEL = 10

# Pure-Python or well-documented modules whose import has no side effects. Sorted, fixed.
DEMO_MODULES = tuple(sorted("""
    abc argparse ast base64 bisect calendar collections contextlib copy csv dataclasses
    datetime decimal difflib enum fnmatch fractions functools getopt gettext glob gzip
    hashlib heapq hmac html inspect io ipaddress itertools json logging math mimetypes
    numbers operator pathlib pickle pprint queue random re secrets shlex shutil sqlite3
    statistics string struct tarfile tempfile textwrap threading timeit tokenize traceback
    types typing uuid warnings weakref zipfile zlib
""".split()))

# Sections that depend on the machine (paths, installed files, live values) or are boilerplate.
_DROPPED_SECTIONS = {"MODULE REFERENCE", "DATA", "FILE", "PACKAGE CONTENTS", "SUBMODULES"}
_OVERSTRIKE = re.compile(".\b")  # pydoc bolds a character as "c\bc"
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")  # reprs of default values carry memory addresses


@functools.lru_cache(maxsize=None)  # rendering is the slow part; the result never changes
def module_doc_text(module_name: str) -> str:
    """Plain-text pydoc of one module, without overstrike, addresses or machine-specific parts."""
    import pydoc

    module = importlib.import_module(module_name)
    raw = pydoc.render_doc(module, renderer=pydoc.plaintext)
    text = _ADDRESS.sub("", _OVERSTRIKE.sub("", raw))
    kept: list[str] = []
    dropping = False
    for line in text.splitlines():
        if line and not line[0].isspace():  # a section heading starts at column 0
            dropping = line.strip() in _DROPPED_SECTIONS
        if not dropping:
            kept.append(line.rstrip())
    return "\n".join(kept).strip() + "\n"


def split_text(text: str, max_chars: int) -> list[str]:
    """Cut text into pieces of at most max_chars, at line breaks where possible."""
    pieces: list[str] = []
    while len(text) > max_chars:
        cut = text.rfind("\n", 0, max_chars) + 1
        if cut <= 0:
            cut = max_chars
        pieces.append(text[:cut])
        text = text[cut:]
    if text.strip():
        pieces.append(text)
    return pieces


def demo_documents(n_docs: int, max_chars_per_doc: int, seed: int = 0) -> Iterator[dict]:
    """Pile-format records: modules in a seeded order, long docs split into numbered parts."""
    modules = list(DEMO_MODULES)
    random.Random(seed).shuffle(modules)
    produced = 0
    for name in modules:
        for part, piece in enumerate(split_text(module_doc_text(name), max_chars_per_doc)):
            if produced == n_docs:
                return
            meta = {"pile_set_name": PILE_SET_NAME, "module": name, "part": part}
            yield {"text": piece, "meta": meta}
            produced += 1
    if produced < n_docs:
        raise BadInput(f"only {produced} demo documents available at "
                       f"max_chars_per_doc={max_chars_per_doc}; asked for {n_docs}",
                       hint="ask for fewer documents or longer ones")


def build_demo_corpus(out_dir: str | Path, n_docs: int = 64, max_chars_per_doc: int = 20_000,
                      seed: int = 0) -> Path:
    """Write ``out_dir/demo.jsonl.zst`` (The Pile's format) and return its path."""
    if n_docs < 1 or max_chars_per_doc < 1:
        raise BadInput(f"n_docs and max_chars_per_doc must be positive, got {n_docs} and "
                       f"{max_chars_per_doc}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / DEMO_FILE_NAME
    tmp = path.with_name(path.name + ".tmp")
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)
    with tmp.open("wb") as fh, compressor.stream_writer(fh, closefd=False) as writer:
        for record in demo_documents(n_docs, max_chars_per_doc, seed):
            line = json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
            writer.write(line.encode("utf-8"))
    tmp.replace(path)  # a crash never leaves a half-written demo.jsonl.zst behind
    return path


def heldout_texts(n: int = 32, min_chars: int = 400, max_chars: int = 4000,
                  seed: int = 0) -> list[str]:
    """Texts from the language-reference topics (a source disjoint from the demo corpus)."""
    from pydoc_data.topics import topics

    candidates = [topics[key].strip() for key in sorted(topics)]
    candidates = [text for text in candidates if len(text) >= min_chars]
    random.Random(seed).shuffle(candidates)
    if n > len(candidates):
        raise BadInput(f"only {len(candidates)} held-out topics have >= {min_chars} chars; "
                       f"asked for {n}")
    return [split_text(text, max_chars)[0].rstrip() for text in candidates[:n]]
