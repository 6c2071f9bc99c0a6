"""Glyph-style reader: the context goes in as rendered pages through the frozen codec.

Two modes, always named in the runner's label and in `run_info.json`:

- `direct`: the codec decoder is a general language model (DeepSeek-OCR-2). It reads
  [BOS, instruction, the kept pages' visual tokens, question] and answers greedily
  (`codec.read`). Any backend offers this by meeting the contract's reading part
  (`codec.base.Codec`): `reads_prompts = True`, `read(tokens, before=..., after=...,
  max_new_tokens=...)` and `read_nll(tokens, after, continuation)`, tokens [P, n, D].
- `transcribe`: the codec decoder only transcribes pages (the `mini` codec). That cannot
  answer a question, so the honest fallback is: decode every kept page back to text,
  then answer from that transcript with a named *text* runner. The score then measures
  "codec as a lossy context channel" for that text model, not a visual reader; the
  label reads e.g. `codec-reader:mini[transcribe->hf:Qwen2.5-0.5B]`.

The budget is in visual tokens; the middle of the context is cut in whole pages.
"""

from __future__ import annotations

from typing import Any, Literal

from data.errors import BadInput
from eval.runners.common import Prompt, Runner, cut_at_stop, stop_strings
from eval.runners.visual import PageEncoder, Renderer

Mode = Literal["auto", "direct", "transcribe"]
TEXT_ROOM = 1024  # decoder positions kept for the text around the pages (direct mode)


def has_reader(codec: Any) -> bool:
    """Whether a codec's decoder can answer questions about its pages (the contract's
    `Codec.reads_prompts`: it implements `read` and `read_nll`)."""
    return codec.reads_prompts


class CodecReaderRunner(Runner):
    def __init__(
        self,
        codec: Any,
        *,
        answerer: Runner | None = None,
        max_visual_tokens: int | None = None,
        mode: Mode = "auto",
        renderer: Renderer | None = None,
        page_separator: str = "\n",
    ) -> None:
        self.codec = codec
        self.encoder = PageEncoder(codec, renderer)
        self.max_visual_tokens = max_visual_tokens
        self.mode = ("direct" if has_reader(codec) else "transcribe") if mode == "auto" else mode
        if self.mode == "direct" and not has_reader(codec):
            raise BadInput(
                f"codec {codec.name!r} only transcribes; use mode='transcribe' with an answerer"
            )
        if self.mode == "transcribe" and answerer is None:
            raise BadInput(
                f"codec {codec.name!r} cannot answer questions itself; pass a text runner as "
                "answerer "
                "(transcribe-then-answer fallback)"
            )
        self.answerer = answerer
        window = getattr(codec, "max_positions", None)
        if max_visual_tokens is None and self.mode == "direct" and window:
            # leave room in the decoder's window for instruction, question and answer
            self.max_visual_tokens = max(0, int(window) - TEXT_ROOM)
        # transcripts of consecutive pages: pages end at line breaks, so a newline keeps
        # words apart without inventing text
        self.page_separator = page_separator
        base = f"codec-reader:{codec.name}"
        self.name = (
            f"{base}[direct]" if self.mode == "direct" else f"{base}[transcribe->{answerer.name}]"
        )

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "runner": self.name,
            "kind": "codec-reader",
            "mode": self.mode,
            "codec": self.codec.name,
            "codec_version": self.codec.version,
            "tokens_per_page": self.codec.n,
            "max_visual_tokens": self.max_visual_tokens,
            "truncation": "middle, in whole pages, counted in visual tokens",
        }
        if self.mode == "transcribe":
            info["fallback"] = (
                "the codec decoder only transcribes; kept pages are decoded to text and the "
                "answer comes from the text runner named in 'answerer'"
            )
            info["answerer"] = self.answerer.describe()
        return info

    def encode(self, context: str):
        return self.encoder.encode_text(context, self.max_visual_tokens)

    def transcribe(self, context: str) -> str:
        ctx = self.encode(context)
        if not ctx.pages:
            return ""
        import torch

        with torch.no_grad():
            texts = self.codec.decode(ctx.tokens)
        return self.page_separator.join(texts)

    def predict(self, prompt: Prompt, *, dataset: str, max_new_tokens: int) -> str:
        if self.mode == "transcribe":
            read = prompt.with_context(self.transcribe(prompt.context))
            return self.answerer.predict(read, dataset=dataset, max_new_tokens=max_new_tokens)
        ctx = self.encode(prompt.context)
        out = self.codec.read(
            ctx.tokens, before=prompt.before, after=prompt.after, max_new_tokens=max_new_tokens
        )
        return cut_at_stop(out, stop_strings(dataset))

    # lm-eval: the whole request context is what gets rendered.
    def loglikelihood(self, context: str, continuation: str) -> tuple[float, bool]:
        """Transcribe mode: the answerer's likelihood given the transcript. Direct mode
        (the codec reads prompts): -`codec.read_nll` of the continuation after the
        context's pages. is_greedy: False."""
        if self.mode == "transcribe":
            return self.answerer.loglikelihood(self.transcribe(context), continuation)
        return -self.codec.read_nll(self.encode(context).tokens, "", continuation), False
