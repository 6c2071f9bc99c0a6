"""Text helpers of the corpus builder: reading files, HTML and POD to text, filters, parts.

Everything here is a pure function of its input (no clocks, no randomness), so the builder's
output is the same on every run over the same files.
"""

from __future__ import annotations

import gzip
import html
import re
import zlib
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath

from data.corpus.reader import clean_text

MIN_CHARS = 500  # shorter documents are dropped as "tiny"
MAX_PART_CHARS = 200_000  # longer documents become consecutive parts of at most this many
MAX_NON_ASCII_LETTERS = 0.10  # share of letters outside ASCII above which a text is not English
MAX_LINK_SHARE = 0.5  # share of a page's text that is links / toctree entries: an index page

# Not text at all: images, styles, scripts, fonts, archives, binaries.
NON_TEXT_SUFFIXES = frozenset("""
    .png .jpg .jpeg .gif .svg .ico .bmp .webp .tif .tiff .eps .ps .pdf .dot .dia .odg .xcf
    .css .js .map .json .woff .woff2 .ttf .otf .eot .zip .tar .bz2 .xz .zst .bin .so .o .a
    .pyc .mo .inv .pickle .doctree .db .sqlite .wasm
""".split())

# Names of generated indexes (Sphinx, DocBook), whatever their suffix.
INDEX_STEMS = frozenset({"genindex", "genindex-all", "modindex", "py-modindex", "search",
                         "searchindex", "bookindex", "objects", "sitemap"})

# A directory named after a locale (ja_JP, zh_CN, pt_BR, sp_SP, ...) or a translation tree.
# ("locale", "i18n" are not here: Perl's Locale/ and I18N/ modules are English docs.)
_LOCALE_DIR = re.compile(r"^[a-z]{2,3}[_-][A-Z]{2}(?:\.[\w-]+)?$")
_TRANSLATION_DIRS = frozenset({"translations", "translation", "po"})
# A language tag inside a file name: "index.ja.html", "debian-reference.zh-cn.txt.gz".
_LANGUAGES = frozenset("""
    ar bg ca cs da de el eo es et eu fa fi fr gl he hi hr hu id it ja ko lt lv nb nl nn no pl
    pt ro ru sk sl sr sv th tr uk vi zh zh-cn zh-tw zh_cn zh_tw pt-br pt_br
""".split())


def logical_name(path: str) -> str:
    """A file's name without a trailing ``.gz`` (files are read through gzip transparently)."""
    name = PurePosixPath(path).name
    return name[:-3] if name.endswith(".gz") else name


def suffix_of(path: str) -> str:
    """The last suffix of the logical name, lower case ("" when there is none)."""
    return PurePosixPath(logical_name(path)).suffix.lower()


def is_translation(path: str) -> bool:
    """Whether a relative path lies in a translation tree or names a non-English language."""
    parts = PurePosixPath(path).parts
    if any(p.lower() in _TRANSLATION_DIRS or _LOCALE_DIR.match(p) for p in parts[:-1]):
        return True
    tags = logical_name(path).lower().split(".")[1:-1]  # "ch01.ja.html" -> ["ja"]
    return any(tag in _LANGUAGES for tag in tags)


def is_index_name(path: str) -> bool:
    """Generated index pages by name (documents only: Perl's Pod/Simple/Search.pm is not)."""
    if suffix_of(path) not in (".html", ".htm", ".txt", ".rst", ""):
        return False
    stem = logical_name(path).split(".")[0].lower()
    return stem in INDEX_STEMS or stem.startswith("genindex-")


def path_filter(path: str) -> str | None:
    """The reason a relative path is filtered before it is read, or None."""
    if is_translation(path):
        return "translation"
    if suffix_of(path) in NON_TEXT_SUFFIXES:
        return "non-text"
    if is_index_name(path):
        return "index"
    return None


def read_text_file(path: Path) -> tuple[str | None, str | None]:
    """(text, None) or (None, reason). ``.gz`` is decompressed; NUL bytes mean binary; UTF-8
    is tried first, Latin-1 otherwise (old POD and man sources); a BOM is dropped."""
    try:
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        return None, f"unreadable: {type(err).__name__}"
    if b"\x00" in data:
        return None, "non-text"
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        return data.decode("latin-1"), None


def normalise(text: str) -> str:
    """Light normalisation: newlines, control characters, tabs, trailing spaces, blank runs."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text, _ = clean_text(text)
    lines = [line.expandtabs(8).rstrip() for line in text.split("\n")]
    text = "\n".join(lines).strip("\n")
    return re.sub(r"\n{4,}", "\n\n\n", text) + "\n"  # at most two blank lines in a row


def non_ascii_letter_share(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0
    return sum(1 for c in letters if ord(c) > 127) / len(letters)


def content_filter(text: str) -> str | None:
    """The reason a normalised text is filtered, or None."""
    if len(text) < MIN_CHARS:
        return "tiny"
    if non_ascii_letter_share(text) > MAX_NON_ASCII_LETTERS:
        return "non-english"
    return None


def split_parts(text: str, max_chars: int = MAX_PART_CHARS) -> list[str]:
    """Consecutive parts of at most ``max_chars``, cut at a paragraph break where one lies in
    the last fifth of the window, else at a line break, else hard. Nothing is lost:
    ``"".join(parts) == text``."""
    parts: list[str] = []
    while len(text) > max_chars:
        cut = text.rfind("\n\n", max_chars * 4 // 5, max_chars) + 2
        if cut < 2:
            cut = text.rfind("\n", 0, max_chars) + 1
        if cut <= 0:
            cut = max_chars
        parts.append(text[:cut])
        text = text[cut:]
    if text:
        parts.append(text)
    return parts


# -- reStructuredText ----------------------------------------------------------------------

_TOCTREE = re.compile(r"^\.\. (toctree|autosummary)::")


def rst_link_share(text: str) -> float:
    """Share of a reST text's characters that sit in toctree blocks (index pages are ~all)."""
    total = len(text.strip()) or 1
    inside, linked = False, 0
    for line in text.split("\n"):
        if _TOCTREE.match(line):
            inside = True
        elif inside and line.strip() and not line[0].isspace():
            inside = False
        if inside:
            linked += len(line.strip())
    return linked / total


# -- HTML -----------------------------------------------------------------------------------

_SKIP_TAGS = frozenset({"script", "style", "nav", "head", "noscript", "svg", "header",
                        "footer", "form", "button", "template", "iframe"})
_SKIP_CLASSES = frozenset({"navheader", "navfooter", "toc", "sphinxsidebar", "related",
                           "footer", "header", "navigation", "breadcrumbs", "headerlink"})
_VOID = frozenset({"br", "img", "hr", "meta", "link", "input", "area", "base", "col",
                   "embed", "param", "source", "track", "wbr"})
_BLOCK = frozenset({"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "dl",
                    "dt", "dd", "table", "tr", "pre", "blockquote", "section", "article",
                    "main", "figure", "figcaption", "caption", "hr", "br", "body", "title"})


class _HTMLText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip_stack: list[str] = []  # open elements being skipped (their tag names)
        self.pre = 0
        self.link = 0
        self.chars = self.link_chars = 0

    def _skips(self, tag: str, attrs: list) -> bool:
        if tag in _SKIP_TAGS:
            return True
        classes = set((dict(attrs).get("class") or "").split())
        return bool(classes & _SKIP_CLASSES)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if self.skip_stack:
            if tag not in _VOID:
                self.skip_stack.append(tag)
            return
        if tag not in _VOID and self._skips(tag, attrs):
            self.skip_stack.append(tag)
            return
        if tag in _BLOCK:
            self.out.append("\n\n" if tag in ("p", "pre", "table", "h1", "h2", "h3", "h4")
                            else "\n")
        if tag == "li":
            self.out.append("* ")
        elif tag == "pre":
            self.pre += 1
        elif tag == "a" and dict(attrs).get("href"):
            self.link += 1
        elif tag in ("td", "th"):
            self.out.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if self.skip_stack:
            if tag in self.skip_stack:  # close up to the matching element (tolerates bad HTML)
                while self.skip_stack and self.skip_stack.pop() != tag:
                    pass
            return
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
            self.out.append("\n\n")
        elif tag == "a" and self.link:
            self.link -= 1
        elif tag in _BLOCK:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if self.skip_stack:
            return
        if not self.pre:
            data = re.sub(r"\s+", " ", data)
            if not self.out or self.out[-1][-1:] in (" ", "\n"):
                data = data.lstrip(" ")
        stripped = len(data.strip())
        self.chars += stripped
        if self.link:
            self.link_chars += stripped
        self.out.append(data)


def html_to_text(markup: str) -> tuple[str, float]:
    """Visible text of an HTML page (scripts, styles, navigation and tables of contents
    removed) and the share of that text which is link text."""
    parser = _HTMLText()
    parser.feed(markup)
    parser.close()
    text = "\n".join(line.rstrip() for line in "".join(parser.out).split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip() + "\n", parser.link_chars / max(1, parser.chars)


# -- POD (Perl's documentation format) ------------------------------------------------------

_POD_CMD = re.compile(r"^=([a-zA-Z]\w*)\s*(.*)$", re.S)
_CODE_MULTI = re.compile(r"([A-Z])(<{2,})\s+(.*?)\s+(>{2,})", re.S)
_CODE_ONE = re.compile(r"([A-Z])<([^<>]*)>")
_TEXT_FORMATS = {"text", "plaintext"}


def _pod_code(letter: str, body: str) -> str:
    if letter in "XZ":
        return ""
    if letter == "E":
        named = {"lt": "<", "gt": ">", "sol": "/", "verbar": "|", "quot": '"', "amp": "&"}
        if body in named:
            return named[body]
        if body.isdigit() or body[:2].lower() == "0x":
            try:
                return chr(int(body, 0) if body[:2].lower() == "0x" else int(body))
            except (ValueError, OverflowError):
                return ""
        return html.unescape(f"&{body};")
    if letter == "L":
        if "|" in body:
            return body.split("|", 1)[0]
        name, _, section = body.partition("/")
        section = section.strip('"')
        return f"{section} in {name}" if name and section else (section or name)
    return body  # B I C F S: the text itself


def pod_inline(text: str) -> str:
    """Resolve POD formatting codes (B<>, C<< >>, L<|>, E<>, ...), innermost first."""
    text = _CODE_MULTI.sub(lambda m: _pod_code(m.group(1), m.group(3))
                           if len(m.group(2)) == len(m.group(4)) else m.group(0), text)
    for _ in range(8):  # nesting depth bound
        new = _CODE_ONE.sub(lambda m: _pod_code(m.group(1), m.group(2)), text)
        if new == text:
            break
        text = new
    return text


def pod_to_text(source: str) -> str:
    """Plain text of the POD in a .pod or .pm file (code outside POD blocks is dropped)."""
    out: list[str] = []
    in_pod = skip_format = False
    indent = 0
    mark = ""
    for para in re.split(r"\n[ \t]*\n", source.replace("\r\n", "\n")):
        cmd = _POD_CMD.match(para) if para.startswith("=") else None
        if cmd:
            name, arg = cmd.group(1), cmd.group(2).strip()
            in_pod = name != "cut"
            if name == "begin":
                skip_format = arg.split()[0].lower() not in _TEXT_FORMATS if arg else True
            elif name == "end":
                skip_format = False
            elif skip_format or name in ("pod", "cut", "for", "encoding"):
                continue
            elif name.startswith("head"):
                out.append(pod_inline(" ".join(arg.split())))
            elif name == "over":
                indent += 4
            elif name == "back":
                indent = max(0, indent - 4)
            elif name == "item":
                label = pod_inline(" ".join(arg.split()))
                bullet = label in ("*", "") or label.rstrip(".").isdigit()
                if bullet:  # "=item *" / "=item 1.": the mark goes before the next paragraph
                    mark = "* " if label in ("*", "") else label + " "
                else:
                    out.append(" " * max(0, indent - 4) + label)
            continue
        if not in_pod or skip_format or not para.strip():
            continue
        if para[0] in " \t":  # verbatim: kept as written
            out.append(para.rstrip())
        else:
            margin = " " * (max(0, indent - 4) + len(mark) if mark else indent)
            lines = [margin + line.strip() for line in pod_inline(para).split("\n")]
            if mark:  # a bullet hangs in the item's margin
                lines[0], mark = " " * max(0, indent - 4) + mark + lines[0].strip(), ""
            out.append("\n".join(lines))
    return "\n\n".join(p for p in out if p.strip()) + "\n"
