"""A local instruction set generated offline from corpus documents, with checkable answers.

Seeded and deterministic; every answer is a substring of its context, so exact match is a
fair score. Train and held-out samples come from disjoint documents, and whole families
can be held out (never seen in training):

    from data.corpus import build_demo_corpus, read_corpus
    from data.corpus.instruct_gen import generate_split
    docs = list(read_corpus(build_demo_corpus("runs/corpus")))
    split = generate_split(docs, context_chars=(2000, 4000), seed=0, heldout_families=("section",))
    split.train, split.heldout        # lists of Instruction

Families:
- kv: a "key: value" line planted at a random line of the passage; asks for the value.
- next_sentence: quotes one sentence of the passage; asks for the sentence after it.
- section: the passage cut into numbered sections; asks which one mentions a term that
  occurs in exactly one of them.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from data.corpus.instructions import Instruction
from data.corpus.reader import Document

FAMILIES = ("kv", "next_sentence", "section")
_SENT = re.compile(r"[^.!?\n]{20,200}[.!?](?=\s)")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{5,}")


def passage(doc: Document, chars: int, rng: random.Random) -> str | None:
    """A window of about `chars` characters of a document, cut at line starts."""
    text = doc.text
    if len(text) < chars // 2:
        return None
    start = rng.randrange(0, max(1, len(text) - chars))
    nl = text.find("\n", start)
    start = nl + 1 if 0 <= nl < start + 200 else start
    return text[start : start + chars]


def gen_kv(text: str, rng: random.Random) -> tuple[str, str, str]:
    key = f"{rng.choice(['alpha', 'delta', 'orbit', 'cedar', 'ember'])}-{rng.randrange(1000, 9999)}"
    value = str(rng.randrange(100000, 999999))
    lines = text.split("\n")
    at = rng.randrange(0, len(lines) + 1)
    lines.insert(at, f"{key}: {value}")
    return f"What is the value of the key {key} in the text?", "\n".join(lines), value


def gen_next_sentence(text: str, rng: random.Random) -> tuple[str, str, str] | None:
    sents = [m.group(0).strip() for m in _SENT.finditer(text)]
    pairs = [(a, b) for a, b in zip(sents, sents[1:]) if text.count(a) == 1]
    if not pairs:
        return None
    a, b = rng.choice(pairs)
    return f'Quote the sentence that follows this one: "{a}"', text, b


def gen_section(text: str, rng: random.Random, sections: int = 4) -> tuple[str, str, str] | None:
    size = len(text) // sections
    parts = [text[i * size : (i + 1) * size] for i in range(sections)]
    k = rng.randrange(sections)
    others = " ".join(p for i, p in enumerate(parts) if i != k)
    terms = sorted({w for w in _WORD.findall(parts[k]) if w not in others})
    if not terms:
        return None
    term = rng.choice(terms)
    context = "\n".join(f"Section {i + 1}:\n{p}" for i, p in enumerate(parts))
    return f"Which section mentions the term {term}? Answer like 'Section N'.", context, \
        f"Section {k + 1}"


GENERATORS: dict[str, Callable] = {"kv": gen_kv, "next_sentence": gen_next_sentence,
                                   "section": gen_section}


def generate(docs: Iterable[Document], *, families: Sequence[str] = FAMILIES,
             context_chars: Sequence[int] = (2000,), per_doc: int = 1, seed: int = 0
             ) -> list[Instruction]:
    """`per_doc` samples per (document, family, context length), seeded per document, so
    adding documents does not change the samples of the others."""
    out = []
    for doc in docs:
        for fam in families:
            for chars in context_chars:
                for j in range(per_doc):
                    rng = random.Random(f"{seed}|{doc.id}|{fam}|{chars}|{j}")
                    text = passage(doc, chars, rng)
                    made = GENERATORS[fam](text, rng) if text else None
                    if made is None:
                        continue
                    instr, ctx, resp = made
                    out.append(Instruction(f"{doc.id}#{fam}-{chars}-{j}", instr, ctx, resp, fam,
                                           {"doc": doc.id, "context_chars": chars}))
    return out


def doc_split(doc_id: str, heldout_fraction: float, seed: int) -> str:
    h = int(hashlib.sha256(f"{seed}|{doc_id}".encode()).hexdigest()[:8], 16) / 16**8
    return "heldout" if h < heldout_fraction else "train"


@dataclass
class InstructionSplit:
    train: list[Instruction]
    heldout: list[Instruction]  # unseen documents; families in heldout_families appear only here
    heldout_families: tuple[str, ...]


def generate_split(docs: Iterable[Document], *, context_chars: Sequence[int] = (2000,),
                   heldout_fraction: float = 0.25, heldout_families: Sequence[str] = ("section",),
                   families: Sequence[str] = FAMILIES, per_doc: int = 1, seed: int = 0
                   ) -> InstructionSplit:
    docs = list(docs)
    train_docs = [d for d in docs if doc_split(d.id, heldout_fraction, seed) == "train"]
    held_docs = [d for d in docs if doc_split(d.id, heldout_fraction, seed) == "heldout"]
    seen = [f for f in families if f not in heldout_families]
    return InstructionSplit(
        generate(train_docs, families=seen, context_chars=context_chars, per_doc=per_doc,
                 seed=seed),
        generate(held_docs, families=families, context_chars=context_chars, per_doc=per_doc,
                 seed=seed),
        tuple(heldout_families))


def mix_by_answer_tokens(pools: dict[str, list[Instruction]], weights: dict[str, float],
                         budget: int, seed: int = 0,
                         count: Callable[[str], int] = lambda s: len(s.encode("utf-8"))
                         ) -> list[Instruction]:
    """A shuffled mix whose *answer tokens* (not rows) follow `weights`: pool p gets about
    weights[p] / sum(weights) * budget answer tokens (by `count`; UTF-8 bytes by default),
    cycling through its samples in a seeded order; a pool that runs dry repeats."""
    rng = random.Random(seed)
    total_w = sum(weights.values())
    out: list[Instruction] = []
    for name, w in sorted(weights.items()):
        pool = list(pools[name])
        if not pool:
            continue
        rng.shuffle(pool)
        want, got, i = w / total_w * budget, 0, 0
        while got < want:
            s = pool[i % len(pool)]
            out.append(s)
            got += max(1, count(s.response))
            i += 1
    rng.shuffle(out)
    return out
