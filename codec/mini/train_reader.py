"""Stage 2 of the mini codec: train its causal character decoder on top of frozen visual
tokens, and write shippable weights.

    vst codec train-reader --steps 1500 --out codec/mini/weights

(flags: `ReaderTrainConfig` in codec/mini/configs.py.)

Stage 1 (`vst codec train`) trains the encoder, the token compressor and the read-out
trunk (with a CTC head). Here the encoder and compressor are frozen: the visual
tokens, and so every store converted with them, stay exactly as they were. Each mode gets
a causal character transformer whose prefix is its tokens unfolded along each line (see
codec/mini/reader.py); `--tune-trunk` also fine-tunes the unfolding. The loss is the
next-character NLL of every line (end included), on noisy tokens, and progress is tracked
by GREEDY decoding precision on held-out documents, next to the blind floor.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from codec.mini import decode_pages
from codec.mini.configs import ReaderTrainConfig, init_files, training_record, weights_dir
from codec.mini.data import PageSample, bands_of
from codec.mini.model import MiniConfig, MiniNet
from codec.mini.reader import line_nll
from data.errors import BadCheckpoint
from codec.mini.train import (
    corrupt,
    init_from,
    ink_batch,
    optimizer_step,
    page_loader,
    record_validation,
    save,
    scheduled_batches,
    start_run,
)


def load_stage1(init: Path, mode: str, args: ReaderTrainConfig) -> tuple[MiniNet, dict]:
    """A stage-1 checkpoint with a fresh causal reader, or a stage-2 one to train further."""
    from safetensors.torch import load_file

    meta = json.loads((init / f"{mode}.json").read_text())
    cfg = dict(meta["model"], reader="causal", reader_dim=args.dim, reader_depth=args.depth,
               reader_heads=args.heads)
    net = MiniNet(MiniConfig.from_dict(cfg))
    state = {k: v.float() for k, v in load_file(str(init / f"{mode}.safetensors")).items()}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("reader.") for k in missing):
        raise BadCheckpoint(f"{init}/{mode}: checkpoint does not match (missing {missing}, "
                            f"unexpected {unexpected})")
    return net, meta


def trainable(net: MiniNet, tune_trunk: bool) -> list[torch.nn.Parameter]:
    net.requires_grad_(False)
    net.reader.requires_grad_(True)
    if tune_trunk:
        net.readout.requires_grad_(True)
        net.readout.head.requires_grad_(False)  # the CTC head is not used by the causal reader
    return [p for p in net.parameters() if p.requires_grad]


@torch.no_grad()
def evaluate(nets: dict[str, MiniNet], val: list[PageSample], setter) -> dict[str, dict]:
    from codec.text_metrics import precision

    refs = [s.text for s in val]
    ink = ink_batch(val)
    out = {}
    for mode, net in nets.items():
        net.eval()
        tokens = torch.cat([net.encode(ink[i:i + 16]) for i in range(0, len(val), 16)])
        preds = decode_pages(net, tokens, setter)
        blind = decode_pages(net, torch.zeros_like(tokens[:4]), setter)
        L = net.cfg.geometry.n_lines
        lines = [t for s in val for t in bands_of(s, L, 1)]
        nll = line_nll(net.reader, net.line_cells(tokens), lines)
        out[mode] = {
            "precision": float(np.mean([precision(p, r) for p, r in zip(preds, refs)])),
            "exact": float(np.mean([p == r for p, r in zip(preds, refs)])),
            "blind_precision": float(np.mean([precision(p, r) for p, r in zip(blind, refs)])),
            "val_nats_per_char": float(nll.sum()) / max(1, sum(len(t) + 1 for t in lines)),
        }
        net.train()
    return out


def train(args: ReaderTrainConfig) -> dict:
    from tqdm import tqdm

    from render.layout import Typesetter

    # a wrong --init fails before any data is read
    init_files(args.init, args.modes, ".json", args.variant)
    run = start_run(args)  # the same held-out documents as stage 1
    render_config, workdir, val = run.render_config, run.workdir, run.val
    setter = Typesetter(render_config)

    init = weights_dir(args.init, args.variant)
    nets, metas = {}, {}
    for mode in args.modes.split(","):
        nets[mode], metas[mode] = load_stage1(init, mode, args)
        if args.reader_from and metas[mode]["model"].get("reader") != "causal":
            with torch.no_grad():  # a stage-2 --init keeps its own reader
                copied = init_from(nets[mode], weights_dir(args.reader_from), "reader.")
            print(f"[{mode}] reader: {len(copied)} tensors from {args.reader_from}")
    encoder = next(iter(nets.values())).encoder  # shared by every mode, frozen
    params = [p for net in nets.values() for p in trainable(net, args.tune_trunk)]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    loader = page_loader(args, run, structured=args.structured)
    rng = random.Random(args.seed)

    log = open(workdir / "train_reader_log.jsonl", "w")  # noqa: SIM115 (closed after the loop)
    history: list[dict] = []
    t0 = time.time()
    bar = tqdm(total=args.steps, desc="mini reader", dynamic_ncols=True)
    for step, samples, validate in scheduled_batches(args, opt, loader):
        with torch.no_grad():
            feats = encoder(ink_batch(samples))
        total, shown = torch.zeros(()), {}
        for mode, net in nets.items():
            L = net.cfg.geometry.n_lines
            with torch.no_grad():
                tokens = corrupt(net.compressor(feats), args.noise, args.drop)
            with torch.set_grad_enabled(args.tune_trunk):
                cells = net.line_cells(tokens)
            lines = [t for s in samples for t in bands_of(s, L, 1)]
            # every written line, and a few of the empty slots below the text
            keep = [i for i, t in enumerate(lines) if t or rng.random() < args.empty_lines]
            nll = line_nll(net.reader, cells[keep], [lines[i] for i in keep])
            per_char = nll.sum() / sum(len(lines[i]) + 1 for i in keep)
            shown[mode] = per_char.item()
            total = total + per_char
        optimizer_step(opt, params, total)
        bar.update(1)
        bar.set_postfix({m: f"{v:.3f}" for m, v in shown.items()})
        if validate:
            metrics = evaluate(nets, val, setter)
            record_validation(log, bar, history, step, t0, metrics, train_nats_per_char=shown)
            for mode, net in nets.items():  # a usable checkpoint at every validation
                save(net, render_config, weights_dir(args.out, args.variant),
                     meta_of(args, metas[mode], history, t0,
                             (len(run.train_texts), len(run.val_texts))))
    bar.close()
    log.close()
    return {"minutes": (time.time() - t0) / 60, "history": history}


def meta_of(args: ReaderTrainConfig, stage1: dict, history: list[dict], t0: float,
            docs: tuple[int, int]) -> dict:
    return {"training": {**training_record(args, "vst codec train-reader"),
                         "stage": "causal reader (encoder and compressor frozen)",
                         "init": str(args.init), "previous": stage1.get("training"),
                         "steps_done": history[-1]["step"] if history else 0,
                         "steps": args.steps, "batch": args.batch, "seed": args.seed,
                         "minutes": round((time.time() - t0) / 60, 1),
                         "corpus": args.corpus or "demo corpus", "train_docs": docs[0],
                         "val_docs": docs[1], "val": history[-1]["val"] if history else {}}}
