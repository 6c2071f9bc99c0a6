"""Instruction-tuning sequences: [V_instruction, V_context, V_response] along one reading path.

Every segment of a sample is rendered to its own pages and encoded by the frozen codec.
A learned special vector opens each segment and one closes the response (`SPECIAL`); 3D
rotary positions keep counting pages across segments (each special takes a page index of
its own), so the layout is one long document to the model:

    [S_instr] instr p0..  [S_ctx] ctx p0..  [S_resp] resp p0..  [S_end]

Position t predicts item t+1 (vst.model's convention); the loss falls on positions whose
target is a response vector, and the stop head is trained on every position whose target
is a response vector, with label 1 on the last response page ("this page ends the
answer"); generation reads it where a page starts, whose input is S_resp or the previous
page's last token, so the decision for a one-page answer sees only true inputs.

At scale, samples go through the same conversion job as any corpus: every segment is a
store document with id `SAMPLE#instruction`, `SAMPLE#context`, `SAMPLE#response`
(`segment_documents` writes them as a corpus; `vst convert --corpus segs.jsonl --out S`
encodes them with Ray) and `encoded_from_store(store, sample_id)` reads one sample back.
Small runs and tests encode in memory (`encode_sample`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from data.corpus.instructions import Instruction
from data.corpus.reader import Document

SEGMENTS = ("instruction", "context", "response")
SPECIAL = {"instruction": 0, "context": 1, "response": 2, "end": 3}
N_SPECIALS = len(SPECIAL)
ROLE = {"instruction": 0, "context": 1, "response": 2, "end": 3}


@dataclass
class EncodedSample:
    id: str
    family: str
    tokens: dict[str, torch.Tensor]  # segment -> [P, n, D] (context may have P = 0)
    texts: dict[str, list[str]]  # segment -> its pages' texts
    response: str = ""  # the reference answer


def encode_segment(codec, text: str) -> tuple[torch.Tensor, list[str]]:
    if not text:
        return torch.zeros(0, codec.n, codec.D), []
    return codec.encode_text(text)


def encode_sample(codec, s: Instruction) -> EncodedSample:
    tokens, texts = {}, {}
    for seg in SEGMENTS:
        tokens[seg], texts[seg] = encode_segment(codec, getattr(s, seg))
    return EncodedSample(s.id, s.family, tokens, texts, s.response)


def segment_documents(samples: Iterable[Instruction]) -> Iterable[Document]:
    """The store documents of samples: one per non-empty segment, id `SAMPLE#segment`."""
    for s in samples:
        for seg in SEGMENTS:
            if getattr(s, seg):
                yield Document(f"{s.id}#{seg}", getattr(s, seg), {"family": s.family})


def encoded_from_store(store, s: Instruction) -> EncodedSample:
    """A sample whose segments were converted into `store` (a data.store.Store)."""
    tokens, texts = {}, {}
    for seg in SEGMENTS:
        doc = f"{s.id}#{seg}"
        if doc not in store:
            tokens[seg], texts[seg] = torch.zeros(0, store.meta.n, store.meta.D), []
            continue
        pages = store.page_count(doc)
        tokens[seg] = torch.as_tensor(store.read_pages(doc, 0, pages)).float().view(
            pages, store.meta.n, store.meta.D)
        texts[seg] = [r.text for r in store.page_records(doc)]
    return EncodedSample(s.id, s.family, tokens, texts, s.response)


@dataclass
class Items:
    """A laid-out stream: vectors (zeros at specials), special index (-1: a vector), 3D or
    1D positions, role of each item, and the response pages (item index of the first
    token, its text)."""

    vec: torch.Tensor  # [N, D]
    special: torch.Tensor  # [N] long
    pos: torch.Tensor  # [N, 3] or [N]
    role: torch.Tensor  # [N] long (ROLE)
    resp_pages: list[tuple[int, str]]
    next_page: int  # the page index the next item would take


def layout(parts: Sequence[tuple[str, torch.Tensor | None, list[str] | None]], grid, D: int,
           rope: str = "3d", first_page: int = 0, first_item: int = 0) -> Items:
    """parts: (name, tokens [P, n, D] or None, page texts); name is a segment or "end".

    A segment is its opening special then its pages; "end" is the closing special.
    """
    vecs, spec, pos, role, resp_pages = [], [], [], [], []
    pg, cols = first_page, grid[1]
    count = first_item
    for name, toks, texts in parts:
        vecs.append(torch.zeros(1, D))
        spec.append(torch.tensor([SPECIAL[name]]))
        pos.append(torch.tensor([[pg, 0, 0]]))
        role.append(torch.tensor([ROLE[name]]))
        pg, count = pg + 1, count + 1
        if toks is None:
            continue
        n = toks.size(1)
        slots = torch.arange(n)
        for p in range(toks.size(0)):
            vecs.append(toks[p].float())
            spec.append(torch.full((n,), -1))
            pos.append(torch.stack((torch.full((n,), pg), slots // cols, slots % cols), -1))
            role.append(torch.full((n,), ROLE[name]))
            if name == "response":
                resp_pages.append((count, texts[p] if texts else ""))
            pg, count = pg + 1, count + n
    p3 = torch.cat(pos)
    if rope != "3d":
        p3 = torch.arange(first_item, count)
    return Items(torch.cat(vecs), torch.cat(spec), p3, torch.cat(role), resp_pages, pg)


def latest_pages(tokens: torch.Tensor, texts: list[str], k: int | None):
    """A segment's last k pages (all of them when k is None; none when k is 0)."""
    if k is None:
        return tokens, texts
    start = max(0, tokens.size(0) - max(0, k))
    return tokens[start:], texts[start:]


def sample_parts(e: EncodedSample, max_context_pages: int | None = None):
    ctx, ctx_texts = latest_pages(e.tokens["context"], e.texts["context"], max_context_pages)
    return [("instruction", e.tokens["instruction"], e.texts["instruction"]),
            ("context", ctx, ctx_texts),
            ("response", e.tokens["response"], e.texts["response"]), ("end", None, None)]


@dataclass
class SFTBatch:
    inputs: torch.Tensor  # [B, L, D]
    special: torch.Tensor  # [B, L] long, -1: the input is a vector
    positions: torch.Tensor  # [B, L, 3] or [B, L]
    targets: torch.Tensor  # [B, L, D]
    valid: torch.Tensor  # [B, L] bool: not padding
    resp: torch.Tensor  # [B, L] bool: the target is a response vector (the loss mask)
    stop_mask: torch.Tensor  # [B, L] bool: the stop head is trained here (= resp)
    stop_label: torch.Tensor  # [B, L] float: 1 on the targets of the last response page
    resp_pages: list[list[tuple[int, str]]]  # per row: (position of the page's first target, text)

    def to(self, device) -> "SFTBatch":
        return SFTBatch(**{k: v.to(device) if isinstance(v, torch.Tensor) else v
                           for k, v in self.__dict__.items()})


def collate_sft(samples: Sequence[EncodedSample], grid, D: int, rope: str = "3d",
                max_context_pages: int | None = None) -> SFTBatch:
    """Training rows: inputs are items[:-1], targets items[1:], right-padded."""
    rows = [layout(sample_parts(e, max_context_pages), grid, D, rope) for e in samples]
    L = max(len(r.special) for r in rows) - 1
    B = len(rows)
    out = dict(inputs=torch.zeros(B, L, D), special=torch.full((B, L), -1, dtype=torch.long),
               positions=torch.zeros((B, L, 3) if rope == "3d" else (B, L), dtype=torch.long),
               targets=torch.zeros(B, L, D), valid=torch.zeros(B, L, dtype=torch.bool),
               resp=torch.zeros(B, L, dtype=torch.bool),
               stop_mask=torch.zeros(B, L, dtype=torch.bool), stop_label=torch.zeros(B, L))
    pages = []
    for b, r in enumerate(rows):
        n = len(r.special) - 1
        out["inputs"][b, :n] = r.vec[:-1]
        out["special"][b, :n] = r.special[:-1]
        out["positions"][b, :n] = r.pos[1:]
        out["targets"][b, :n] = r.vec[1:]
        out["valid"][b, :n] = True
        tgt_role = r.role[1:]
        tgt_vec = r.special[1:] < 0
        out["resp"][b, :n] = (tgt_role == ROLE["response"]) & tgt_vec
        out["stop_mask"][b, :n] = out["resp"][b, :n]
        pages.append([(t0 - 1, text) for t0, text in r.resp_pages])  # item i is target i-1
        if pages[-1]:  # "this page is the response's last": every target of its last page
            t0 = pages[-1][-1][0]
            out["stop_label"][b, t0 : t0 + grid[0] * grid[1]] = 1.0
    return SFTBatch(**out, resp_pages=pages)
