"""Train the mini codec's modes jointly (one shared line encoder, one compressor and
read-out per mode) on rendered demo-corpus pages, and write shippable weights.

    vst codec train --steps 3000 --out codec/mini/weights
    vst codec train --variant mini-zh --modes small --corpus runs/corpus_zh/mix.jsonl.zst \
        --init-from shipped --steps 2000 --threads 1 --out runs/codec_zh/w1   # issue #24

(flags: `CodecTrainConfig` in codec/mini/configs.py; stage 2 is `vst codec train-reader`.)

Seeded and single-process (plus one render worker); the loss is the CTC NLL per byte of
every band of every page, and progress is tracked by GREEDY decoding precision on
validation pages (documents held out of training), next to the blind floor.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from codec.mini import mode_config, variant_of
from codec.mini.configs import (CodecTrainConfig, MiniRunConfig, init_files, training_record,
                                weights_dir)
from codec.mini.ctc import band_nll, best_path
from codec.mini.data import PageSample, PageStream, bands_of, collate, render_pages
from codec.mini.model import GlyphProbe, MiniNet, to_ink
from data.errors import BadInput


def load_texts(corpus: str | None, workdir: Path, n_docs: int) -> list[str]:
    """Documents of the corpus; by default the demo corpus, built locally if absent."""
    from data.corpus import build_demo_corpus, read_corpus

    path = Path(corpus) if corpus else workdir / "demo.jsonl.zst"
    if corpus is None and not path.exists():
        path = build_demo_corpus(workdir, n_docs=n_docs)
    return [doc.text for doc in read_corpus(path)]


def ink_batch(samples: list[PageSample]) -> torch.Tensor:
    return to_ink(torch.from_numpy(np.stack([s.ink for s in samples])))


def corrupt(tokens: torch.Tensor, noise: float, drop: float) -> torch.Tensor:
    """Token noise (a VST's predictions are never exact) and dropped tokens (zeros: the
    null token), so the read-out is smooth around real tokens and has a prior."""
    keep = (torch.rand(tokens.shape[:2]) >= drop).to(tokens.dtype)[..., None]
    return (tokens + noise * torch.randn_like(tokens)) * keep


def aligned_targets(samples: list[PageSample], cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """Canonical CTC paths per band [B*rows, frames] and which bands have one."""
    F_line, lpb = cfg.frames_per_line, cfg.lines_per_band
    blank = np.zeros(F_line, dtype=np.int16)
    paths, ok = [], []
    for s in samples:
        lines = s.frames + [blank] * (cfg.geometry.n_lines - len(s.frames))
        for r in range(cfg.rows):
            chunk = lines[r * lpb:(r + 1) * lpb]
            ok.append(all(p is not None for p in chunk))
            paths.append(np.concatenate([blank if p is None else p for p in chunk]))
    return torch.from_numpy(np.stack(paths).astype(np.int64)), torch.tensor(ok)


def init_from(net: MiniNet, folder: Path, prefix: str = "") -> list[str]:
    """Copy into `net` every weight (named `prefix`...) of the checkpoint of its mode in
    `folder` (else `small`'s) whose shape fits; class heads and embeddings (`mini`'s classes
    are the first ids of every vocabulary) row by row. Returns the names copied."""
    from safetensors.torch import load_file

    path = folder / f"{net.cfg.mode}.safetensors"
    state = load_file(str(path if path.exists() else folder / "small.safetensors"))
    own = net.state_dict()
    copied = []
    for name, value in state.items():
        mine = own.get(name)
        if mine is None or not name.startswith(prefix):
            continue
        if mine.shape == value.shape:
            mine.copy_(value.float())
        elif mine.dim() >= 1 and mine.shape[1:] == value.shape[1:] and \
                mine.shape[0] > value.shape[0] and \
                name.endswith(("head.weight", "head.bias", "embed.weight")):
            mine[:value.shape[0]].copy_(value.float())
        else:
            continue
        copied.append(name)
    return copied


def probe_loss(probe: GlyphProbe, codes: torch.Tensor, samples: list[PageSample],
               blank_frames: float = 1.0) -> torch.Tensor:
    """Summed cross-entropy of the canonical path read straight off the encoder's codes
    (`blank_frames` < 1: sampled blank cells, `sparse_ce`)."""
    n_lines = codes.shape[1]
    empty = np.zeros(2 * probe.cells, dtype=np.int16)
    paths, ok = [], []
    for s in samples:
        for i in range(n_lines):
            p = s.frames[i] if i < len(s.frames) else empty
            ok.append(p is not None)
            paths.append((empty if p is None else p)[0::2])  # the character in each cell
    paths = torch.from_numpy(np.stack(paths).astype(np.int64))
    ok = torch.tensor(ok)
    if blank_frames >= 1:
        logits = probe(codes)
        return torch.nn.functional.cross_entropy(logits[ok].float().flatten(0, 1),
                                                 paths[ok].flatten(), reduction="sum")
    return sparse_ce(probe.head, probe.features(codes), paths, ok, blank_frames)


def sparse_ce(head, feats: torch.Tensor, paths: torch.Tensor, ok: torch.Tensor,
              blank_frames: float) -> torch.Tensor:
    """Summed cross-entropy of canonical paths [N, T] on features [N, T, d] through `head`,
    on every character position of the rows that have a path (`ok`) and a random
    `blank_frames` share of their blank positions, weighted 1 / blank_frames (an unbiased
    estimate of the full sum, at a fraction of the cost of a large vocabulary's logits)."""
    chosen = ok[:, None] & ((paths != 0) | (torch.rand(paths.shape) < blank_frames))
    targets = paths[chosen]
    weight = torch.where(targets == 0, 1.0 / blank_frames, 1.0)
    ce = torch.nn.functional.cross_entropy(head(feats[chosen.to(feats.device)]).float(),
                                           targets.to(feats.device), reduction="none")
    return (ce * weight.to(ce.device)).sum()


def page_loss(net: MiniNet, tokens: torch.Tensor, samples: list[PageSample],
              aligned: float = 0.0, ctc: float = 1.0,
              blank_frames: float = 1.0) -> tuple[torch.Tensor, int]:
    """Summed CTC NLL of every band (+ `aligned` x cross-entropy of the canonical path).

    `ctc` 0: the canonical-path cross-entropy alone, on sampled blank frames
    (`blank_frames`, `sparse_ce`): a large vocabulary's logits on every frame cost more
    than the rest of a step (mini-zh)."""
    c = net.cfg
    targets = [b for s in samples for b in bands_of(s, c.rows, c.lines_per_band)]
    if not ctc:
        paths, ok = aligned_targets(samples, c)
        feats = net.readout.features(tokens).reshape(len(paths), paths.shape[1], -1)
        ce = sparse_ce(net.readout.head, feats, paths, ok, blank_frames)
        return aligned * ce, sum(len(t) for t in targets)
    logits = net.readout(tokens).flatten(0, 1)
    loss = ctc * band_nll(logits, targets, c.chars).sum()
    if aligned:
        paths, ok = aligned_targets(samples, c)
        ce = torch.nn.functional.cross_entropy(logits[ok].float().flatten(0, 1),
                                               paths[ok].flatten(), reduction="sum")
        loss = loss + aligned * ce
    return loss, sum(len(t) for t in targets)


@torch.no_grad()
def greedy_texts(net: MiniNet, tokens: torch.Tensor, chunk: int = 2) -> list[str]:
    out = []
    for i in range(0, len(tokens), chunk):  # a few pages at a time: large vocabularies
        out += ["".join(best_path(p, net.cfg.chars))
                for p in net.readout(tokens[i:i + chunk].float())]
    return out


@torch.no_grad()
def evaluate(nets: dict[str, MiniNet], val: list[PageSample]) -> dict[str, dict[str, float]]:
    from codec.text_metrics import precision

    out = {}
    refs = [s.text for s in val]
    ink = ink_batch(val)
    for mode, net in nets.items():
        tokens = torch.cat([net.encode(ink[i:i + 16]) for i in range(0, len(val), 16)])
        preds = greedy_texts(net, tokens)
        blind = greedy_texts(net, torch.zeros_like(tokens))
        nll, nbytes = 0.0, 0
        for i in range(0, len(val), 2):
            n, b = page_loss(net, tokens[i:i + 2], val[i:i + 2])
            nll, nbytes = nll + float(n), nbytes + b
        out[mode] = {
            "precision": float(np.mean([precision(p, r) for p, r in zip(preds, refs)])),
            "exact": float(np.mean([p == r for p, r in zip(preds, refs)])),
            "blind_precision": float(np.mean([precision(p, r) for p, r in zip(blind, refs)])),
            "val_nats_per_char": float(nll) / nbytes,
        }
    return out


def save(net: MiniNet, render_config, out: Path, meta: dict) -> Path:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    mode = net.cfg.mode
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in net.state_dict().items()}
    path = out / f"{mode}.safetensors"
    save_file(state, str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    prefix = "mini-zh" if net.cfg.vocab == "zh" else "mini"
    info = {"version": f"{prefix}-{mode}-{digest}", "model": net.cfg.to_dict(),
            "render_config": render_config.to_dict(), **meta}
    (out / f"{mode}.json").write_text(json.dumps(info, indent=2) + "\n")
    return path


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


@dataclass
class Run:
    render_config: object
    workdir: Path
    train_texts: list[str]
    val_texts: list[str]
    val: list[PageSample]


def start_run(args: MiniRunConfig) -> Run:
    """Seeds, threads, the corpus split (every 20th document held out) and validation pages."""
    from render import get_preset

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    from codec.mini.vocab import get_vocab

    variant = variant_of(args.variant)
    render_config = get_preset(variant.render_preset)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    texts = load_texts(args.corpus, workdir, args.n_docs)
    val_texts = texts[::20]
    train_texts = [t for i, t in enumerate(texts) if i % 20]
    return Run(render_config, workdir, train_texts, val_texts,
               render_pages(val_texts, render_config, args.val_pages,
                            get_vocab(variant.vocab)))


def page_loader(args: MiniRunConfig, run: Run, structured: float = 0.0):
    """Endless batches of rendered training pages (a list of PageSample per step)."""
    from codec.mini.vocab import gb2312_chars, get_vocab

    chars = get_vocab(variant_of(args.variant).vocab)
    hanzi = gb2312_chars()[1] if chars.name == "zh" else ""
    return torch.utils.data.DataLoader(
        PageStream(run.train_texts, run.render_config, seed=args.seed,
                   synthetic=args.synthetic, structured=structured, chars=chars, hanzi=hanzi),
        batch_size=args.batch, collate_fn=collate, num_workers=args.workers,
        **({"prefetch_factor": 4} if args.workers else {}))


def scheduled_batches(args: MiniRunConfig, opt: torch.optim.Optimizer, loader):
    """(step, pages, validate now?) for each step of the run, with the LR set for the step."""
    batches = iter(loader)
    for step in range(min(args.steps, args.stop_at or args.steps)):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        validate = (step + 1) % args.val_every == 0 or step + 1 in (args.steps, args.stop_at)
        yield step, next(batches), validate


def optimizer_step(opt: torch.optim.Optimizer, params: list, loss: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


def record_validation(log, bar, history: list[dict], step: int, t0: float, metrics: dict,
                      **train_losses: dict) -> None:
    """Append a validation to the history and the JSONL log, and show it under the bar."""
    rec = {"step": step + 1, "minutes": (time.time() - t0) / 60, **train_losses, "val": metrics}
    history.append(rec)
    log.write(json.dumps(rec) + "\n")
    log.flush()
    bar.write(f"step {step + 1} ({rec['minutes']:.1f} min) greedy precision "
              + " ".join(f"{m}={v['precision']:.4f} (blind {v['blind_precision']:.3f})"
                         for m, v in metrics.items()))


def train(args: CodecTrainConfig) -> dict:
    from tqdm import tqdm

    init = init_files(args.init, args.modes, ".safetensors", args.variant) if args.init else {}
    if args.freeze_encoder and not (args.init or args.init_from):
        raise BadInput("--freeze-encoder needs an encoder to keep: give --init or --init-from")
    run = start_run(args)
    render_config, workdir, train_texts, val_texts, val = (
        run.render_config, run.workdir, run.train_texts, run.val_texts, run.val)

    modes = args.modes.split(",")
    nets: dict[str, MiniNet] = {}
    for mode in modes:
        net = MiniNet(mode_config(mode, render_config, args.variant, dim=args.dim, D=args.D))
        if nets:  # one line encoder shared by every mode
            net.encoder = next(iter(nets.values())).encoder
        nets[mode] = net
    if init:  # continue from a checkpoint folder (e.g. to anneal or fine-tune)
        from safetensors.torch import load_file

        for mode, net in nets.items():
            state = load_file(str(init[mode]))
            net.load_state_dict({k: v.float() for k, v in state.items()})
    elif args.init_from:  # a new variant starts from what fits of mini's weights
        with torch.no_grad():
            for mode, net in nets.items():
                copied = init_from(net, weights_dir(args.init_from))
                print(f"[{mode}] initialised {len(copied)} tensors from {args.init_from}: "
                      + ", ".join(copied))
    encoder = next(iter(nets.values())).encoder
    if args.freeze_encoder:
        encoder.requires_grad_(False)
    probes = {mode: GlyphProbe(net.cfg) for mode, net in nets.items()}  # training aid only
    params = list({id(p): p for m in [*nets.values(), *probes.values()]
                   for p in m.parameters() if p.requires_grad}.values())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    loader = page_loader(args, run)

    log = open(workdir / "train_log.jsonl", "w")  # noqa: SIM115 (closed after the loop)
    history = []
    t0 = time.time()
    bar = tqdm(total=args.steps, desc="mini codec", dynamic_ncols=True)
    for step, samples, validate in scheduled_batches(args, opt, loader):
        ink = ink_batch(samples)
        total = torch.zeros(())
        per_mode = {}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            with torch.set_grad_enabled(not args.freeze_encoder):
                feats = encoder(ink)
            for mode, net in nets.items():
                codes = net.compressor.code(feats)
                noisy = step >= args.noise_after * args.steps  # clean tokens while learning to read
                tokens = corrupt(net.compressor(feats, codes), args.noise * noisy, args.drop)
                nll, nbytes = page_loss(net, tokens, samples, args.aligned, args.ctc,
                                        args.blank_frames)
                if args.probe:
                    probe = probe_loss(probes[mode], codes, samples, args.blank_frames)
                    per_mode["probe"] = probe.detach() / nbytes
                    nll = nll + args.probe * probe
                per_mode[mode] = nll / nbytes
                total = total + nll / nbytes
        optimizer_step(opt, params, total)
        bar.update(1)
        bar.set_postfix({m: f"{v.item():.3f}" for m, v in per_mode.items()})
        if validate:
            metrics = evaluate(nets, val)
            record_validation(log, bar, history, step, t0, metrics, train_loss_per_char={
                m: v.item() for m, v in per_mode.items()})
            for net in nets.values():  # a usable checkpoint at every validation
                save(net, render_config, weights_dir(args.out, args.variant),
                     meta_of(args, history, t0, train_texts, val_texts))
    bar.close()
    log.close()
    return {"minutes": (time.time() - t0) / 60, "history": history}


def meta_of(args: CodecTrainConfig, history: list[dict], t0: float, train_texts: list,
            val_texts: list) -> dict:
    previous = None  # the training record of the checkpoint this run started from
    init = (weights_dir(args.init, args.variant) if args.init
            else weights_dir(args.init_from) if args.init_from else None)
    if init and (init / "small.json").exists():
        previous = json.loads((init / "small.json").read_text()).get("training")
    return {"training": {**training_record(args, "vst codec train"),
                         "init": args.init, "previous": previous,
                         "steps_done": history[-1]["step"] if history else 0, "steps": args.steps,
                         "batch": args.batch, "seed": args.seed,
                         "minutes": round((time.time() - t0) / 60, 1),
                         "corpus": args.corpus or "demo corpus", "train_docs": len(train_texts),
                         "val_docs": len(val_texts), "val": history[-1]["val"] if history else {}}}
