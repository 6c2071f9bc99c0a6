"""The types every corpus source shares: a `Source` (name, package, licence, roots, reader),
the `Candidate` documents a reader yields, and the file walk and read-and-convert step
(data/corpus/sources.py holds the English sources, data/corpus/zh.py the Chinese ones)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from data.corpus.text import read_text_file


@dataclass(frozen=True)
class Candidate:
    path: str                   # relative to the source root ("module" for pydoc)
    text: str | None = None     # raw text (before normalisation); None when filtered
    filtered: str | None = None  # the filter reason when text is None
    section: str | None = None  # a sub-document of one file (e.g. a book chapter)


Reader = Callable[[Path], Iterator[Candidate]]


@dataclass(frozen=True)
class Source:
    name: str
    apt_package: str | None
    licence: str
    default_roots: tuple[str, ...]
    reader: Reader
    requires: str | None = None  # a path under the root that must exist (the package marker)
    language: str = "en"  # "en" (the default sources) or "zh" (data/corpus/zh.py, by name)


def walk(root: Path) -> Iterator[tuple[str, Path]]:
    """(relative posix path, path) of every file under root, sorted, symlinked dirs not
    followed (a symlinked file is read through)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(root)
        for name in sorted(filenames):
            yield (rel_dir / name).as_posix(), Path(dirpath) / name


def read_candidate(rel: str, path: Path, convert: Callable[[str], tuple[str, str | None]]
          ) -> Candidate:
    text, reason = read_text_file(path)
    if text is None:
        return Candidate(rel, filtered=reason)
    text, reason = convert(text)
    return Candidate(rel, filtered=reason) if reason else Candidate(rel, text)
