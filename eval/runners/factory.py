"""Build a runner from plain settings (shared by `vst eval run` and the lm-eval adapter)."""

from __future__ import annotations

from typing import Any

from codec import load_codec
from data.errors import BadInput
from eval.runners.common import Runner

RUNNERS = ("hf", "vst-text", "codec", "vst")


def make_runner(
    runner: str,
    model: str | None = None,
    *,
    codec: str | None = None,
    codec_path: str | None = None,
    answerer: str | None = None,
    answerer_runner: str = "hf",
    max_length: int | None = None,
    max_visual_tokens: int | None = None,
    context_tokens: int | None = None,
    chat: bool | None = None,
    device: str = "cpu",
    dtype: str = "auto",
) -> Runner:
    """runner: hf (local HF causal LM dir) | vst-text (text-baseline checkpoint) |
    codec (Glyph-style codec reader; `answerer` names the text model for transcribing
    codecs) | vst (end to end; `model` is the VST checkpoint). `context_tokens`: an
    instruction-tuned text model reads only the context's last N tokens (truncation)."""
    if runner == "hf":
        from eval.runners.text import HFTextRunner

        _need(model, "hf needs --model, a local Hugging Face model directory")
        return HFTextRunner(model, max_length=max_length, chat=chat, device=device, dtype=dtype)
    if runner == "vst-text":
        from eval.runners.text import VSTTextRunner

        _need(model, "vst-text needs --model, a text-baseline checkpoint directory")
        return VSTTextRunner(model, device=device, max_length=max_length,
                             context_tokens=context_tokens)
    if runner == "codec":
        from eval.runners.codec_reader import CodecReaderRunner, has_reader

        c = load_codec(codec or "mini", path=codec_path, device=device)
        reader = None
        if not has_reader(c):
            _need(answerer, f"codec {c.name!r} only transcribes pages; pass --answerer, a text "
                            "model (transcribe-then-answer fallback)")
            reader = make_runner(answerer_runner, answerer, max_length=max_length, chat=chat,
                                 device=device, dtype=dtype)
        return CodecReaderRunner(c, answerer=reader, max_visual_tokens=max_visual_tokens)
    if runner == "vst":
        from eval.runners.vst_runner import VSTRunner

        _need(model, "vst needs --model, a VST checkpoint directory")
        c = load_codec(codec, path=codec_path, device=device) if codec else None
        return VSTRunner(model, codec=c, device=device, max_visual_tokens=max_visual_tokens)
    raise BadInput(f"unknown runner {runner!r}; choose one of {', '.join(RUNNERS)}")


def _need(value: Any, message: str) -> None:
    if not value:
        raise BadInput(message)
