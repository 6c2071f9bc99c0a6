"""The Visual-Symbolic Transformer: a decoder-only transformer over continuous vectors.

Single-device module; DDP is applied from outside. The same trunk with an embedding
table and an LM head is the text baseline (`modality="text"`), so the two differ only in
what goes in and what comes out.

Input convention (BOS-style, shared by both modalities): position t *predicts* token t.
Its input is token t-1, or the learned document-start vector when token t opens a
document, so every token of a document, the first included, is predicted.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vst.config import ModelConfig
from vst.heads import EnergyHead, MixtureHead, RegressionHead
from vst.pointer import PointerHead
from vst.rope import apply_rope, cos_sin, rope_angles


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.size(-1),), self.weight, self.eps)


class KVCache:
    """Preallocated keys/values for all layers; `pos` is how many positions are filled."""

    def __init__(self, cfg: ModelConfig, batch: int, max_len: int, device, dtype) -> None:
        shape = (cfg.depth, batch, cfg.n_kv_heads, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.pos = 0

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.pos + k.size(2)
        if end > self.k.size(3):
            raise ValueError(f"KV cache full ({self.k.size(3)} positions)")
        self.k[layer, :, :, self.pos : end] = k
        self.v[layer, :, :, self.pos : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer, self.h, self.hkv, self.hd = layer, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q = nn.Linear(cfg.d_model, self.h * self.hd, bias=False)
        self.kv = nn.Linear(cfg.d_model, 2 * self.hkv * self.hd, bias=False)
        self.o = nn.Linear(self.h * self.hd, cfg.d_model, bias=False)
        # QK-norm keeps attention logits bounded without tuning the learning rate
        self.q_norm, self.k_norm = RMSNorm(self.hd), RMSNorm(self.hd)

    def forward(self, x, cos, sin, mask, cache: KVCache | None) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q(x).view(B, T, self.h, self.hd).transpose(1, 2)
        k, v = self.kv(x).view(B, T, 2, self.hkv, self.hd).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(self.q_norm(q), cos, sin), apply_rope(self.k_norm(k), cos, sin)
        q, k = q.to(v.dtype), k.to(v.dtype)  # under autocast the norms may return fp32
        if cache is not None:
            k, v = cache.update(self.layer, k, v)
            k, v = k.to(q.dtype), v.to(q.dtype)  # the cache may be kept in another precision
        is_causal = isinstance(mask, str)  # "causal": let SDPA pick its fused kernel
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=None if is_causal else mask, is_causal=is_causal, enable_gqa=True
        )
        return self.o(y.transpose(1, 2).reshape(B, T, self.h * self.hd))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.kind = cfg.mlp
        hidden = int(cfg.mlp_ratio * cfg.d_model)
        if self.kind == "swiglu":
            hidden = int(2 * hidden / 3)  # same parameter count as a 4x ReLU MLP
            self.up = nn.Linear(cfg.d_model, 2 * hidden, bias=False)
        else:
            self.up = nn.Linear(cfg.d_model, hidden, bias=False)
        self.down = nn.Linear(hidden, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "swiglu":
            gate, up = self.up(x).chunk(2, dim=-1)
            return self.down(F.silu(gate) * up)
        return self.down(F.relu(self.up(x)).square())


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.norm1, self.attn = RMSNorm(cfg.d_model), Attention(cfg, layer)
        self.norm2, self.mlp = RMSNorm(cfg.d_model), MLP(cfg)

    def forward(self, x, cos, sin, mask, cache) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin, mask, cache)
        return x + self.mlp(self.norm2(x))


GATE_INIT_LOGIT = -2.0  # pi starts at 0.12: mostly the decoder's prior


class VST(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        if cfg.modality == "vector":
            self.inp = nn.Linear(cfg.D, d)
            self.head = (EnergyHead(cfg) if cfg.head == "energy" else
                         MixtureHead(cfg) if cfg.mixture else RegressionHead(cfg))
            if cfg.aux_head:
                self.aux = nn.Linear(d, cfg.D)
            if cfg.gate:
                self.gate = nn.Linear(d, 1)
        else:
            self.embed = nn.Embedding(cfg.vocab_size, d)
            self.lm_head = nn.Linear(d, cfg.vocab_size, bias=False)
        self.doc_start = nn.Parameter(torch.zeros(d))
        if cfg.specials:
            # segment markers of instruction tuning (vst/sft_data.py: SPECIAL) used as inputs,
            # and the stop head ("this page ends the answer"), trained on response positions
            self.special = nn.Embedding(cfg.specials, d)
            self.stop = nn.Linear(d, 1)
        if cfg.pointer:
            self.pointer = PointerHead(d, cfg.pointer)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.depth))
        self.norm = RMSNorm(d)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        std = self.cfg.d_model**-0.5
        for name, p in self.named_parameters():
            if p.dim() < 2:
                continue
            if name.endswith(("attn.o.weight", "mlp.down.weight")):
                # residual branches start small so depth does not blow up the stream
                nn.init.normal_(p, std=std / math.sqrt(2 * self.cfg.depth))
            elif name.startswith("embed"):
                nn.init.normal_(p, std=1.0)
            else:
                nn.init.normal_(p, std=p.size(1) ** -0.5)
        for name, p in self.named_parameters():
            if p.dim() == 1 and name.endswith("bias"):
                p.zero_()
        nn.init.normal_(self.doc_start, std=1.0)
        if self.cfg.specials:  # like doc_start: unit-scale input vectors
            nn.init.normal_(self.special.weight, std=1.0)
        if self.cfg.modality == "vector" and self.cfg.head_init == "zero":
            # predictions start at the null token, so decoder-CE starts from the decoder's
            # prior instead of from random prompts (which decode worse than the prior)
            last = self.head.proj if hasattr(self.head, "proj") else self.head.out
            last.weight.zero_()
        if self.cfg.modality == "vector" and self.cfg.gate:
            self.gate.weight.zero_()
            self.gate.bias.fill_(GATE_INIT_LOGIT)
        if self.cfg.pointer:
            self.pointer.reset_gate()

    def num_params(self, trunk_only: bool = False) -> int:
        heads = ("inp.", "embed.", "lm_head.", "head.", "aux.", "gate.", "special.", "stop.",
                 "pointer.")
        skip = heads if trunk_only else ()
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith(skip))

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (6N + attention), for MFU and text/VST comparisons."""
        c = self.cfg
        # scores and values: 2 matmuls forward, 5 backward (the scores are recomputed), 2
        # FLOPs a multiply-add, half of them under the causal kernel; counting 4 backward
        # undercounted a 1,024-position text model by 4% (tests/test_flops.py)
        attn = 14 * c.depth * c.n_heads * c.head_dim * seq_len / 2
        table = self.embed.weight.numel() if c.modality == "text" else 0  # a lookup, no matmul
        extra = 0
        if c.modality == "vector" and c.head == "energy":
            # training runs the energy head's sample path once per sample (cond once), so
            # its weights count energy_samples times; 6N alone undercounted a `tiny` energy
            # VST by 2.1x (checked with FlopCounterMode in tests/test_flops.py)
            per_sample = sum(
                p.numel() for n, p in self.head.named_parameters() if not n.startswith("cond.")
            )
            extra = (c.energy_samples - 1) * per_sample
        # the input projection's input needs no gradient: 4, not 6, FLOPs a weight
        inp = 2 * self.inp.weight.numel() if c.modality == "vector" else 0
        return 6 * (self.num_params() - table + extra) - inp + attn

    def embed_inputs(self, inputs: torch.Tensor, bos: torch.Tensor,
                     special: torch.Tensor | None = None) -> torch.Tensor:
        x = self.inp(inputs) if self.cfg.modality == "vector" else self.embed(inputs)
        x = torch.where(bos[..., None], self.doc_start.to(x.dtype), x)
        if special is not None:  # [B, T] long: a special vector's index, -1 where none
            marked = special >= 0
            x = torch.where(marked[..., None], self.special(special.clamp(min=0)).to(x.dtype), x)
        return x

    def forward(
        self,
        inputs: torch.Tensor,
        bos: torch.Tensor,
        positions: torch.Tensor,
        doc_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        special: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states [B, T, d_model].

        inputs: [B, T, D] vectors or [B, T] ids; bos: [B, T] positions whose input is the
        document-start vector; positions: [B, T] (1D) or [B, T, 3] (page, row, col);
        doc_ids: [B, T] document ordinal, for masking attention across documents;
        special: [B, T] index of a special input vector (models with `specials`), -1: none.
        """
        x = self.embed_inputs(inputs, bos, special)
        cos, sin = cos_sin(
            rope_angles(positions, self.cfg.head_dim, self.cfg.rope_base, self.cfg.rope_sections),
            x.dtype,
        )
        mask = self._mask(x.size(1), doc_ids, cache, x.device)
        for block in self.blocks:
            x = block(x, cos, sin, mask, cache)
        if cache is not None:
            cache.pos += x.size(1)
        return self.norm(x)

    def _mask(self, T: int, doc_ids, cache: KVCache | None, device) -> torch.Tensor | str | None:
        past = cache.pos if cache is not None else 0
        one_doc = (
            doc_ids is None or not self.cfg.doc_mask or bool((doc_ids == doc_ids[:, :1]).all())
        )
        if past == 0 and one_doc:
            return "causal"
        if past > 0 and T == 1:
            return None  # one new query sees the whole cache
        q = torch.arange(past, past + T, device=device)[:, None]
        mask = q >= torch.arange(past + T, device=device)[None, :]
        if not one_doc and past == 0:
            mask = mask & (doc_ids[:, :, None] == doc_ids[:, None, :])[:, None]
        return mask

    def new_cache(self, batch: int, max_len: int, dtype: torch.dtype | None = None) -> KVCache:
        p = self.doc_start
        return KVCache(self.cfg, batch, max_len, p.device, dtype or p.dtype)
