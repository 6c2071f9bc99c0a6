"""Glyph-style reader: the context goes in as rendered pages through the frozen codec.

Two modes, always named in the runner's label and in `run_info.json`:

- `direct`: the codec decoder is a general language model (DeepSeek-OCR-2). It reads
  [BOS, instruction, the kept pages' visual tokens, question] and answers greedily
  (`DeepseekReader`). Any other backend can offer this by implementing
  `codec.read(tokens, before=..., after=..., max_new_tokens=...)`, tokens [P, n, D].
- `transcribe`: the codec decoder only transcribes pages (the `mini` codec). That cannot
  answer a question, so the honest fallback is: decode every kept page back to text,
  then answer from that transcript with a named *text* runner. The score then measures
  "codec as a lossy context channel" for that text model, not a visual reader; the
  label reads e.g. `codec-reader:mini[transcribe->hf:Qwen2.5-0.5B]`.

The budget is in visual tokens; the middle of the context is cut in whole pages.
"""

from __future__ import annotations

from typing import Any, Literal

from eval.runners.common import Prompt, Runner, cut_at_stop, stop_strings
from eval.runners.visual import PageEncoder, Renderer

Mode = Literal["auto", "direct", "transcribe"]
TEXT_ROOM = 1024  # decoder positions kept for the text around the pages (direct mode)


def has_reader(codec: Any) -> bool:
    """Whether a codec's decoder can answer questions about its pages."""
    return reader_for(codec) is not None


def reader_for(codec: Any) -> Any:
    """An object with `read(...)` (and `nll(...)`) for codecs whose decoder is a general LM."""
    if getattr(codec, "reads_prompts", False):
        return codec
    if getattr(codec, "name", None) == "deepseek-ocr2":
        return DeepseekReader(codec)
    return None


class DeepseekReader:
    """DeepSeek-OCR-2's 3B decoder as a reader: [BOS, instruction, pages' tokens, question].

    Built from the backend's own pieces (its embedding, separator handling and NLL helper),
    so the visual tokens enter exactly as in OCR; only the text around them changes.
    """

    def __init__(self, codec: Any) -> None:
        self.codec = codec

    def _parts(self, tokens, before: str, after: str):
        import torch

        c = self.codec
        rows = c._visual_rows(tokens, None) if len(tokens) else []
        vis = torch.cat(rows) if rows else torch.zeros(0, c.D, device=c.device, dtype=c.dtype)
        return [c.bos_id] + c._ids(before), vis, c._ids(after)

    def read(self, tokens, *, before: str, after: str, max_new_tokens: int) -> str:
        import torch
        from transformers import GenerationConfig

        c = self.codec
        pre, vis, post = self._parts(tokens, before, after)
        def emb(ids: list[int]):
            return c._embed(torch.tensor(ids, dtype=torch.long, device=c.device)).to(c.dtype)

        embeds = torch.cat([emb(pre), vis, emb(post)])[None]
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=c.device)
        pad = c.tokenizer.pad_token_id if c.tokenizer.pad_token_id is not None else c.eos_id
        cfg = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                               eos_token_id=c.eos_id, pad_token_id=pad, bos_token_id=c.bos_id)
        with torch.no_grad():
            out = c.model.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=cfg)
        ids = out[0].tolist()
        if c.eos_id in ids:
            ids = ids[: ids.index(c.eos_id)]
        return c.tokenizer.decode(ids, skip_special_tokens=True)

    def nll(self, tokens, context_after: str, continuation: str) -> float:
        import torch

        from codec.deepseek_common import sequence_nll

        c = self.codec
        pre, vis, post = self._parts(tokens, "", context_after)
        with torch.no_grad():
            nll = sequence_nll(c._lm_hidden, c.model.lm_head, c._embed, [vis], pre, post,
                               [c._ids(continuation)], c.max_positions)
        return float(nll.sum())


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
            raise ValueError(
                f"codec {codec.name!r} only transcribes; use mode='transcribe' with an answerer"
            )
        if self.mode == "transcribe" and answerer is None:
            raise ValueError(
                f"codec {codec.name!r} cannot answer questions itself; pass a text runner as "
                "answerer "
                "(transcribe-then-answer fallback)"
            )
        self.answerer = answerer
        self.reader = reader_for(codec)
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
            "codec": getattr(self.codec, "name", "?"),
            "codec_version": getattr(self.codec, "version", "?"),
            "tokens_per_page": getattr(self.codec, "n", None),
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
        out = self.reader.read(
            ctx.tokens, before=prompt.before, after=prompt.after, max_new_tokens=max_new_tokens
        )
        return cut_at_stop(out, stop_strings(dataset))

    # lm-eval: the whole request context is what gets rendered.
    def loglikelihood(self, context: str, continuation: str) -> tuple[float, bool]:
        """Transcribe mode: the answerer's likelihood given the transcript. Direct mode:
        -NLL of the continuation after the context's pages (`reader.nll`, DeepSeek), else
        the codec's `text_nll` on the pages' tokens laid end to end. is_greedy: False."""
        if self.mode == "transcribe":
            return self.answerer.loglikelihood(self.transcribe(context), continuation)
        import torch

        ctx = self.encode(context)
        if hasattr(self.reader, "nll"):
            return -self.reader.nll(ctx.tokens, "", continuation), False
        if ctx.pages:  # the pages' tokens laid end to end, as one long "page"
            tokens = ctx.tokens.reshape(1, -1, ctx.tokens.shape[-1])
        else:
            tokens = self.codec.null_tokens(1)
        with torch.no_grad():
            nll = self.codec.text_nll(tokens.to(self.codec.device), [continuation]).nll
        return -float(nll.sum()), False
