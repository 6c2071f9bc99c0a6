"""A pointer (copy) head: the next item may be an exact copy of an earlier input.

Retrieval asks a model to reproduce something its context holds: the needle's line, a
variable's statement. A regression head can only approach a context token (the #23 pilot
reached cosine 0.91, and the codec reads 0.91 as the wrong digits); a pointer can return
it exactly. The head scores every earlier input position j <= t from position t
(query q(h_t), key k(h_j): h_j has read input j, so its key describes that input in
context) and a gate says whether to copy at all:

* vector models (the VST): the next token is input argmax_j if sigmoid(gate) > 1/2, else
  the regression head's vector. Trained with the pointer's NLL of the positions whose
  target equals an earlier input (cosine > MATCH_COS; k copies weigh 1/min(k, COPY_CAP))
  and the gate's BCE on "a match exists".
* text models (the same mechanism, so the comparison stays fair): the pointer-generator
  mixture p(w) = (1 - g) softmax(lm)(w) + g * sum_{j: x_j = w} a_j, trained by its NLL.

Only the scored positions (response tokens) query the pointer, so its cost is
`pointer_flops(queries, keys)`; the head's weights are part of the model's 6N.
Generation keeps the keys and values in a `PointerMemory` beside the KV cache.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# identical lines give identical codec tokens up to float noise; distinct lines of the same
# template (two needles with different keys) measure below 0.99 with `mini:small`
MATCH_COS = 0.999
GATE_INIT = -2.0  # sigmoid(-2) = 0.12: generate unless the head learns to copy
# a target found k times among the inputs weighs 1 / min(k, COPY_CAP) in the pointer's NLL.
# Validation answers of the #23 curriculum at 1e12 FLOPs (docs/experiments.md): equal weights
# 49.8%, 1/k 60.8%, 1/min(k, 32) 61.2% (blank rows keep a little weight)
COPY_CAP = 32.0
NEG = -1e9


class PointerHead(nn.Module):
    def __init__(self, d_model: int, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.q = nn.Linear(d_model, dim, bias=False)
        self.k = nn.Linear(d_model, dim, bias=False)
        self.gate = nn.Linear(d_model, 1)

    def reset_gate(self) -> None:
        nn.init.zeros_(self.gate.weight)
        nn.init.constant_(self.gate.bias, GATE_INIT)

    def scores(self, hq: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """hq [R, d] queries, keys [T, dim] (already projected) -> [R, T] logits."""
        return self.q(hq).float() @ keys.float().T / math.sqrt(self.dim)


def pointer_flops(queries: int, keys: int, dim: int) -> float:
    """Training FLOPs of the pointer's scores and softmax weights: q.k forward and its two
    backward matmuls, 2 FLOPs a multiply-add (the projections are in the model's 6N)."""
    return 6.0 * queries * keys * dim


def _rows(mask: torch.Tensor) -> list[torch.Tensor]:
    return [m.nonzero()[:, 0] for m in mask]


def vector_pointer_terms(head: PointerHead, h: torch.Tensor, inputs: torch.Tensor,
                         targets: torch.Tensor, ok: torch.Tensor, scored: torch.Tensor
                         ) -> dict[str, torch.Tensor]:
    """Pointer NLL (positions whose target is an earlier input) and gate BCE (every scored
    position). h [B, T, d]; inputs, targets [B, T, D]; ok [B, T]: input j is a real token
    (not padding, not a special); scored [B, T]: the loss positions."""
    nll, n_match, bce, n_scored = h.new_zeros(()), 0.0, h.new_zeros(()), 0
    hits, unique = [], []
    for b, q_idx in enumerate(_rows(scored)):
        if q_idx.numel() == 0:
            continue
        keys = head.k(h[b])  # [T, dim]
        logits = head.scores(h[b, q_idx], keys)  # [R, T]
        T = h.size(1)
        allowed = ok[b][None, :] & (torch.arange(T, device=h.device)[None, :] <= q_idx[:, None])
        with torch.no_grad():
            cos = F.normalize(targets[b, q_idx].float(), dim=-1) @ \
                F.normalize(inputs[b].float(), dim=-1).T
            match = (cos > MATCH_COS) & allowed
        has = match.any(-1)
        logp = torch.log_softmax(logits.masked_fill(~allowed, NEG), -1)
        if has.any():
            # a target found k times among the inputs weighs 1/min(k, COPY_CAP): a blank row
            # (hundreds of copies in any context) barely counts, the needle's line (one copy)
            # fully; with equal weights the blank rows were 31 of every 32 response tokens
            # and a VST at 95% pointer accuracy missed every needle (docs/experiments.md)
            k = match.sum(-1)[has].float().clamp(max=COPY_CAP)
            picked = torch.logsumexp(logp.masked_fill(~match, NEG), -1)[has]
            nll = nll - (picked / k).sum()
            n_match += float((1 / k).sum())
            with torch.no_grad():  # accuracy: the argmax is one of the matches
                top = logp.argmax(-1)
                hit = match.gather(1, top[:, None])[:, 0][has].float()
                hits.append(hit)
                unique.append(hit[k == 1])
        g = head.gate(h[b, q_idx])[:, 0].float()
        bce = bce + F.binary_cross_entropy_with_logits(g, has.float(), reduction="sum")
        n_scored += q_idx.numel()
    out = {"ptr": nll / max(n_match, 1e-9), "ptr_gate": bce / max(n_scored, 1)}
    out["ptr_acc"] = torch.cat(hits).mean() if hits else h.new_zeros(())
    uniq = torch.cat(unique) if unique else h.new_zeros(0)
    # accuracy on targets with exactly one copy in the context (a needle's line)
    out["ptr_acc_unique"] = uniq.mean() if uniq.numel() else h.new_zeros(())
    out["ptr_share"] = h.new_tensor(sum(float(x.numel()) for x in hits) / max(n_scored, 1))
    return out


def text_pointer_nll(head: PointerHead, h: torch.Tensor, lm_head: nn.Module,
                     inputs: torch.Tensor, targets: torch.Tensor, ok: torch.Tensor,
                     scored: torch.Tensor) -> torch.Tensor:
    """NLL of the pointer-generator mixture at the `scored` positions, in row-major order
    [R]. The LM head runs only there (what a text model needs for a response loss)."""
    out = []
    T = h.size(1)
    for b, q_idx in enumerate(_rows(scored)):
        if q_idx.numel() == 0:
            continue
        keys = head.k(h[b])
        logits = head.scores(h[b, q_idx], keys)
        allowed = ok[b][None, :] & (torch.arange(T, device=h.device)[None, :] <= q_idx[:, None])
        a = torch.softmax(logits.masked_fill(~allowed, NEG), -1) * allowed
        same = inputs[b][None, :] == targets[b, q_idx][:, None]
        copy_p = (a * same).sum(-1)
        g = head.gate(h[b, q_idx])[:, 0].float()
        gen = torch.log_softmax(lm_head(h[b, q_idx]).float(), -1)
        gen = gen.gather(1, targets[b, q_idx][:, None])[:, 0]
        out.append(-torch.logaddexp(F.logsigmoid(-g) + gen,
                                    F.logsigmoid(g) + torch.log(copy_p + 1e-9)))
    return torch.cat(out) if out else h.new_zeros(0)


class PointerMemory:
    """Keys and values of every input so far, for generation (one sequence). Each step
    appends to one tensor, so a step reads its memory without rebuilding it."""

    def __init__(self, head: PointerHead) -> None:
        self.head = head
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self.ok: torch.Tensor | None = None

    def extend(self, h: torch.Tensor, values: torch.Tensor, ok: torch.Tensor) -> None:
        """h [T, d] hidden states of positions whose inputs were values [T, ...]."""
        new = (self.head.k(h), values, ok.to(torch.bool))
        if self.keys is None:
            self.keys, self.values, self.ok = new
        else:
            self.keys, self.values, self.ok = (torch.cat([old, x]) for old, x in
                                               zip((self.keys, self.values, self.ok), new))

    def _gate(self, h_last: torch.Tensor) -> float:
        return torch.sigmoid(self.head.gate(h_last)[0].float()).item()

    def _logits(self, h_last: torch.Tensor) -> torch.Tensor:
        return self.head.scores(h_last[None], self.keys)[0].masked_fill(~self.ok, NEG)

    def next_vector(self, h_last: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        """The input with the highest pointer weight if the gate says copy, else `generated`."""
        if self._gate(h_last) <= 0.5:
            return generated
        return self.values[int(self._logits(h_last).argmax())].to(generated.dtype)

    def next_id(self, h_last: torch.Tensor, lm_logits: torch.Tensor) -> int:
        """Greedy id of the pointer-generator mixture."""
        gate = self._gate(h_last)
        a = torch.softmax(self._logits(h_last), -1) * self.ok
        p = (1 - gate) * torch.softmax(lm_logits.float(), -1)
        p = p.index_add(0, self.values.long(), gate * a)
        return int(p.argmax())
