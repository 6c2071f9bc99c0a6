"""Chinese sources of the local corpus (issue #24): Debian's Simplified Chinese documentation.

    apt-get install manpages-zh debian-reference-zh-cn gimp-help-zh-cn \\
        libreoffice-help-zh-cn debian-edu-doc-zh-cn
    vst corpus build --out runs/corpus_zh --heldout-source debian-edu-doc-zh \\
        --sources manpages-zh,debian-reference-zh,gimp-help-zh,libreoffice-help-zh,debian-edu-doc-zh,pydoc

Readers here walk a root like the English ones (data/corpus/sources.py) and yield
`Candidate`s; manual pages are groff, turned into text by `roff_to_text` (no groff
needed: the common man macros and escapes, the rest dropped). A Chinese text is kept when
at least `MIN_CJK_SHARE` of its letters are CJK ideographs (`zh_content_filter`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

from data.corpus.source_base import Candidate, Source, read_candidate, walk
from data.corpus.text import (MAX_LINK_SHARE, NON_TEXT_SUFFIXES, html_to_text, is_index_name,
                              logical_name, read_text_file, suffix_of)

MIN_ZH_CHARS = 300  # shorter Chinese documents are dropped as "tiny" (a hanzi says more)
MIN_CJK_SHARE = 0.2  # share of letters that are CJK ideographs, else "non-chinese"


def is_cjk(ch: str) -> bool:
    """A CJK unified ideograph (the basic block or extension A)."""
    return "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf"


def cjk_share(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    return sum(map(is_cjk, letters)) / len(letters) if letters else 0.0


def zh_content_filter(text: str) -> str | None:
    """The reason a normalised Chinese text is filtered, or None."""
    if len(text) < MIN_ZH_CHARS:
        return "tiny"
    if cjk_share(text) < MIN_CJK_SHARE:
        return "non-chinese"
    return None


def zh_path_filter(rel: str) -> str | None:
    """Like the English path filter, without rejecting the language tag (zh-cn) we want."""
    if suffix_of(rel) in NON_TEXT_SUFFIXES:
        return "non-text"
    if is_index_name(rel):
        return "index"
    return None


# -- groff man pages ------------------------------------------------------------------------

_ESCAPES = [  # (pattern, replacement) for inline escapes, applied in order
    (re.compile(r"\\f(?:\[[^\]]*\]|\(..|.)"), ""),  # font changes
    (re.compile(r"\\s[+-]?\d+"), ""),  # size changes
    (re.compile(r"\\\*(?:\[[^\]]*\]|\(..|.)"), ""),  # strings
    (re.compile(r"\\[,/&%:|^]"), ""),  # italic corrections, zero-width
    (re.compile(r"\\\((?:em|en)"), "—"),
    (re.compile(r"\\\((?:lq|rq|dq)"), '"'),
    (re.compile(r"\\\((?:oq|cq|aq)"), "'"),
    (re.compile(r"\\\(bu"), "•"),
    (re.compile(r"\\\(co"), "©"),
    (re.compile(r"\\\((?:mi|hy)"), "-"),
    (re.compile(r"\\\(..|\\\[[^\]]*\]"), ""),  # other named glyphs
    (re.compile(r"\\-"), "-"),
    (re.compile(r"\\e"), "\\\\"),
    (re.compile(r"\\ "), " "),
    (re.compile(r"\\(.)"), r"\1"),  # any other escaped character stands for itself
]
_FONT_MACROS = {".B", ".I", ".SM", ".SB"}
_ALT_MACROS = {".BR", ".RB", ".IR", ".RI", ".BI", ".IB"}
_BREAK_MACROS = {".PP", ".P", ".LP", ".SS", ".SH", ".TP", ".IP", ".HP", ".sp", ".br", ".RS",
                 ".RE", ".nf", ".fi", ".TQ", ".EX", ".EE", ".in", ".ti", ".Sp"}
_ARGS = re.compile(r'"([^"]*)"|(\S+)')


def _inline(text: str) -> str:
    for pattern, repl in _ESCAPES:
        text = pattern.sub(repl, text)
    return text


def _args(rest: str) -> list[str]:
    return [quoted or bare for quoted, bare in _ARGS.findall(rest)]


def roff_to_text(source: str) -> str:
    """The readable text of a man page's groff source: headings, paragraphs and the
    arguments of font macros; comments, requests and unknown macros dropped."""
    out: list[str] = []
    skipping = False  # inside a macro definition (.de ... ..) or an ignored block (.ig)
    for raw in source.split("\n"):
        line = raw.rstrip()
        if skipping:
            skipping = line != ".."
            continue
        if re.match(r"[.'](de|de1|am|ig)\b", line):
            skipping = True
            continue
        if line.startswith((".\\\"", "'\\\"", '.\\"', "\\\"")) or line in (".", "'"):
            continue
        if not line.startswith((".", "'")):
            out.append(_inline(line))
            continue
        macro, _, rest = line.partition(" ")
        macro = "." + macro[1:]
        if macro == ".TH":
            args = _args(rest)
            out.append(" ".join(args[:1]) + (f"({args[1]})" if len(args) > 1 else ""))
            out.append("")
        elif macro in (".SH", ".SS"):
            out += ["", _inline(" ".join(_args(rest)))]
        elif macro in _FONT_MACROS:
            out.append(_inline(" ".join(_args(rest))))
        elif macro in _ALT_MACROS:
            out.append(_inline("".join(_args(rest))))
        elif macro in (".IP", ".TP") and rest.strip():
            out += ["", _inline(_args(rest)[0]) if _args(rest) else ""]
        elif macro in _BREAK_MACROS:
            if macro in (".PP", ".P", ".LP", ".TP", ".IP", ".sp", ".HP"):
                out.append("")
        # anything else (.de, .ds, .nr, .ad, .so, conditionals ...) is dropped
    text = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n"


# -- readers ---------------------------------------------------------------------------------

def _html(markup: str) -> tuple[str, str | None]:
    text, link_share = html_to_text(markup)
    return text, ("index" if link_share > MAX_LINK_SHARE else None)


def _roff(source: str) -> tuple[str, str | None]:
    if re.match(r"\.so\s", source.lstrip()):  # a link to another page
        return "", "link"
    return roff_to_text(source), None


def zh_tree_reader(kind_of: Callable[[str], Callable | None]):
    """A reader over a tree of Chinese files, each converted by the converter `kind_of`
    picks for its relative path (None: "other-format")."""
    def read(root: Path) -> Iterator:
        for rel, path in walk(root):
            reason = zh_path_filter(rel)
            convert = None if reason else kind_of(rel)
            if reason or convert is None:
                yield Candidate(rel, filtered=reason or "other-format")
            else:
                yield read_candidate(rel, path, convert)
    return read


def man_kind(rel: str) -> Callable | None:
    """Man page sources: man1/ls.1.gz and the like."""
    return _roff if re.fullmatch(r"man\w+/[^/]+\.\w+", rel.removesuffix(".gz")) else None


def html_kind(rel: str) -> Callable | None:
    return _html if suffix_of(rel) in (".html", ".htm", ".xhp") else None


def edu_kind(rel: str) -> Callable | None:
    """The Debian Edu manual: the newest release's one-page HTML only."""
    return _html if re.fullmatch(r"debian-edu-bookworm-manual\.html", rel) else None


_ZH_CHAPTER = re.compile(r"^(第\s*\d+\s*章|附录\s*[A-Z])\s", re.M)


def read_debian_reference_zh(root: Path) -> Iterator:
    """The Simplified Chinese plain-text book, one document per chapter."""
    for rel, path in walk(root):
        if logical_name(rel) != "debian-reference.zh-cn.txt":
            yield Candidate(rel, filtered="other-format")
            continue
        text, reason = read_text_file(path)
        if text is None:
            yield Candidate(rel, filtered=reason)
            continue
        starts = [m.start() for m in _ZH_CHAPTER.finditer(text)]
        bounds = [0, *starts, len(text)]
        for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
            if text[a:b].strip():
                yield Candidate(rel, text[a:b], section=f"chapter-{i:02d}")


def zh_sources() -> tuple:
    """The Chinese `Source`s (language "zh"), in the order `vst corpus build` lists them."""
    return (
        Source("manpages-zh", "manpages-zh", "GFDL-1.2+ and GPL (per page)",
               ("/usr/share/man/zh_CN",), zh_tree_reader(man_kind), language="zh"),
        Source("debian-reference-zh", "debian-reference-zh-cn", "GPL-2.0-or-later",
               ("/usr/share/debian-reference",), read_debian_reference_zh, language="zh"),
        Source("gimp-help-zh", "gimp-help-zh-cn", "GFDL-1.2",
               ("/usr/share/gimp/2.0/help/zh_CN",), zh_tree_reader(html_kind), language="zh"),
        Source("libreoffice-help-zh", "libreoffice-help-zh-cn", "MPL-2.0",
               ("/usr/share/libreoffice/help/zh-CN",), zh_tree_reader(html_kind),
               language="zh"),
        Source("debian-edu-doc-zh", "debian-edu-doc-zh-cn", "GPL-2.0-or-later",
               ("/usr/share/doc/debian-edu-doc-zh-cn",), zh_tree_reader(edu_kind),
               language="zh"),
    )
