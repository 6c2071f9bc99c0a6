"""Fast greedy reading for the mini causal reader: the CTC read-out drafts every line, the
reader checks a whole draft in one teacher-forced pass, and the result is the reader's
own greedy read, character for character.

Why: plain greedy decoding (`CausalReader.greedy`) runs one step per character for ~80
steps, and each step of a 16-page batch re-gathers the whole KV cache as lines finish; on
the 2-core dev machine that gather was 53% of decode time and the step loop's small ops
most of the rest (torch profiler, `small`, 16 pages). The CTC head reads a page from the
same frames almost for free, and is right about 98% of the time, so most lines need one
or two passes instead of ~40 steps.

Rounds. Each line keeps the characters it has settled on. A round feeds, for every line
still reading, its last settled character followed by a draft of what comes next, at the
line's own positions, attending to the cached keys and values of the prefix and of every
settled character before it (the cache is written in place). The reader's argmax at each
fed position is the next character; a draft character is taken while it equals the
argmax before it, and at the first disagreement the argmax is taken instead and the
round ends for that line. The draft after a disagreement is the CTC reading from the
next character's cell on (monospace: a character in cell c has frames 2c and 2c+1; the
cell is the widths of the characters before it summed, `Vocab.widths`), which re-aligns
after a missed or doubled character.

Exactness. The reader's logits here come from batched matmuls where greedy decoding
uses one-row steps, so they differ in the last bits: at most 1.7e-5 on ~12,700 settled
positions of the test pages in each mode (1.9e-5 on 20,328 positions of 16 held-out
`small` pages; the logits reach 21). The argmax can only differ where the top two logits
are closer than twice that. Every settled character must win by at least `MARGIN` (15x
that bound); where one does not, the batch is read by plain greedy decoding instead, so
the result is always the greedy read. Near-ties are rare: none on the held-out `small`
and `base` pages (closest 3.3e-3), one in `tiny` (8.9e-5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from codec.mini import vocab
from codec.mini.reader import BOS, EOS, CausalReader

MARGIN = 5e-4  # see "Exactness" above
CAP_AFTER = 3  # see `_draft_and_verify`
# After a miss a line is fed REFEED draft characters, doubling while all are taken: the
# rest of a draft that missed once is less sure (16 pages: 2% fewer characters fed than
# feeding the whole rest; 8 and 16 were within the machine's noise).
REFEED = 16
# Lines verified together: 64 (two pages) kept the cache and activations in the CPU's
# caches; a 16-page batch at once (512 lines) took 1.9x as long (best of 3: 2.07 s vs
# 2.63 s, medians 2.2 vs 4.2 s; 32: 2.1, 128: 1.8-3.1 s). A near-tie in any group still
# sends the whole batch to plain greedy decoding, so the batch's read stays the same.
GROUP = 64
# After the first round, a batch whose characters so far almost never came from the
# draft (an untrained codec's: 0-1%; shipped `tiny`, the weakest: 66% on its worst test
# page) is read by plain greedy decoding: the verified rounds would cost more.
GIVE_UP_BELOW = 0.1


@dataclass
class ReadStats:
    """What a fast read did (tests and the benchmark read these)."""

    lines: int = 0
    chars: int = 0  # characters read (EOS excluded)
    drafted: int = 0  # draft characters fed to the reader
    accepted: int = 0  # draft characters the reader agreed with
    rounds: int = 0
    fallbacks: int = 0  # batches read by plain greedy decoding instead
    gave_up: int = 0  # ... of them because their drafts were hopeless (else: a near-tie)
    min_margin: float = float("inf")  # smallest top-two logit gap of a settled character


SPACE, NEWLINE, TAB = vocab.encode(" \n\t")  # the same ids in every vocabulary


def ctc_drafts(frame_logits: torch.Tensor, widths: list[int] | None = None
               ) -> list[tuple[list[int], list[int]]]:
    """Each line's draft: its best-path characters, each placed in the cell it was seen in
    (monospace: a character in cell c has frames 2c and 2c+1), and the frame of each.
    frame_logits [N, T, classes] -> [(ids, frames)] per line; `widths`: cells per class
    (`Vocab.widths`; default one each).

    Best-path decoding merges a run of spaces into one (CTC needs a blank between equal
    neighbours, and blank cells read as blanks), and the reader then disagreed once per
    missing space: a table row of held-out-like structured text took 41 rounds. Cells
    skipped between two characters are spaces, so the draft fills them in (not before a
    line end, whose frame is not a cell, nor after a tab, which spans cells; a wide
    character's second cell is its own).
    """
    ids = frame_logits.argmax(-1)
    keep = ids != vocab.BLANK
    keep[:, 1:] &= ids[:, 1:] != ids[:, :-1]
    rows, cols = keep.nonzero(as_tuple=True)
    chars = ids[rows, cols].tolist()
    out = [([], []) for _ in range(len(ids))]
    for r, f, ch in zip(rows.tolist(), cols.tolist(), chars):
        seq, frames = out[r]
        if seq and ch != NEWLINE and seq[-1] != TAB:
            after = frames[-1] // 2 + (1 if widths is None else widths[seq[-1]])
            for cell in range(after, f // 2):
                seq.append(SPACE)
                frames.append(2 * cell)
        seq.append(ch)
        frames.append(f)
    return out


def _rotation(pos: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Unit complex numbers that rotate each channel pair at positions pos [...] -> [..., hd/2]."""
    ang = pos.float()[..., None] * inv_freq
    return torch.polar(torch.ones_like(ang), ang)


def _rotate(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """`reader.rotary` as one complex product (channel pairs (a, b) are a + ib): the strided
    real form was 15% of the fast path's time (profiler); the same rotation up to rounding."""
    z = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(z * rot).flatten(-2)


@torch.no_grad()
def fast_greedy(reader: CausalReader, cells: torch.Tensor,
                drafts: list[tuple[list[int], list[int]]], max_len: int,
                stats: ReadStats | None = None) -> list[list[int]]:
    """`reader.greedy(cells, max_len)` exactly, verified from CTC drafts (module doc)."""
    stats = stats if stats is not None else ReadStats()
    ids = []
    for i in range(0, len(cells), GROUP):
        part = _draft_and_verify(reader, cells[i:i + GROUP], drafts[i:i + GROUP], max_len, stats)
        if part is None:
            ids = None
            break
        ids += part
    if ids is None:
        stats.fallbacks += 1
        ids = reader.greedy(cells, max_len)
    stats.lines += len(ids)
    stats.chars += sum(map(len, ids))
    return ids


def _prefix_cache(reader: CausalReader, cells: torch.Tensor, room: int) -> list[torch.Tensor]:
    """Keys and values [2, N, H, P + room, hd] of every layer: the prefix's, and zeros for
    `room` character positions after it."""
    N, P = cells.shape[:2]
    x = reader.prefix(cells)
    rot = _rotation(torch.arange(P, device=x.device), reader.inv_freq)  # [P, hd/2]
    cache = []
    for i, block in enumerate(reader.blocks):
        H = block.heads
        q, k, v = block.qkv(block.n1(x)).view(N, P, 3, H, -1).unbind(2)  # [N, P, H, hd]
        rot_h = rot[:, None]
        kv = x.new_zeros(2, N, H, P + room, k.shape[-1])
        kv[0, :, :, :P] = _rotate(k, rot_h).transpose(1, 2)
        kv[1, :, :, :P] = v.transpose(1, 2)
        cache.append(kv)
        if i + 1 < len(reader.blocks):  # the last layer's prefix outputs are never read
            att = F.scaled_dot_product_attention(_rotate(q, rot_h).transpose(1, 2),
                                                 kv[0, :, :, :P], kv[1, :, :, :P])
            x = block.finish(x, att)
    return cache


def _layer(block, h: torch.Tensor, kv: torch.Tensor, where: tuple, rot: torch.Tensor,
           mask: torch.Tensor, rows: torch.Tensor | None, P: int) -> torch.Tensor:
    """One reader block on packed character positions h [T, dim] (the T real positions of
    A lines, no padding): keys and values go into the cache in place; queries are laid
    out [A, H, W, hd] for attention alone, so padding costs attention, not the matmuls
    (padding to the longest chunk fed ~1.8x the real positions through every matmul)."""
    T, dim = h.shape
    H = block.heads
    row, arow, col, cpos = where  # [T] each: cache row, active row, column in chunk, position
    A, _, W, K = mask.shape
    q, k, v = block.qkv(block.n1(h)).view(T, 3, H, dim // H).unbind(1)  # [T, H, hd]
    kv[0, row, :, P + cpos] = _rotate(k, rot)
    kv[1, row, :, P + cpos] = v
    qp = h.new_zeros(A, W, H, dim // H)
    qp[arow, col] = _rotate(q, rot)
    keys = kv[:, :, :, :K] if rows is None else kv[:, rows, :, :K]
    att = F.scaled_dot_product_attention(qp.transpose(1, 2), keys[0], keys[1], attn_mask=mask)
    h = h + block.out(att.transpose(1, 2)[arow, col].reshape(T, dim))
    return h + block.mlp(block.n2(h))


def _draft_and_verify(reader, cells, drafts, max_len, stats) -> list[list[int]] | None:
    N, P = cells.shape[:2]
    dev = cells.device
    cache = _prefix_cache(reader, cells, max_len)  # chunks never pass position max_len - 1
    out: list[list[int]] = [[] for _ in range(N)]
    widths_t = reader.widths.cpu()
    widths = widths_t.tolist()
    column = [0] * N  # the cell of each line's next character (its rotary position)
    active = list(range(N))  # lines still reading (cache rows)
    dptr = [0] * N  # next draft index of each line
    # Draft characters fed per line: all of them at first, REFEED after a miss (doubling
    # while taken), and once a line's draft has missed at its first character CAP_AFTER
    # times, 2a + 1 after a round that took a of them, so a hopeless draft costs about
    # what plain greedy does (feeding the whole rest every round made a random-init
    # codec, whose drafts never match, ~10x slower than greedy).
    width = [max_len] * N
    misses = [0] * N
    first, took0 = True, stats.accepted
    while active:
        stats.rounds += 1
        chunks = []
        for n in active:
            s = len(out[n])
            d = drafts[n][0][dptr[n]:dptr[n] + min(max_len - 1 - s, width[n])]
            chunks.append([out[n][-1] if out[n] else BOS] + d)
            stats.drafted += len(d)
        A, W = len(active), max(map(len, chunks))
        lens = torch.tensor([len(c) for c in chunks])
        arow = torch.repeat_interleave(torch.arange(A), lens)
        col = torch.arange(int(lens.sum())) - torch.repeat_interleave(lens.cumsum(0) - lens, lens)
        starts = torch.tensor([len(out[n]) for n in active])
        cpos = starts[arow] + col
        inp_cpu = torch.tensor([t for c in chunks for t in c])
        # rotary positions: the cell each fed step's character starts in (the line's next
        # cell, plus the widths of the chunk's characters before it; = cpos without wide forms)
        w = widths_t[inp_cpu].masked_fill(col == 0, 0).cumsum(0)
        rpos = torch.tensor([column[n] for n in active])[arow] + w - w[lens.cumsum(0) - lens][arow]
        rows = torch.tensor(active) if A < N else None
        row = arow if rows is None else rows[arow]
        inp = inp_cpu.to(dev)
        K = P + int(cpos.max()) + 1
        key = torch.arange(K)
        qpos = starts[:, None] + torch.arange(W)  # [A, W]
        mask = ((key < P) | (key - P <= qpos[..., None]))[:, None].to(dev)  # [A, 1, W, K]
        where = (row.to(dev), arow.to(dev), col.to(dev), cpos.to(dev))
        rot = _rotation(rpos.to(dev), reader.inv_freq)[:, None]  # [T, 1, hd/2]
        h = reader.embed(inp)
        for block, kv in zip(reader.blocks, cache):
            h = _layer(block, h, kv, where, rot, mask, None if rows is None else rows.to(dev), P)
        logits = reader.head(reader.norm(h))  # [T, V]
        top = logits.topk(2, dim=-1)
        best = top.indices[:, 0].tolist()
        margin = (top.values[:, 0] - top.values[:, 1]).tolist()
        keep, t0 = [], 0
        for r, n in enumerate(active):
            c = chunks[r]
            done = False
            had = len(out[n])
            for w in range(len(c)):
                m = margin[t0 + w]
                stats.min_margin = min(stats.min_margin, m)
                if m < MARGIN:
                    return None
                g = best[t0 + w]
                if g == EOS:
                    done = True
                    break
                out[n].append(g)
                column[n] += widths[g]
                if len(out[n]) >= max_len:
                    done = True
                    break
                if w + 1 < len(c) and c[w + 1] == g:
                    stats.accepted += 1
                    dptr[n] += 1
                    continue
                # rejected (or the draft ran out): re-anchor the draft at the next cell
                nxt, frames = column[n], drafts[n][1]
                j = dptr[n]
                # (a draft character seen from frame 2 * nxt on: 6 rounds for 16 pages,
                # from 2 * nxt - 1 the same, from 2 * nxt + 1 on 70)
                while j < len(frames) and frames[j] < 2 * nxt:
                    j += 1
                dptr[n] = j
                break
            t0 += len(c)
            if not done:
                keep.append(n)
                took = len(out[n]) - had - 1  # draft characters taken this round
                misses[n] += took == 0 and len(c) > 1
                if misses[n] >= CAP_AFTER:
                    width[n] = 2 * took + 1
                elif took == len(c) - 1:  # the whole chunk was taken: feed twice as much
                    width[n] = 2 * width[n]
                else:  # a miss: the rest of the draft is less sure
                    width[n] = REFEED
        active = keep
        if first:
            first = False
            made, took = sum(map(len, out)), stats.accepted - took0
            if made >= 32 and took < GIVE_UP_BELOW * made:
                stats.gave_up += 1
                return None
    return out


@torch.no_grad()
def read_lines(net, tokens: torch.Tensor, stats: ReadStats | None = None) -> list[list[str]]:
    """`net.read_lines(tokens)` (greedy) exactly, fast: [B][n_lines] line texts."""
    feats = net.readout.features(tokens.float())  # what `net.line_cells` computes, once
    drafts = ctc_drafts(net.readout.head(feats), net.cfg.chars.widths)  # the CTC head's
    cells = CausalReader.cell_features(feats)
    ids = fast_greedy(net.reader, cells, drafts, cells.shape[1] + 4, stats)
    lines = [net.cfg.chars.decode(s) for s in ids]
    L = net.cfg.geometry.n_lines
    return [lines[i:i + L] for i in range(0, len(lines), L)]
