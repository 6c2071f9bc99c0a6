"""Continue a document: predict its next page(s) of visual tokens, then read them as text.

Prefill runs the prompt once into the KV cache; every further token costs one position.
The regression head emits its prediction; the energy head *samples* (it never averages),
so repeated runs with different seeds give different continuations; a mixture head
(`--mixture K`) draws one of its K candidates by its weight (the most-weighted one
without a generator).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from data.errors import MissingPath
from vst.config import ModelConfig
from vst.model import VST


def token_positions(mcfg: ModelConfig, first_page: int, idx: torch.Tensor) -> torch.Tensor:
    """Rotary positions of token indices counted from the start of page `first_page`."""
    n = mcfg.tokens_per_page
    if mcfg.rope == "1d":
        return idx
    page, slot = first_page + idx // n, idx % n
    return torch.stack((page, slot // mcfg.grid[1], slot % mcfg.grid[1]), dim=-1)


@torch.no_grad()
def continue_tokens(
    model: VST,
    prompt: torch.Tensor,
    n_new: int,
    first_page: int = 0,
    doc_start: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """prompt [T0, D] (whole pages from page `first_page`) -> next n_new tokens [n_new, D].

    With doc_start the prompt opens its document, so the first input is the
    document-start vector (as in training); otherwise the first prompt token only
    serves as context.
    """
    mcfg = model.cfg
    if mcfg.modality != "vector":
        raise ValueError("continue_tokens generates visual tokens; this is a text-modality model")
    dev = model.doc_start.device
    prompt = prompt.to(dev, torch.float32)
    T0 = prompt.size(0)
    if doc_start:
        inputs = torch.cat([prompt.new_zeros(1, prompt.size(1)), prompt])
        target_idx = torch.arange(0, T0 + 1)
    else:
        inputs, target_idx = prompt, torch.arange(1, T0 + 1)
    bos = torch.zeros(1, inputs.size(0), dtype=torch.bool, device=dev)
    bos[0, 0] = doc_start
    cache = model.new_cache(1, inputs.size(0) + n_new)
    pos = token_positions(mcfg, first_page, target_idx).to(dev)[None]
    h = model(inputs[None], bos, pos, cache=cache)[:, -1:]
    out = []
    nxt = int(target_idx[-1])
    for i in range(n_new):
        x = _predict(model, h, generator)  # [1, 1, D]
        out.append(x[0, 0])
        if i + 1 == n_new:
            break
        nxt += 1
        pos = token_positions(mcfg, first_page, torch.tensor([nxt])).to(dev)[None]
        h = model(x, torch.zeros(1, 1, dtype=torch.bool, device=dev), pos, cache=cache)
    return torch.stack(out)


def read_page(codec, tokens: torch.Tensor, temperature: float = 0.0,
              generator: torch.Generator | None = None) -> str:
    """One page's text from its tokens [1, n, D]: sampled from the decoder at `temperature`
    where it can sample, else greedy."""
    if temperature > 0:
        try:
            return codec.sample(tokens, temperature, generator)[0]
        except NotImplementedError:
            pass
    return codec.decode(tokens)[0]


@torch.no_grad()
def continue_regrounded(
    model: VST,
    codec,
    prompt: torch.Tensor,
    pages: int = 1,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, list[str]]:
    """Free-running continuation that stays on the codec's manifold: after each grid row
    of tokens (a line in `mini:small`) the page so far (later rows null) is read to text,
    re-rendered and re-encoded by the codec, and the codec's tokens for the rows so far
    replace the predicted ones, so the VST always reads real tokens. prompt [T0, D]
    (whole pages of a document from its start) -> (tokens [pages, n, D], page texts).
    Costs one page read and one page encode per row."""
    rows, cols = model.cfg.grid
    context = prompt.float().cpu()
    made, texts = [], []
    for _ in range(pages):
        page = codec.null_tokens(1)[0].float().cpu().clone()
        text = ""
        for r in range(rows):
            lo, hi = r * cols, (r + 1) * cols
            page[lo:hi] = continue_tokens(model, torch.cat([context, page[:lo]]), cols,
                                          generator=generator).float().cpu()
            text = read_page(codec, page[None], temperature, generator)
            fresh, _ = codec.encode_text(text)
            if len(fresh):  # the codec's own tokens for the rows read so far
                page[:hi] = fresh[0, :hi]
        made.append(page)
        texts.append(text)
        context = torch.cat([context, page])
    return torch.stack(made), texts


def _predict(model: VST, h: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if model.cfg.head == "energy":
        if generator is not None:  # sample with a private stream so results are reproducible
            state = torch.get_rng_state()
            torch.set_rng_state(generator.get_state())
            x = model.head.sample(h, 1)[0]
            generator.set_state(torch.get_rng_state())
            torch.set_rng_state(state)
            return x
        return model.head.sample(h, 1)[0]
    if model.cfg.mixture and generator is not None:  # a candidate drawn by its weight
        return model.head.sample(h, generator)
    return model.head(h)  # a mixture's head: the most-weighted candidate


@dataclass
class Continuation:
    prompt_text: list[str]  # the prompt pages' true text
    pages: list[str]  # decoded continuation, one string per page
    truth: list[str]  # the document's real next pages, when it has them
    tokens: torch.Tensor  # [pages, n, D]


def load_model(checkpoint: str | Path, device: str = "cpu") -> tuple[VST, dict]:
    from vst.checkpoint import latest_checkpoint, load_checkpoint, read_state

    ckpt = Path(checkpoint)
    if not (ckpt / "state.json").exists():
        found = latest_checkpoint(ckpt)
        if found is None:
            raise MissingPath(f"no checkpoint in {ckpt}",
                              hint="give a run directory of `vst train` or `vst sft`")
        ckpt = found
    state = read_state(ckpt)
    state["checkpoint"] = str(ckpt)  # where the run's other weights (its reader) are read from
    model = VST(ModelConfig.from_dict(state["model_config"])).to(device)
    if state.get("lora"):  # an SFT checkpoint with adapters: the same modules, then weights
        from vst.lora import apply_lora

        apply_lora(model, **state["lora"])
    load_checkpoint(ckpt, model, restore_rng=False)
    return model.eval(), state


def continue_document(
    model: VST,
    codec,
    doc_tokens: torch.Tensor,
    doc_texts: list[str],
    prompt_pages: int,
    pages: int,
    seed: int = 0,
    reground: bool = False,
    temperature: float = 0.0,
) -> Continuation:
    """doc_tokens [pages, n, D] of one document from its first page; decode `pages` more
    (`reground`: re-encode every generated row before it is read on, `continue_regrounded`;
    `temperature`: the decoder samples the pages' text where it can)."""
    n = model.cfg.tokens_per_page
    prompt = doc_tokens[:prompt_pages].reshape(-1, doc_tokens.size(-1))
    gen = torch.Generator().manual_seed(seed)
    if reground:
        new, text = continue_regrounded(model, codec, prompt, pages, temperature, gen)
    else:
        new = continue_tokens(model, prompt, pages * n, generator=gen).view(pages, n, -1)
        text = [read_page(codec, page[None].float().cpu(), temperature, gen) for page in new]
    return Continuation(
        doc_texts[:prompt_pages], text, doc_texts[prompt_pages : prompt_pages + pages], new
    )


@torch.no_grad()
def greedy_ids(model: VST, ids: list[int], n_new: int, stop=None) -> list[int]:
    """Greedy continuation of `ids` (read after the document-start vector) with the KV
    cache, through the pointer-generator mixture when the model has a pointer head.
    `stop(out_ids) -> bool` ends it early."""
    from vst.pointer import PointerMemory

    dev = model.doc_start.device
    inputs = torch.tensor([[0] + ids], device=dev)
    bos = torch.zeros_like(inputs, dtype=torch.bool)
    bos[0, 0] = True
    cache = model.new_cache(1, inputs.size(1) + n_new)
    h = model(inputs, bos, torch.arange(inputs.size(1), device=dev)[None], cache=cache)
    memory = None
    if model.cfg.pointer:
        memory = PointerMemory(model.pointer)
        memory.extend(h[0], inputs[0], ~bos[0])
    out: list[int] = []
    no_bos = torch.zeros(1, 1, dtype=torch.bool, device=dev)
    for step in range(n_new):
        logits = model.lm_head(h[0, -1]).float()
        nxt = memory.next_id(h[0, -1], logits) if memory is not None else int(logits.argmax())
        out.append(nxt)
        if (stop is not None and stop(out)) or step + 1 == n_new:
            break
        x = torch.tensor([[nxt]], device=dev)
        h = model(x, no_bos, torch.tensor([[inputs.size(1) + step]], device=dev), cache=cache)
        if memory is not None:
            memory.extend(h[0], x[0], torch.ones(1, dtype=torch.bool, device=dev))
    return out


@torch.no_grad()
def sample_text(
    model: VST,
    tokenizer: str,
    prompt_text: str,
    n_new: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> str:
    """A text-modality model's free-running continuation of `prompt_text`: n_new tokens
    sampled at `temperature` (0: greedy) with the KV cache; the prompt is cut from the
    left to fit the model's max_seq_len."""
    from vst.data import text_codec, text_decode

    if model.cfg.modality != "text":
        raise ValueError("sample_text is for a text-modality model")
    encode, _, _ = text_codec(tokenizer)
    dev = model.doc_start.device
    ids = encode(prompt_text)
    room = model.cfg.max_seq_len - n_new - 1
    fits = len(ids) <= room
    ids = ids[-room:] if room > 0 else []
    inputs = torch.tensor([[0, *ids]] if fits else [ids or [0]], device=dev)
    bos = torch.zeros_like(inputs, dtype=torch.bool)
    bos[0, 0] = fits  # a prompt that fits opens its document, as in training
    cache = model.new_cache(1, inputs.size(1) + n_new)
    h = model(inputs, bos, torch.arange(inputs.size(1), device=dev)[None], cache=cache)
    out: list[int] = []
    for step in range(n_new):
        logits = model.lm_head(h[:, -1]).float()[0]
        if temperature > 0:
            probs = torch.softmax(logits / temperature, -1).cpu()
            nxt = int(torch.multinomial(probs, 1, generator=generator))
        else:
            nxt = int(logits.argmax())
        out.append(nxt)
        if step + 1 < n_new:
            pos = torch.tensor([[inputs.size(1) + step]], device=dev)
            h = model(torch.tensor([[nxt]], device=dev), torch.zeros(1, 1, dtype=torch.bool,
                                                                     device=dev), pos, cache=cache)
    return text_decode(tokenizer, out)
