"""Text-token baselines: any local Hugging Face causal LM, read greedily as LongBench does.

Prompts are cut in the middle by the model's own tokens to `max_length`, exactly as
LongBench's pred.py does (`tokens[:half] + tokens[-half:]`, decoded back to text), and
instruction-tuned models get their chat template except on the few-shot datasets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from data.errors import BadCheckpoint
from eval.runners.common import Prompt, Runner, cut_at_stop, middle_keep, stop_strings, use_chat


class HFTextRunner(Runner):
    """A causal LM from a local directory (`local_files_only=True`), greedy decoding.

    max_length: prompt budget in the model's tokens (default: the model's context
    window minus the answer's max-new-tokens). chat: wrap prompts in the tokenizer's chat
    template; None means "if the tokenizer has one".
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_length: int | None = None,
        chat: bool | None = None,
        device: str = "cpu",
        dtype: str = "auto",
        name: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.path = Path(path)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
        self.model = AutoModelForCausalLM.from_pretrained(
            self.path, local_files_only=True, dtype=torch_dtype
        ).to(device)
        self.model.eval()
        self.device = torch.device(device)
        self.window = int(getattr(self.model.config, "max_position_embeddings", 0) or 4096)
        self.max_length = max_length
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        self.chat = chat if chat is not None else has_template
        self.name = name or f"hf:{self.path.name}"

    def describe(self) -> dict[str, Any]:
        return {
            "runner": self.name,
            "kind": "text",
            "model_path": str(self.path),
            "window": self.window,
            "max_length": self.max_length,
            "chat_template": self.chat,
            "truncation": "middle, in model tokens (LongBench pred.py)",
            "decoding": "greedy",
        }

    # ------------------------------------------------------------------ LongBench

    def budget(self, max_new_tokens: int) -> int:
        return self.max_length or max(1, self.window - max_new_tokens)

    def truncate(self, text: str, budget: int) -> str:
        ids = self.tokenizer(text, truncation=False).input_ids
        head, tail = middle_keep(len(ids), budget)
        if not tail:
            return text
        dec = lambda part: self.tokenizer.decode(part, skip_special_tokens=True)  # noqa: E731
        return dec(ids[:head]) + dec(ids[-tail:])

    def predict(self, prompt: Prompt, *, dataset: str, max_new_tokens: int) -> str:
        text = self.truncate(prompt.text, self.budget(max_new_tokens))
        chat = self.chat and use_chat(dataset)
        if chat:
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
        ids = self.tokenizer(text, add_special_tokens=not chat).input_ids
        stops = stop_strings(dataset)
        return cut_at_stop(self._greedy(ids, max_new_tokens, stops), stops)

    def _greedy(self, ids: list[int], max_new_tokens: int, stops: Sequence[str]) -> str:
        import torch

        eos = [t for t in [self.tokenizer.eos_token_id] if t is not None]
        for s in stops:  # pred.py adds "\n"'s last token id to the eos list for samsum
            eos.append(self.tokenizer.encode(s, add_special_tokens=False)[-1])
        pad = self.tokenizer.pad_token_id
        pad = pad if pad is not None else (eos or [0])[0]
        x = torch.tensor([ids], device=self.device)
        with torch.no_grad():
            out = self.model.generate(
                x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                temperature=None,
                top_p=None,
                top_k=None,
                eos_token_id=eos or None,
                pad_token_id=pad,
            )
        return self.tokenizer.decode(out[0, x.size(1) :], skip_special_tokens=True)

    # -------------------------------------------------------------------- lm-eval

    def generate(self, context: str, *, max_new_tokens: int, stop: Sequence[str] = ()) -> str:
        ids = self.tokenizer(context).input_ids
        ids = ids[-self.budget(max_new_tokens) :]  # lm-eval keeps the end of a long prompt
        return cut_at_stop(self._greedy(ids, max_new_tokens, ()), stop)

    def _prefix_id(self) -> int:
        tok = self.tokenizer
        for t in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id):
            if t is not None:
                return int(t)
        return 0

    def _score(self, context_ids: list[int], target_ids: list[int]) -> tuple[float, bool]:
        """log p(target | context) and whether greedy decoding would produce the target."""
        import torch

        ids = (context_ids + target_ids)[-(self.window + 1) :]
        n = len(target_ids)
        x = torch.tensor([ids[:-1]], device=self.device)
        with torch.no_grad():
            logits = self.model(x).logits[0, -n:].float().log_softmax(-1)
        tgt = torch.tensor(ids[-n:], device=self.device)
        logp = logits.gather(-1, tgt[:, None]).sum().item()
        return float(logp), bool((logits.argmax(-1) == tgt).all())

    def loglikelihood(self, context: str, continuation: str) -> tuple[float, bool]:
        # Encode the whole string and split it, so merges across the boundary stay as the
        # tokenizer would make them (as lm-eval's HF model does).
        whole = self.tokenizer(context + continuation, add_special_tokens=False).input_ids
        ctx = self.tokenizer(context, add_special_tokens=False).input_ids if context else []
        split = len(ctx)
        while split > 0 and whole[:split] != ctx[:split]:
            split -= 1
        cont = whole[split:] or self.tokenizer(continuation, add_special_tokens=False).input_ids
        context_ids = [self._prefix_id()] + whole[:split]
        return self._score(context_ids, cont)

    def loglikelihood_rolling(self, text: str) -> float:
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        total = 0.0
        for ctx, tgt in map(
            make_disjoint_window,
            get_rolling_token_windows(ids, self._prefix_id(), self.window, 1),
        ):
            total += self._score(ctx, tgt)[0]
        return total


class VSTTextRunner(Runner):
    """The project's own text-token baseline: a `vst` checkpoint trained with `--modality text`.

    Its tokenizer (UTF-8 bytes or cl100k) comes from the checkpoint's train config. Greedy
    decoding with the model's KV cache; the prompt is cut in the middle to the model's
    `max_seq_len` minus the answer's tokens. A byte-level model counts max-new-tokens in
    bytes, so its answers are shorter than a subword model's for the same setting.
    """

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        *,
        model: Any = None,
        tokenizer: str | None = None,
        device: str = "cpu",
        max_length: int | None = None,
        context_tokens: int | None = None,
        name: str | None = None,
    ) -> None:
        from vst.data import text_codec

        state: dict[str, Any] = {}
        if model is None:
            from vst.generate import load_model

            model, state = load_model(checkpoint, device)
        if model.cfg.modality != "text":
            raise BadCheckpoint("this checkpoint is a vector VST",
                                hint="use the VST runner (--runner vst)")
        self.model = model.eval()
        self.device = model.doc_start.device
        self.tokenizer_name = tokenizer or state.get("train_config", {}).get("tokenizer", "bytes")
        self.encode, _, vocab = text_codec(self.tokenizer_name)
        if vocab != model.cfg.vocab_size:
            raise BadCheckpoint(f"tokenizer {self.tokenizer_name!r} has {vocab} ids, "
                                f"the model {model.cfg.vocab_size}")
        self.max_length = max_length
        # an instruction-tuned model (vst.sft_text) reads `instruction, context` in its
        # training layout; others read the filled prompt as one document
        self.sft_order = state.get("sft_text", {}).get("order")
        self.context_tokens = context_tokens
        self.checkpoint = checkpoint
        self.last_stats: dict[str, Any] = {}
        label = Path(checkpoint).name if checkpoint is not None else "model"
        self.name = name or f"vst-text:{label}"

    def describe(self) -> dict[str, Any]:
        return {
            "runner": self.name,
            "kind": "text",
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
            "tokenizer": self.tokenizer_name,
            "model_config": self.model.cfg.to_dict(),
            "truncation": "middle, in model tokens (LongBench pred.py rule)" if
            self.context_tokens is None else f"the context's last {self.context_tokens} tokens",
            "prompt": f"instruction-tuned, {self.sft_order}" if self.sft_order else "filled",
            "decoding": "greedy" + (" (pointer-generator)" if self.model.cfg.pointer else ""),
        }

    def decode(self, ids: Sequence[int]) -> str:
        from vst.data import text_decode

        return text_decode(self.tokenizer_name, ids)

    def budget(self, max_new_tokens: int) -> int:
        return self.max_length or max(1, self.model.cfg.max_seq_len - max_new_tokens - 1)

    def _greedy(self, ids: list[int], max_new_tokens: int, stops: Sequence[str]) -> str:
        from vst.generate import greedy_ids

        # position 0 reads the document-start vector; a pointer model copies where it says
        stop = (lambda out: any(s in self.decode(out) for s in stops)) if stops else None
        return self.decode(greedy_ids(self.model, ids, max_new_tokens, stop))

    def _ids(self, prompt: Prompt, max_new_tokens: int) -> list[int]:
        room = self.budget(max_new_tokens)
        if self.sft_order is None:
            ids = self.encode(prompt.text)
            head, tail = middle_keep(len(ids), room)
            return ids[:head] + (ids[-tail:] if tail else [])
        from vst.sft_text import prompt_ids

        # the training layout; the truncation baseline keeps the context's latest tokens
        return prompt_ids(self.encode, prompt.before + prompt.after, prompt.context,
                          self.sft_order, room, self.context_tokens)

    def predict(self, prompt: Prompt, *, dataset: str, max_new_tokens: int) -> str:
        import time

        from vst.sft_text import response_end

        ids = self._ids(prompt, max_new_tokens)
        stops = [response_end(self.sft_order)] if self.sft_order else stop_strings(dataset)
        t0 = time.perf_counter()
        out = cut_at_stop(self._greedy(ids, max_new_tokens, stops), stops)
        self.last_stats = {"positions": len(ids) + 1, "seconds": time.perf_counter() - t0}
        return out

    def generate(self, context: str, *, max_new_tokens: int, stop: Sequence[str] = ()) -> str:
        ids = self.encode(context)[-self.budget(max_new_tokens) :]
        return cut_at_stop(self._greedy(ids, max_new_tokens, stop), stop)

    def _score(self, ctx: list[int], tgt: list[int]) -> tuple[float, bool]:
        import torch

        if not tgt:
            return 0.0, True
        # Position t reads token t-1, or the document-start vector (None) at t = 0; keep the
        # last max_seq_len positions when the text is longer.
        full = ctx + tgt
        reads = ([None] + full[:-1])[-self.model.cfg.max_seq_len :]
        inputs = torch.tensor([[0 if r is None else r for r in reads]], device=self.device)
        bos = torch.tensor([[r is None for r in reads]], device=self.device)
        with torch.no_grad():
            h = self.model(inputs, bos, torch.arange(inputs.size(1), device=self.device)[None])
            logp = self.model.lm_head(h[0, -len(tgt) :]).float().log_softmax(-1)
        t = torch.tensor(tgt, device=self.device)
        return float(logp.gather(-1, t[:, None]).sum()), bool((logp.argmax(-1) == t).all())

    def loglikelihood(self, context: str, continuation: str) -> tuple[float, bool]:
        return self._score(self.encode(context), self.encode(continuation))

    def loglikelihood_rolling(self, text: str) -> float:
        ids = self.encode(text)
        chunk = max(1, self.model.cfg.max_seq_len // 2)  # >= half a window of history each
        return sum(self._score(ids[:s], ids[s : s + chunk])[0] for s in range(0, len(ids), chunk))
