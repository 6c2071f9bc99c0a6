"""Chat with an instruction-tuned VST: text in, text out through the frozen codec.

The user's text is rendered and encoded; the whole conversation so far is prefilled into
the KV cache; the response is generated one page of visual tokens at a time (the
regression head's prediction, or a sample of the energy head), each page is decoded by
the codec as soon as it is complete, and the stop head ends the answer:

    vst chat runs/sft                                  # interactive, earlier turns kept
    vst chat runs/sft --prompt "What is the value of the key orbit-1234?" --context-file doc.txt
    echo "Summarise." | vst chat runs/sft              # one-shot from stdin
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from data.errors import BadCheckpoint
from vst.generate import _predict
from vst.model import VST
from vst.pointer import PointerMemory
from vst.sft_data import encode_segment, latest_pages, layout


class NotSFTModel(BadCheckpoint):
    """A checkpoint without the special vectors and stop head of `vst sft`."""


class CodecMismatch(BadCheckpoint):
    """A codec whose (D, n, version) differ from the checkpoint's."""


def load_chat_model(checkpoint: str | Path, device: str = "cpu", codec_spec: str | None = None,
                    codec_mode: str | None = None):
    """(model, codec, state) of an SFT checkpoint; clear errors for anything else."""
    from vst.generate import load_model
    from vst.sft import codec_of_state, codec_record

    model, state = load_model(checkpoint, device)
    if "sft" not in state or not model.cfg.specials or model.cfg.modality != "vector":
        raise NotSFTModel(f"{checkpoint} is not an instruction-tuned VST (no special vectors or "
                          "stop head); make one with: vst sft --base RUN --data FILE --out DIR")
    codec = codec_of_state(state, codec_spec, codec_mode)
    want, got = state["sft"]["codec"], codec_record(codec)
    for key in ("D", "n", "version"):
        if str(want[key]) != str(got[key]):
            raise CodecMismatch(f"codec {got['spec']}:{got['mode']} has {key}={got[key]}; the "
                                f"checkpoint was tuned through {key}={want[key]}")
    return model, codec, state


@dataclass
class Answer:
    text: str
    pages: list[str]
    stopped: bool  # the stop head ended it (else the page cap did)
    positions: int  # visual positions of the whole conversation after this answer
    text_tokens: int  # cl100k tokens of the same text (instructions, contexts, answers)
    seconds: float
    tokens: torch.Tensor | None = None  # the response's visual tokens [pages, n, D]


@dataclass
class ChatSession:
    model: VST
    codec: object
    max_pages: int = 4  # response pages at most
    max_context_pages: int | None = None  # keep only the context's last K pages (truncation)
    stop_threshold: float = 0.5
    seed: int = 0
    max_new_tokens: int | None = None  # the codec reads at most this many per page (None: all)
    history: list = field(default_factory=list)  # (segment, tokens, texts) of earlier turns
    history_text: list[str] = field(default_factory=list)

    def reset(self) -> None:
        self.history, self.history_text = [], []

    @torch.no_grad()
    def stream(self, instruction: str, context: str = "") -> Iterator[str]:
        """Decoded response pages as they come; `self.last` is the finished `Answer`."""
        t0 = time.perf_counter()
        m, cfg = self.model, self.model.cfg
        dev = next(m.parameters()).device
        n, D = cfg.tokens_per_page, cfg.D
        parts = list(self.history)
        parts.append(("instruction", *encode_segment(self.codec, instruction)))
        # a truncated reader keeps the context's latest pages
        ctx = latest_pages(*encode_segment(self.codec, context), self.max_context_pages)
        parts.append(("context", *ctx))
        parts.append(("response", None, None))
        items = layout(parts, cfg.grid, D, cfg.rope)
        N = len(items.special)
        pg = items.next_page

        def pos_of(page: int, slot: int, index: int) -> torch.Tensor:
            if cfg.rope != "3d":
                return torch.tensor([[index]], device=dev)
            return torch.tensor([[[page, slot // cfg.grid[1], slot % cfg.grid[1]]]], device=dev)

        # prefill: position t carries the position of item t+1; the last one the first
        # response token's
        nxt = pos_of(pg, 0, N)[0]
        pos = torch.cat([items.pos[1:].to(dev), nxt]) if cfg.rope == "3d" else \
            torch.arange(1, N + 1, device=dev)
        cache = m.new_cache(1, N + self.max_pages * n + 1)
        h = m(items.vec[None].to(dev), torch.zeros(1, N, dtype=torch.bool, device=dev),
              pos[None], cache=cache, special=items.special[None].to(dev))
        memory = None
        if cfg.pointer:  # answers may be exact copies of earlier tokens (vst/pointer.py)
            memory = PointerMemory(m.pointer)
            memory.extend(h[0], items.vec.to(dev), items.special.to(dev) < 0)
        h = h[:, -1:]
        gen = torch.Generator().manual_seed(self.seed)
        pages, texts, stopped = [], [], False
        count = N
        for p in range(self.max_pages):
            # "the page about to be generated is the last": read where the page starts (see
            # vst/sft_data.py), acted on once the page is out
            ends = torch.sigmoid(m.stop(h)[0, -1, 0]).item() > self.stop_threshold
            toks = []
            for j in range(n):
                x = _predict(m, h, gen)  # [1, 1, D]
                if memory is not None:
                    x = memory.next_vector(h[0, -1], x[0, 0])[None, None]
                toks.append(x[0, 0].float().cpu())
                count += 1
                last = j == n - 1
                # the input after the page's last token predicts the next page (or the end)
                q = pos_of(pg + p + 1, 0, count) if last else pos_of(pg + p, j + 1, count)
                h = m(x, torch.zeros(1, 1, dtype=torch.bool, device=dev), q, cache=cache)
                if memory is not None:
                    memory.extend(h[0], x[0], torch.ones(1, dtype=torch.bool, device=dev))
            page = torch.stack(toks)
            pages.append(page)
            text = self.codec.decode(page[None], max_new_tokens=self.max_new_tokens)[0]
            texts.append(text)
            yield text
            if ends:
                stopped = True
                break
        resp = torch.stack(pages)
        answer = "".join(texts)
        self.history = parts[:-1] + [("response", resp, texts), ("end", None, None)]
        self.history_text += [instruction, context, answer]
        used = count + 1  # the closing special
        self.last = Answer(answer, texts, stopped, used,
                           sum(self.codec.count_text_tokens(t) for t in self.history_text),
                           time.perf_counter() - t0, resp)

    def ask(self, instruction: str, context: str = "") -> Answer:
        for _ in self.stream(instruction, context):
            pass
        return self.last
