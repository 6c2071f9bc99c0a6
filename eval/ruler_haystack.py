"""Haystacks and random values of the RULER-style tasks (`eval.ruler`): the filler prose a
needle hides in, and the words, numbers and uuids that keys and values are made of.

Without a haystack of the caller's, prose comes from the docstrings of standard-library
modules, so nothing is downloaded.
"""

from __future__ import annotations

import random
import re
import uuid
from functools import lru_cache
from typing import Sequence

from data.errors import BadInput

_ADJECTIVES = """
able absent acid adept agile airy alert amber ample ancient angry arctic ashen awake
bald balmy bare bitter blank bleak blond bold brave brief bright brisk broad bronze
busy calm candid cheap chief chilly civil clean clever close cloudy coarse cold cosmic
crisp cruel curly damp dark dear deep dense dim dizzy dry dull dusty eager early east
easy elder empty equal even exact fair faint false fancy fast fatal feral fierce
final fine firm flat fond foggy frail free fresh frosty full gentle giant glad glossy
golden grand grave gray great green grim gritty happy hardy harsh hasty hazy heavy
hidden hollow honest humble hungry icy idle inner ivory jolly keen kind large late
lazy lean level light lively livid local lofty lone loud lucky lunar mad major mellow
merry messy mild minor misty modern moist muddy mute narrow neat new nimble noble
noisy odd olive open oval pale plain plump polite proud pure quick quiet rapid rare
raw ready regal rich rigid ripe rocky rosy rough round royal rural rusty sacred sad
safe salty sandy scarce secret sharp shiny short shy silent silky silver simple sleek
slim slow small smart smooth snowy soft solar solid sour spare stark steady steep
stiff still stormy strict strong sunny sweet swift tall tame tender thick thin tidy
tiny tired tough true upper urban vast vivid warm wary weary west wet whole wide wild
windy wise witty woody young zealous
"""
_NOUNS = """
acorn admiral album anchor angle ankle apple apron arch arena arrow attic avenue
badge bagel ball banjo barn barrel basket beacon beard bell bench berry bicycle
blanket boat bonnet bottle boulder bowl bracket branch bread brick bridge broom bucket
buffalo bugle button cabin cactus camel candle canoe canyon carpet castle cave cellar
chair chalk channel cherry chimney circle cliff clock cloud coast comet compass copper
cotton crane crater crown cup curtain cushion daisy desert diamond dolphin donkey door
dragon drum eagle easel elbow engine falcon feather fence ferry fiddle field finch
flag flute forest fountain fox garden garlic gate glacier globe goat gravel guitar
hammer harbor harp hatchet helmet heron hill honey horizon island jacket jar jungle
kettle kite ladder lagoon lantern lemon lighthouse lily lizard lobster locket magnet
mango maple marble meadow mirror mitten monkey moss mountain needle nest oasis ocean
orchard otter owl paddle palace parrot pebble pencil pepper piano pillow pine planet
pond puzzle quarry quilt rabbit raft rainbow raven ribbon river robin rocket saddle
salmon satchel scarf shelf shell ship shovel signal skillet sled spider spoon squirrel
stable statue stone straw stream sunset swan table teapot temple thimble thistle
thunder tiger timber tower trolley trumpet tulip tunnel turtle umbrella valley velvet
violin volcano wagon walnut whistle willow window wizard wolf zebra
"""
ADJECTIVES: tuple[str, ...] = tuple(sorted(set(_ADJECTIVES.split())))
NOUNS: tuple[str, ...] = tuple(sorted(set(_NOUNS.split())))

_STDLIB_MODULES = (
    "collections", "functools", "itertools", "json", "re", "textwrap", "string", "difflib",
    "heapq", "bisect", "random", "statistics", "fractions", "decimal", "datetime", "calendar",
    "pathlib", "shutil", "csv", "argparse", "logging", "threading", "queue", "subprocess",
    "typing", "dataclasses", "enum", "contextlib", "abc", "io", "os", "zipfile", "tarfile",
    "gzip", "hashlib", "base64", "html", "email", "unittest", "doctest", "pdb", "timeit",
    "sqlite3", "socket", "selectors", "asyncio", "inspect", "pickle", "copy", "pprint",
)  # fmt: skip


# ---------------------------------------------------------------- haystacks


def split_sentences(text: str) -> list[str]:
    """Whitespace-squeezed sentences: split after . ! ? followed by a space."""
    text = " ".join(text.split())
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if s]


@lru_cache(maxsize=1)
def stdlib_haystack() -> tuple[str, ...]:
    """Prose paragraphs from stdlib docstrings: a haystack that needs no download.

    Code examples (lines starting with `>>>` or indented) are dropped so that the
    haystack reads like an essay. The text depends on the Python version.
    """
    import importlib
    import inspect

    paras: list[str] = []
    for name in _STDLIB_MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:  # pragma: no cover - platform without the module
            continue
        docs = [inspect.getdoc(mod) or ""]
        for attr in sorted(getattr(mod, "__all__", None) or dir(mod)):
            if not attr.startswith("_"):
                docs.append(inspect.getdoc(getattr(mod, attr, None)) or "")
        for doc in docs:
            for para in doc.split("\n\n"):
                lines = para.splitlines()
                if not lines or any(ln.startswith((">>>", "...", " ", "\t")) for ln in lines):
                    continue
                para = " ".join(lines)
                if ". " in para and len(para) > 80 and para not in paras:
                    paras.append(para)
    return tuple(paras)


def haystack_sentences(texts: Sequence[str] | None) -> list[str]:
    texts = stdlib_haystack() if texts is None else texts
    sents = [s for t in texts for s in split_sentences(t)]
    if not sents:
        raise BadInput("the haystack texts contain no sentences")
    return sents


def sentence_lines(sentences: Sequence[str], max_chars: int = 100, min_words: int = 4
                   ) -> list[str]:
    """Sentences as lines of at most `max_chars` characters (repeat_line's haystack).

    A longer sentence is cut at spaces into consecutive lines; lines of fewer than
    `min_words` words (too short to quote a span from) and single words longer than a
    line are left out.
    """
    out: list[str] = []
    for sent in sentences:
        line: list[str] = []
        width = 0
        for word in sent.split():
            if len(word) > max_chars:
                continue
            if line and width + 1 + len(word) > max_chars:
                out.append(" ".join(line))
                line, width = [], 0
            width += len(word) + (1 if line else 0)
            line.append(word)
        if line:
            out.append(" ".join(line))
    lines = [ln for ln in out if len(ln.split()) >= min_words]
    if not lines:
        raise BadInput(f"the haystack has no line of at least {min_words} words")
    return lines


def cycle_from(items: Sequence[str], start: int, n: int) -> list[str]:
    """n items from `start`, wrapping around (long targets repeat the haystack, as RULER)."""
    return [items[(start + i) % len(items)] for i in range(n)]


# ---------------------------------------------------------------- random values


def random_word(rng: random.Random) -> str:
    return f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}"


def random_value(rng: random.Random, kind: str) -> str:
    if kind == "numbers":
        return str(rng.randint(10**6, 10**7 - 1))
    if kind == "words":
        return random_word(rng)
    if kind == "uuids":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    raise ValueError(f"unknown needle type {kind!r}")


def distinct_values(
    rng: random.Random, kind: str, n: int, avoid: frozenset[str] = frozenset()
) -> list[str]:
    """n distinct random values, none of them in `avoid`."""
    out: dict[str, None] = {}
    while len(out) < n:
        v = random_value(rng, kind)
        if v not in avoid:
            out.setdefault(v)
    return list(out)


@lru_cache(maxsize=1)
def pseudo_words() -> tuple[str, ...]:
    """Pronounceable three-syllable non-words, in a fixed shuffled order (cwe's big lists)."""
    syll = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    words = [a + b + c for a in syll for b in syll for c in syll]
    random.Random("ruler-pseudo-words").shuffle(words)
    return tuple(words)


def word_pool(n: int) -> list[str]:
    real = sorted(set(ADJECTIVES) | set(NOUNS))
    if n <= len(real):
        return real
    return real + list(pseudo_words()[: n - len(real)])


def zeta(s: float, k: int = 1000) -> float:
    """Riemann zeta for s > 1 (Euler-Maclaurin tail), for Zipf word counts in fwe."""
    head = sum(i**-s for i in range(1, k))
    return head + k ** (1 - s) / (s - 1) + 0.5 * k**-s + s * k ** (-s - 1) / 12
