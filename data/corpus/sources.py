"""Sources of the local corpus: English documentation shipped by Debian packages, and pydoc.

Each source has a name (its ``pile_set_name``), the apt package that provides it, a licence,
default root directories (the first that exists is used; globs allowed, highest version
first) and a reader. A reader walks its root in sorted order and yields one ``Candidate``
per file (or per chapter): either a text, or the reason it was filtered. The builder applies
the content filters, deduplication, splitting and the held-out rules.

Override a root with ``roots={"perl-docs": "/some/dir"}`` (tests point every source at a fake
tree this way); the pydoc source takes a comma-separated module list there instead.
"""

from __future__ import annotations

import glob
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Callable, Iterator

from data.corpus.demo import module_doc_text
from data.corpus.source_base import Candidate, Reader, Source, read_candidate, walk
from data.corpus.zh import zh_sources
from data.errors import BadInput
from data.corpus.text import (MAX_LINK_SHARE, html_to_text, is_translation, logical_name,
                              path_filter, pod_to_text, read_text_file, rst_link_share,
                              suffix_of)


def _as_text(text: str) -> tuple[str, str | None]:
    return text, None


def _as_rst(text: str) -> tuple[str, str | None]:
    return text, ("index" if rst_link_share(text) > MAX_LINK_SHARE else None)


def _as_html(markup: str) -> tuple[str, str | None]:
    text, link_share = html_to_text(markup)
    return text, ("index" if link_share > MAX_LINK_SHARE else None)


def _as_pod(text: str) -> tuple[str, str | None]:
    pod = pod_to_text(text)
    return pod, (None if pod.strip() else "no-pod")


def _tree_reader(kind_of: Callable[[str], Callable | None]) -> Reader:
    """A reader that walks a tree and converts each file by the converter ``kind_of`` picks
    for its relative path (None: "other-format")."""
    def read(root: Path) -> Iterator[Candidate]:
        for rel, path in walk(root):
            reason = path_filter(rel)
            if reason:
                yield Candidate(rel, filtered=reason)
                continue
            convert = kind_of(rel)
            yield read_candidate(rel, path, convert) if convert else \
                Candidate(rel, filtered="other-format")
    return read


def _python_kind(rel: str) -> Callable | None:
    name = logical_name(rel)
    if name.endswith(".rst.txt") or name.endswith(".rst"):
        return _as_rst
    return _as_text if name.endswith(".txt") else None


def _linux_kind(rel: str) -> Callable | None:
    suffix, name = suffix_of(rel), logical_name(rel)
    if suffix == ".rst":
        return _as_rst
    if suffix == ".txt" or name.startswith("README") or name in ("CodingStyle",
                                                                  "SubmittingPatches"):
        return _as_text
    if suffix == "" and rel.startswith("ABI/"):  # sysfs/ioctl ABI descriptions: prose
        return _as_text
    return None  # yaml schemas, Kconfig, scripts, Makefiles, ...


def _postgres_kind(rel: str) -> Callable | None:
    return _as_html if suffix_of(rel) in (".html", ".htm") else None


def _perl_kind(rel: str) -> Callable | None:
    return _as_pod if suffix_of(rel) in (".pod", ".pm") else None


_CHAPTER = re.compile(r"^(Chapter\s\d+\.|Appendix\s[A-Z]\.)\s", re.M)


def read_debian_reference(root: Path) -> Iterator[Candidate]:
    """The English plain-text book, one document per chapter (the table of contents is
    dropped); HTML only when no plain text is shipped."""
    files = list(walk(root))
    has_txt = any(logical_name(r).endswith(".txt") and not is_translation(r) for r, _ in files)
    for rel, path in files:
        reason = path_filter(rel)
        if reason:
            yield Candidate(rel, filtered=reason)
        elif logical_name(rel).endswith(".txt"):
            text, reason = read_text_file(path)
            if text is None:
                yield Candidate(rel, filtered=reason)
                continue
            yield from _chapters(rel, text)
        elif suffix_of(rel) == ".html" and not has_txt:
            yield read_candidate(rel, path, _as_html)
        else:
            yield Candidate(rel, filtered="other-format")


def _chapters(rel: str, text: str) -> Iterator[Candidate]:
    starts = [m.start() for m in _CHAPTER.finditer(text)]
    bounds = [0, *starts, len(text)]
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        chunk = text[a:b]
        if i == 0 and starts:  # front matter: drop the table of contents (and lists of
            toc = chunk.find("\nTable of Contents\n")  # tables) up to the preface itself
            preface = chunk.rfind("\nPreface\n")
            if 0 <= toc < preface:
                chunk = chunk[:toc + 1] + chunk[preface + 1:]
        if chunk.strip():
            yield Candidate(rel, chunk, section=f"chapter-{i:02d}")


# -- pydoc of the standard library ----------------------------------------------------------

# Modules whose import has side effects (opens a browser, prints, needs a display) or that
# are tests, tools or private.
_PYDOC_EXCLUDE = re.compile(r"(^|\.)(test|tests|__main__|_[^.]*)($|\.)|^(antigravity|this|"
                            r"idlelib|tkinter|turtle|turtledemo|lib2to3|ensurepip|encodings|"
                            r"pydoc_data)($|\.)")


def stdlib_modules() -> list[str]:
    """Importable pure-Python standard-library modules and their submodules, sorted."""
    import importlib
    import pkgutil

    names: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for top in sorted(sys.stdlib_module_names):
            if _PYDOC_EXCLUDE.search(top):
                continue
            try:
                module = importlib.import_module(top)
            except Exception:  # platform-specific or missing optional dependency
                continue
            if not str(getattr(module, "__file__", "") or "").endswith(".py"):
                continue  # built-in or extension: not pure Python
            names.add(top)
            for info in pkgutil.walk_packages(getattr(module, "__path__", []) or [],
                                              top + ".", onerror=lambda _: None):
                if not _PYDOC_EXCLUDE.search(info.name):
                    names.add(info.name)
    return sorted(names)


def machine_values() -> list[tuple[str, str]]:
    """(value, placeholder) for what pydoc would leak of this machine into default-value
    reprs: the environment (cgi's ``environ=os.environ``), interpreter paths, home, cwd."""
    import sysconfig

    pairs = [(repr(os.environ), "os.environ")]
    paths = {"<python>": [sys.executable, os.path.realpath(sys.executable)],
             "<stdlib>": [sysconfig.get_paths()["stdlib"]],
             "<prefix>": [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix],
             "<cwd>": [os.getcwd()], "<home>": [os.path.expanduser("~")]}
    for placeholder, values in paths.items():
        pairs += [(v, placeholder) for v in values if v and len(v) > 1]
    return sorted(set(pairs), key=lambda p: -len(p[0]))  # longest first


def scrub(text: str, pairs: list[tuple[str, str]]) -> str:
    for value, placeholder in pairs:
        text = text.replace(value, placeholder)
    return text


def read_pydoc(root: Path | None, modules: list[str] | None = None) -> Iterator[Candidate]:
    """pydoc of each module, machine-specific values (environment, paths) replaced."""
    pairs = machine_values()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in modules if modules is not None else stdlib_modules():
            try:
                yield Candidate(name, scrub(module_doc_text(name), pairs))
            except Exception as err:  # an import that fails here is reported, not fatal
                yield Candidate(name, filtered=f"import-error: {type(err).__name__}")


SOURCES: tuple[Source, ...] = (
    Source("python-docs", "python3.11-doc", "PSF-2.0",
           ("/usr/share/doc/python3.11/html/_sources", "/usr/share/doc/python3*/html/_sources"),
           _tree_reader(_python_kind)),
    Source("linux-docs", "linux-doc-6.1", "GPL-2.0-only",
           ("/usr/share/doc/linux-doc-6.1/Documentation",
            "/usr/share/doc/linux-doc-*/Documentation"),
           _tree_reader(_linux_kind)),
    Source("perl-docs", "perl-doc", "Artistic-1.0-Perl OR GPL-1.0-or-later",
           ("/usr/share/perl/5.*",), _tree_reader(_perl_kind), requires="pod"),
    Source("postgresql-docs", "postgresql-doc-15", "PostgreSQL",
           ("/usr/share/doc/postgresql-doc-15/html", "/usr/share/doc/postgresql-doc-*/html"),
           _tree_reader(_postgres_kind)),
    Source("debian-reference", "debian-reference-en", "GPL-2.0-or-later",
           ("/usr/share/debian-reference",), read_debian_reference),
    Source("pydoc", None, "PSF-2.0", (), read_pydoc),
)
SOURCE_NAMES = tuple(s.name for s in SOURCES)  # the default: English only
# Chinese documentation (issue #24): used only when named, e.g. `--sources manpages-zh,...`.
ZH_SOURCES: tuple[Source, ...] = zh_sources()
ALL_SOURCE_NAMES = SOURCE_NAMES + tuple(s.name for s in ZH_SOURCES)


def source_by_name(name: str) -> Source:
    for source in SOURCES + ZH_SOURCES:
        if source.name == name:
            return source
    raise BadInput(f"unknown corpus source {name!r}; known: {', '.join(ALL_SOURCE_NAMES)}")


def _version_key(path: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def resolve_root(source: Source, override: str | Path | None = None
                 ) -> tuple[Path | None, str | None]:
    """(root, None) when the source is present, else (None, why not)."""
    patterns = (str(override),) if override is not None else source.default_roots
    for pattern in patterns:
        matches = sorted(glob.glob(pattern), key=_version_key, reverse=True) or [pattern]
        for match in matches:
            root = Path(match)
            if root.is_dir() and (source.requires is None or (root / source.requires).exists()):
                return root, None
    shown = " or ".join(patterns)
    need = f" (with {source.requires}/)" if source.requires else ""
    return None, f"not found: {shown}{need}; install it with: apt-get install {source.apt_package}"
