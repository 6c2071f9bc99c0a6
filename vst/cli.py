"""`vst generate`: the command function the top-level `vst` app mounts (heavy imports inside)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def generate(
    checkpoint: Path = typer.Argument(
        ..., help="a run directory (newest checkpoint) or a step-NNNNNNN directory"
    ),
    data: Optional[str] = typer.Option(
        None, help="token store (default: the run's own data, validation split)"
    ),
    doc: int = typer.Option(0, help="which validation document to continue"),
    text: Optional[str] = typer.Option(
        None, help="continue this text instead (rendered and encoded by the run's codec)"
    ),
    prompt_pages: int = typer.Option(
        1, help="pages of the document given as the prompt (with --text: all of its pages)"
    ),
    pages: int = typer.Option(1, help="pages to generate"),
    seed: int = typer.Option(0, help="sampling seed (energy head, decoder sampling)"),
    reground: bool = typer.Option(
        False, help="re-render and re-encode every generated line before the VST reads on, so "
        "it always reads the codec's own tokens"),
    temperature: float = typer.Option(
        0.0, help="the decoder samples each page's text at this temperature (0: greedy)"),
    device: str = typer.Option("cpu"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the result here"),
) -> None:
    """Continue a document: predict its next page(s) of visual tokens and decode them to text."""
    from dataclasses import replace

    from vst.generate import continue_document, load_model
    from vst.reader import load_reader
    from vst.train import build_sources
    from vst.train_config import TrainConfig

    model, state = load_model(checkpoint, device)
    cfg = TrainConfig.from_dict(state["train_config"])
    if data is not None:
        cfg = replace(cfg, data=data)
    codec = load_reader(state)  # the codec, with the run's trained reader where it has one
    if text is not None:
        tokens, texts = codec.encode_text(text)
        prompt_pages = len(texts)
    else:
        _, val = build_sources(cfg, codec)
        tokens, texts = val.document(doc)
    if prompt_pages >= len(texts) + 1 or prompt_pages < 1:
        raise typer.BadParameter(
            f"document {doc} has {len(texts)} pages; prompt with 1..{len(texts)}"
        )
    result = continue_document(model, codec, torch_tensor(tokens), texts, prompt_pages, pages,
                               seed, reground, temperature)
    for i, t in enumerate(result.prompt_text):
        typer.echo(f"--- prompt page {i}\n{t}")
    for i, t in enumerate(result.pages):
        typer.echo(f"--- generated page {prompt_pages + i}\n{t}")
        if i < len(result.truth):
            typer.echo(f"--- true page {prompt_pages + i}\n{result.truth[i]}")
    if json_out is not None:
        json_out.write_text(
            json.dumps(
                {"prompt": result.prompt_text, "generated": result.pages, "truth": result.truth},
                indent=1,
            )
        )


def torch_tensor(x):
    import torch

    return torch.as_tensor(x).float()


def chat(
    checkpoint: Path = typer.Argument(
        ..., help="an SFT run directory (`vst sft --out`) or step dir"),
    prompt: Optional[str] = typer.Option(
        None, help="one-shot: answer this and exit (default: stdin when it is not a terminal, "
        "else an interactive session)"),
    context_file: Optional[Path] = typer.Option(
        None, help="a text file given as the context segment (of the first turn)"),
    interactive: bool = typer.Option(
        False, help="a multi-turn session even when stdin is not a terminal (one turn a line)"),
    max_pages: int = typer.Option(4, help="response pages at most"),
    stop_threshold: float = typer.Option(
        0.5, help="the stop head's probability that ends an answer"),
    seed: int = typer.Option(0, help="sampling seed (energy head)"),
    max_new_tokens: Optional[int] = typer.Option(
        None, help="the codec decodes at most this many tokens per page (default: all)"),
    codec: Optional[str] = typer.Option(None, help="codec spec (default: the checkpoint's own)"),
    codec_mode: Optional[str] = typer.Option(None, help="codec mode (default: the checkpoint's)"),
    device: str = typer.Option("cpu"),
) -> None:
    """Chat with an instruction-tuned VST, text in and text out.

    Your text is rendered and encoded; the answer is generated page by page, decoded by the
    codec and printed as it comes.
    """
    import sys

    from vst.chat import ChatSession, load_chat_model

    model, cdc, _ = load_chat_model(checkpoint, device, codec, codec_mode)
    session = ChatSession(model, cdc, max_pages=max_pages, stop_threshold=stop_threshold,
                          seed=seed, max_new_tokens=max_new_tokens)
    context = context_file.read_text(encoding="utf-8") if context_file else ""

    def answer(text: str, ctx: str) -> None:
        for page in session.stream(text, ctx):
            typer.echo(page, nl=False)
        a = session.last
        typer.echo(f"\n[{a.positions} visual positions vs {a.text_tokens} cl100k tokens; "
                   f"{'stopped' if a.stopped else 'page cap'}; {a.seconds:.2f}s]")

    if prompt is None and not interactive and not sys.stdin.isatty():
        prompt = sys.stdin.read().strip()
    if prompt is not None:
        answer(prompt, context)
        return
    typer.echo("vst chat: an empty line or Ctrl-D ends; /reset forgets earlier turns")
    while True:
        try:
            line = input("> ").strip()
        except EOFError:
            break
        if not line:
            break
        if line == "/reset":
            session.reset()
            continue
        answer(line, context)
        context = ""  # the context file belongs to the first turn
