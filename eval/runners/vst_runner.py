"""The VST end to end: text -> render -> encode -> VST -> decode -> text.

The whole filled prompt (instruction, context, question) is typeset as one document;
its pages are cut in the middle to the visual-token budget (the LongBench rule, in
pages), encoded by the frozen codec, and fed to the VST as the prompt of that document.
The VST then continues the document: it writes the rest of the last, partly filled page
(and more pages if the answer needs them), one visual token at a time. The answer is
what the frozen codec decoder reads from *only the generated tokens*: the prompt's
own slots on that page are replaced by blank-page tokens before decoding, so the
decoder cannot echo the prompt back.

Where the codec has a layout map (a token grid over text lines, e.g. `mini`), the
generated tokens start right after the prompt's last line; otherwise (no grid, e.g.
DeepSeek-OCR-2's 1D queries) the prompt is whole pages and the answer is the next page.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from data.errors import BadCheckpoint, BadInput
from eval.runners.common import Prompt, Runner, cut_at_stop, stop_strings
from eval.runners.visual import PageEncoder, Renderer

CHARS_PER_TEXT_TOKEN = 4.0  # cl100k's average on English; converts max-new-tokens to chars


class VSTRunner(Runner):
    def __init__(
        self,
        checkpoint: str | Path | None = None,
        *,
        model: Any = None,
        codec: Any = None,
        renderer: Renderer | None = None,
        device: str = "cpu",
        max_visual_tokens: int | None = None,
        max_new_pages: int = 2,
        seed: int = 0,
        name: str | None = None,
    ) -> None:
        state: dict[str, Any] = {}
        if model is None:
            from vst.generate import load_model

            model, state = load_model(checkpoint, device)
        if model.cfg.modality != "vector":
            raise BadCheckpoint("this checkpoint is a text-token model; use --runner vst-text")
        if codec is None or isinstance(codec, str):
            codec = _codec_for(state, codec)
        if (codec.D, codec.n) != (model.cfg.D, model.cfg.tokens_per_page):
            raise BadCheckpoint(
                f"codec {codec.name!r} gives {codec.n} tokens of width {codec.D} per page; the VST "
                f"was trained on {model.cfg.tokens_per_page} x {model.cfg.D}"
            )
        self.model, self.codec = model.eval(), codec
        self.encoder = PageEncoder(codec, renderer)
        self.max_visual_tokens = max_visual_tokens
        self.max_new_pages = max_new_pages
        self.seed = seed
        self.checkpoint = checkpoint
        label = Path(checkpoint).name if checkpoint is not None else "model"
        self.name = name or f"vst:{label}+{codec.name}"
        self._blank = None
        self.last_stats: dict[str, Any] = {}

    def describe(self) -> dict[str, Any]:
        return {
            "runner": self.name,
            "kind": "vst",
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
            "codec": self.codec.name,
            "codec_version": self.codec.version,
            "model_config": self.model.cfg.to_dict(),
            "max_visual_tokens": self.budget(0),
            "truncation": "middle of the rendered prompt, in whole pages, counted in visual tokens",
            "decoding": "regression head (deterministic)" if self.model.cfg.head != "energy"
            else f"energy head, sampled with seed {self.seed}",
            "answer": "codec decoder reading only the VST-generated tokens (prompt slots blanked)",
        }

    # -------------------------------------------------------------------- geometry

    def budget(self, new_tokens: int) -> int:
        room = self.model.cfg.max_seq_len - new_tokens - 1
        return min(self.max_visual_tokens or room, room)

    def used_tokens(self, page: Any) -> int:
        """Token slots of a page that its text occupies (whole grid rows of lines)."""
        return self.codec.used_tokens(page)

    def blank_tokens(self):
        """Tokens of an empty page: what the decoder sees in slots the VST did not write."""
        if self._blank is None:
            self._blank = self.encoder.encode_pages(self.encoder.pages(" "))[0]
        return self._blank

    # ------------------------------------------------------------------ generation

    def _new_tokens(self, chars: int, text_len: int, positions: int, used_last: int) -> int:
        """Tokens to generate: to the end of the current page, plus whole pages as needed."""
        n = self.codec.n
        chars_per_token = max(text_len, 1) / max(positions, 1)
        need = math.ceil(chars / chars_per_token)
        rest = n - used_last
        extra_pages = 0 if need <= rest else min(self.max_new_pages, math.ceil((need - rest) / n))
        return rest + extra_pages * n

    def continue_prompt(self, text: str, answer_chars: int) -> list[str]:
        """Render + encode `text`, let the VST continue it; decoded text of the generated slots."""
        import torch

        from vst.generate import continue_tokens

        n = self.codec.n
        pages = self.encoder.pages(text)
        if not pages:
            pages = self.encoder.pages(" ")
        # budget: the worst case of new tokens is a full current page plus max_new_pages
        kept = self.encoder.keep(pages, self.budget(n * (1 + self.max_new_pages)))
        if not kept:
            raise BadInput(f"the VST's window ({self.model.cfg.max_seq_len} positions) cannot "
                           f"hold one page of {n} tokens plus {self.max_new_pages} answer pages")
        tokens = self.encoder.encode_pages(kept)  # [P, n, D]
        used = self.used_tokens(kept[-1])
        prompt = torch.cat([tokens[:-1].reshape(-1, tokens.shape[-1]), tokens[-1, :used]])
        kept_chars = sum(len(p.text) for p in kept)
        n_new = self._new_tokens(answer_chars, kept_chars, prompt.shape[0], used)
        if n_new == 0:  # the last page is full and no more pages are allowed
            n_new = n
        gen = torch.Generator().manual_seed(self.seed)
        new = continue_tokens(self.model, prompt, n_new, generator=gen).float().cpu()
        # Assemble pages: the current page keeps blanks where the prompt was.
        blank = self.blank_tokens()
        first = blank.clone()
        head = min(n - used, n_new)
        first[used : used + head] = new[:head]
        out_pages = [first] if head > 0 else []
        rest = new[head:]
        for i in range(0, rest.shape[0], n):
            page = blank.clone()
            chunk = rest[i : i + n]
            page[: chunk.shape[0]] = chunk
            out_pages.append(page)
        with torch.no_grad():
            return self.codec.decode(torch.stack(out_pages))

    def predict(self, prompt: Prompt, *, dataset: str, max_new_tokens: int) -> str:
        if self.model.cfg.specials:  # an instruction-tuned VST answers in its SFT layout
            return self._answer(prompt)
        chars = int(max_new_tokens * CHARS_PER_TEXT_TOKEN)
        text = "\n".join(t.strip("\n") for t in self.continue_prompt(prompt.text, chars)).strip()
        return cut_at_stop(text, stop_strings(dataset))[:chars]

    def _answer(self, prompt: Prompt) -> str:
        """An instruction-tuned VST (`vst sft`): the task and question (the prompt around
        its context) are the instruction, the context is the context, and the answer is
        what the codec reads from the response pages (`vst.chat.ChatSession`)."""
        from vst.chat import ChatSession

        pages = None  # --max-visual-tokens: the context's latest whole pages within it
        if self.max_visual_tokens is not None:
            pages = self.max_visual_tokens // self.codec.n
        session = ChatSession(self.model, self.codec, max_pages=self.max_new_pages,
                              seed=self.seed, max_context_pages=pages)
        answer = session.ask(prompt.before + prompt.after, prompt.context)
        self.last_stats = {"positions": answer.positions, "seconds": answer.seconds}
        # the answer ends at its first blank line, as an instruction-tuned text model's
        # ends at "\n\n" (vst.sft_text.response_end): rows after it are not part of it
        lines = answer.text.strip("\n").split("\n")
        end = next((k for k, line in enumerate(lines) if not line.strip()), len(lines))
        return "\n".join(line.strip() for line in lines[:end])

    def generate(self, context: str, *, max_new_tokens: int, stop: Sequence[str] = ()) -> str:
        pred = self.predict(Prompt("", context, ""), dataset="", max_new_tokens=max_new_tokens)
        return cut_at_stop(pred, stop)

    def loglikelihood(self, context: str, continuation: str) -> tuple[float, bool]:
        """-NLL of the continuation under the frozen decoder, given the VST's predicted page.

        The VST continues the rendered context to the end of its page (plus one page);
        the decoder scores `continuation` on those predicted tokens, as in bits-per-byte
        setting (a). `is_greedy` is not defined for visual contexts and is always False.
        """
        import torch

        from vst.generate import continue_tokens

        n = self.codec.n
        pages = self.encoder.pages(context) or self.encoder.pages(" ")
        kept = self.encoder.keep(pages, self.budget(2 * n))
        tokens = self.encoder.encode_pages(kept)
        used = self.used_tokens(kept[-1])
        prompt = torch.cat([tokens[:-1].reshape(-1, tokens.shape[-1]), tokens[-1, :used]])
        n_new = (n - used) or n
        gen = torch.Generator().manual_seed(self.seed)
        new = continue_tokens(self.model, prompt, n_new, generator=gen).float().cpu()
        page = self.blank_tokens().clone()
        page[n - n_new :] = new
        with torch.no_grad():
            nll = self.codec.text_nll(page[None], [continuation]).nll
        return -float(nll.sum()), False


def _codec_for(state: dict[str, Any], name: str | None) -> Any:
    """The codec a checkpoint was trained with (its train config), or the one named."""
    if name:
        from codec import load_codec

        return load_codec(name)
    from vst.reader import load_reader

    return load_reader(state)
