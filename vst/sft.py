"""Instruction tuning (SFT) of a pretrained VST on [V_instruction, V_context, V_response].

Full-parameter fine-tuning (peft is not installed in this environment, so no LoRA): the
base run's weights plus the new special vectors and stop head (vst/sft_data.py). The loss
falls only on response positions: L_reg (MSE + cosine) or the energy score, decoder-CE of
the response pages through the frozen codec, and the stop head's BCE.

    vst sft --base runs/vst --data sft.jsonl --val-data heldout.jsonl --max-seconds 300 \
        --out runs/sft
    vst sft --base runs/vst --data sft.jsonl --out runs/sft --resume   # continue exactly
    vst chat runs/sft --prompt "What is the value of the key cedar-1234?"

Single process (the CPU codec reads every response page); from Python:
`from vst.sft import sft; sft(SFTConfig(base=..., data=..., out=...))`.
"""

from __future__ import annotations

import json
import os
import math
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from data.errors import BadCheckpoint, BadInput, BadStore, MissingPath
from vst.checkpoint import latest_checkpoint, load_checkpoint, read_state, save_checkpoint
from vst.reader import build_reader, reader_extra, reader_parameters, restore_reader
from vst.config import ModelConfig
from vst.heads import energy_score
from vst.losses import decoder_nll, window_mean
from vst.model import VST
from vst.pointer import pointer_flops, vector_pointer_terms
from vst.sft_config import SFTConfig
from vst.sft_data import N_SPECIALS, EncodedSample, SFTBatch, collate_sft, encode_sample
from vst.train import dist_env, process_group, reduce_terms, truncate_metrics


def resolve_base(path: str | Path) -> Path:
    p = Path(path)
    if (p / "state.json").exists():
        return p
    found = latest_checkpoint(p)
    if found is None:
        raise MissingPath(f"no checkpoint in {p}", hint="--base takes a `vst train` run directory")
    return found


def codec_source(state: dict[str, Any]) -> dict[str, Any]:
    """How to load the codec a checkpoint was trained through: spec, mode, path, options
    (an SFT checkpoint records its base run's, resolved, so its data need not be around)."""
    from vst.train_config import TrainConfig, resolve_codec

    if "sft" in state and "source" in state["sft"]:
        return state["sft"]["source"]
    t = resolve_codec(TrainConfig.from_dict(state["train_config"]))
    return {"spec": t.codec, "mode": t.codec_mode, "path": t.codec_path,
            "options": list(t.codec_option)}


def codec_of_state(state: dict[str, Any], spec: str | None = None, mode: str | None = None):
    """The codec a checkpoint was trained through, with the run's hierarchical reader where
    it trained one (vst/reader.py), or `spec` instead."""
    from codec import load_codec
    from vst.reader import checkpoint_reader

    if spec is not None:
        return load_codec(spec, mode=mode)
    src = codec_source(state)
    codec = load_codec(src["spec"], mode=mode or src["mode"], path=src["path"],
                       options=src["options"])
    return checkpoint_reader(state, codec)


def codec_record(codec) -> dict[str, Any]:
    return {"spec": codec.name, "mode": codec.mode, "D": codec.D, "n": codec.n,
            "version": str(codec.version)}


def sft_model_from_base(base: Path, device, pointer_dim: int = 0) -> VST:
    """The base run's model with the special vectors and stop head added (fresh weights),
    and a fresh pointer head of width `pointer_dim` if asked and the base has none."""
    state = read_state(base)
    mcfg = ModelConfig.from_dict(state["model_config"])
    if mcfg.modality != "vector":
        raise BadCheckpoint("vst sft tunes a VST (vector modality); the base is a text model")
    fresh = ("special.", "stop.") + (("pointer.",) if pointer_dim and not mcfg.pointer else ())
    model = VST(mcfg.with_(specials=N_SPECIALS, pointer=mcfg.pointer or pointer_dim)).to(device)
    from safetensors.torch import load_file

    missing, unexpected = model.load_state_dict(
        load_file(base / "model.safetensors", device=str(device)), strict=False)
    if unexpected or any(not k.startswith(fresh) for k in missing):
        raise ValueError(
            f"base checkpoint does not fit: missing {missing}, unexpected {unexpected}")
    return model


def sft_losses(model: VST, batch: SFTBatch, cfg: SFTConfig, codec=None
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss on response positions only (batch.resp), plus the stop BCE on batch.stop_mask."""
    h = model(batch.inputs, torch.zeros_like(batch.valid), batch.positions,
              special=batch.special)
    x, m = batch.targets, batch.resp
    terms: dict[str, torch.Tensor] = {}
    total = h.new_zeros(())
    if model.cfg.head == "energy":
        samples = model.head.sample(h, model.cfg.energy_samples).float()
        terms["energy"] = window_mean(energy_score(samples, x), m)
        total = total + cfg.energy * terms["energy"]
        x_hat = samples[0]
    else:
        x_hat = model.head(h).float()
    terms["mse"] = window_mean((x_hat - x).square().mean(-1), m)
    terms["cos"] = window_mean(1 - F.cosine_similarity(x_hat, x, dim=-1, eps=1e-6), m)
    total = total + cfg.mse * terms["mse"] + cfg.cos * terms["cos"]
    stop_logit = model.stop(h)[..., 0].float()
    bce = F.binary_cross_entropy_with_logits(stop_logit, batch.stop_label, reduction="none")
    # balanced: a response has one end among its n * pages positions, so an unweighted BCE
    # would learn "never stop" first; positives and negatives count half each
    pos = batch.stop_mask & (batch.stop_label > 0)
    neg = batch.stop_mask & (batch.stop_label == 0)
    terms["stop"] = 0.5 * (bce[pos].mean() if pos.any() else bce.new_zeros(())) + \
        0.5 * (bce[neg].mean() if neg.any() else bce.new_zeros(()))
    total = total + cfg.stop * terms["stop"]
    if model.cfg.pointer:  # answers that are exact copies of context tokens
        ok = (batch.special < 0) & batch.valid
        ptr = vector_pointer_terms(model.pointer, h, batch.inputs, x, ok, m)
        terms.update(ptr)
        total = total + cfg.ptr * (ptr["ptr"] + ptr["ptr_gate"])
    if cfg.dec > 0 and codec is not None:
        n = model.cfg.tokens_per_page
        rows = [(b, t0, text) for b, pages in enumerate(batch.resp_pages) for t0, text in pages]
        pred = torch.stack([x_hat[b, t0 : t0 + n] for b, t0, _ in rows])
        nll, nbytes = decoder_nll(codec, pred, [t for _, _, t in rows])
        terms["dec"] = (nll / nbytes.clamp(min=1)).mean()
        terms["dec_bpb"] = (nll.sum() / (math.log(2) * nbytes.sum().clamp(min=1))).detach()
        total = total + cfg.dec * terms["dec"]
    terms["loss"] = total
    return total, {k: v.detach() for k, v in terms.items()}


def sft_step_flops(model: VST, batch: SFTBatch, cfg: SFTConfig, codec=None) -> float:
    """Training FLOPs of one batch: each row's positions at its own length (padding is not
    work a better kernel would do), the pointer's scores at the response positions, and
    decoder-CE's forward and backward through the frozen codec on the response pages."""
    lens = [int(n) for n in batch.valid.sum(1)]
    total = sum(n * model.flops_per_token(n) for n in lens if n)
    if model.cfg.pointer:
        total += sum(pointer_flops(int(r), n, model.cfg.pointer)
                     for r, n in zip(batch.resp.sum(1), lens))
    if cfg.dec > 0 and codec is not None:
        from vst.flops import per_page_flops

        texts = [t for pages in batch.resp_pages for _, t in pages]
        if texts:  # a trained reader's weight gradients count too
            total += len(texts) * per_page_flops(
                codec, texts, weight_grads=bool(reader_parameters(codec)))
    return total


def load_samples(path: str, cfg: SFTConfig, skips):
    from data.corpus.instructions import read_instructions

    return list(read_instructions(path, fmt=cfg.format, skips=skips,
                                  max_context_chars=cfg.max_context_chars))


def split_samples(cfg: SFTConfig, skips):
    from data.corpus.splits import split_of

    train = load_samples(cfg.data, cfg, skips)
    if cfg.val_data:
        return train, load_samples(cfg.val_data, cfg, skips)
    return ([s for s in train if split_of(s.id, 0.05) == "train"],
            [s for s in train if split_of(s.id, 0.05) == "val"])


def _lr(step: int, cfg: SFTConfig, used: float) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, used))))


@torch.no_grad()
def evaluate_sft(model: VST, samples: list[EncodedSample], cfg: SFTConfig, codec) -> dict:
    model.eval()
    sums: dict[str, float] = {}
    chunks = [samples[i : i + cfg.batch_size] for i in range(0, len(samples), cfg.batch_size)]
    for chunk in chunks:
        batch = collate_sft(chunk, model.cfg.grid, model.cfg.D, model.cfg.rope,
                            cfg.max_context_pages).to(next(model.parameters()).device)
        _, terms = sft_losses(model, batch, cfg, codec)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v) / len(chunks)
    model.train()
    return sums


def sft(cfg: SFTConfig, codec=None) -> dict[str, Any]:
    """Fine-tune; returns {"history", "eval", "checkpoint", "skips", ...}. `codec`: an
    already loaded codec (the base run's own by default).

    Data-parallel under torchrun (`torchrun --standalone --nproc_per_node N -m jobs.cli sft
    ...`): each rank takes its share of every batch and the gradients are averaged across
    ranks before each step, so N ranks take the steps one process would; rank 0 logs and
    writes the checkpoints.
    """
    rank, world, local_rank = dist_env()
    if world > 1 and cfg.batch_size % world:
        raise BadInput(f"--batch-size {cfg.batch_size} must split evenly over {world} ranks")
    with process_group(world, cuda=cfg.device.startswith("cuda")):
        return _sft(cfg, codec, rank, world, local_rank)


def _average_across_ranks(tensors: list[torch.Tensor], world: int) -> None:
    import torch.distributed as dist

    for t in tensors:
        dist.all_reduce(t)
        t.div_(world)


def _sft(cfg: SFTConfig, codec, rank: int, world: int, local_rank: int) -> dict[str, Any]:
    from data.corpus import SkipLog
    from data.corpus.instruct_gen import mix_by_answer_tokens

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = torch.device(f"cuda:{local_rank}" if cfg.device == "cuda" and world > 1
                          else cfg.device)
    lead = rank == 0  # logs, checkpoints and the final evaluation
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    base = resolve_base(cfg.base)
    base_state = {**read_state(base), "checkpoint": str(base)}
    codec = codec if codec is not None else codec_of_state(base_state, cfg.codec, cfg.codec_mode)
    for p in codec.parameters():  # a base run's trained reader reads, frozen, as the codec does
        p.requires_grad_(False)
    if cfg.reader != "frozen":  # a hierarchical reader trained beside the VST (vst/reader.py)
        if cfg.dec <= 0:
            raise BadInput("--reader trainable learns through decoder-CE", hint="give --dec > 0")
        if world > 1:
            raise BadInput("--reader trainable runs in one process for now",
                           hint="drop torchrun or use --reader frozen")
        codec = build_reader(cfg.reader, codec)
    reader_params = reader_parameters(codec)
    source = codec_source(base_state) if cfg.codec is None else \
        {"spec": cfg.codec, "mode": cfg.codec_mode, "path": None, "options": []}
    ckpt = latest_checkpoint(out) if cfg.resume else None
    if ckpt is not None:
        model = VST(ModelConfig.from_dict(read_state(ckpt)["model_config"])).to(device)
    else:
        model = sft_model_from_base(base, device, cfg.pointer_dim)
    if (codec.D, codec.n) != (model.cfg.D, model.cfg.tokens_per_page):
        raise BadCheckpoint(f"codec D={codec.D}, n={codec.n} does not match the base model's "
                            f"D={model.cfg.D}, n={model.cfg.tokens_per_page}",
                            hint="leave --codec unset to use the base run's own")
    skips = SkipLog()
    train_s, val_s = split_samples(cfg, skips)
    if cfg.mix_budget > 0:
        pools: dict[str, list] = {}
        for s in train_s:
            pools.setdefault(s.family, []).append(s)
        train_s = mix_by_answer_tokens(pools, {k: 1.0 for k in pools}, cfg.mix_budget, cfg.seed)
    if not train_s:
        raise BadInput(f"no usable training samples in {cfg.data} ({len(skips)} skipped)")
    cache: dict[str, EncodedSample] = {}
    store = None
    if cfg.store:
        from data.store import Store
        from vst.sft_data import encoded_from_store

        store = Store(cfg.store)
        if (store.meta.D, store.meta.n) != (codec.D, codec.n):
            raise BadStore(f"store {cfg.store} holds {store.meta.n} x {store.meta.D} tokens a "
                           f"page; the codec gives {codec.n} x {codec.D}",
                           hint="convert the samples with the base run's codec")

    def enc(s):  # each distinct sample is rendered and encoded once (or read from the store)
        if s.id not in cache:
            if store is not None and f"{s.id}#context" not in store \
                    and f"{s.id}#instruction" not in store:
                raise BadStore(f"sample {s.id} is not in store {cfg.store}",
                               hint="convert the same data file's segments.jsonl.zst")
            cache[s.id] = encoded_from_store(store, s) if store is not None \
                else encode_sample(codec, s)
        return cache[s.id]

    val_enc = [enc(s) for s in val_s[: cfg.eval_samples]]
    lora = None
    if cfg.lora_rank > 0:
        from vst.lora import apply_lora

        lora = apply_lora(model, cfg.lora_rank, cfg.lora_alpha)
    groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    if reader_params:  # its own peak lr, the same schedule
        groups.append({"params": reader_params,
                       "lr_scale": (cfg.reader_lr or cfg.lr) / cfg.lr})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
    step, seconds, flops = 0, 0.0, 0.0
    if ckpt is not None:
        st = load_checkpoint(ckpt, model, opt, rank=rank)
        restore_reader(codec, ckpt)
        step, seconds, flops = st["step"], st.get("train_seconds", 0.0), st.get("train_flops", 0.0)
    if lead:
        (out / "config.json").write_text(json.dumps({"sft": asdict(cfg),
                                                     "model": model.cfg.to_dict()}, indent=1))
        skips.write_jsonl(out / "skips.jsonl")
    metrics = out / "metrics.jsonl"
    if lead:
        truncate_metrics(metrics, step)
    log = metrics.open("a") if lead else open(os.devnull, "w")
    first = step + 1
    history: list[dict[str, float]] = []

    def order(i: int) -> int:  # a seeded permutation per epoch: the data position is the step
        epoch, j = divmod(i, len(train_s))
        perm = list(range(len(train_s)))
        random.Random(f"{cfg.seed}|{epoch}").shuffle(perm)
        return perm[j]

    def state() -> dict[str, Any]:
        return {"sft": {"config": asdict(cfg), "base": str(base), "codec": codec_record(codec),
                        "source": source},
                # a trained reader is loaded back by vst/reader.py's load_reader
                "train_config": {**base_state.get("train_config", {}),
                                 **({"reader": cfg.reader} if reader_params else {})},
                "model_config": model.cfg.to_dict(), "train_seconds": seconds,
                "train_flops": flops, "lora": lora,
                "history_tail": history[-5:]}

    model.train()
    while step < cfg.steps and not (cfg.max_seconds and seconds >= cfg.max_seconds) \
            and not (cfg.max_flops and flops >= cfg.max_flops):
        # rendering + encoding a sample the first time it is drawn is data preparation (the
        # conversion job's work at scale), so the training clock starts after it
        chunk = [enc(train_s[order(step * cfg.batch_size + k)])
                 for k in range(rank, cfg.batch_size, world)]
        t0 = time.perf_counter()
        lr = _lr(step, cfg, max(step / cfg.steps,
                                seconds / cfg.max_seconds if cfg.max_seconds else 0.0,
                                flops / cfg.max_flops if cfg.max_flops else 0.0))
        for g in opt.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        batch = collate_sft(chunk, model.cfg.grid, model.cfg.D, model.cfg.rope,
                            cfg.max_context_pages).to(device)
        loss, terms = sft_losses(model, batch, cfg, codec)
        flops += sft_step_flops(model, batch, cfg, codec) * world
        loss.backward()
        if world > 1:  # each rank's mean over equal shares: their average is the batch mean
            _average_across_ranks([p.grad for p in model.parameters() if p.grad is not None],
                                  world)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([*model.parameters(), *reader_params],
                                           cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        seconds += time.perf_counter() - t0
        rec = {"step": step, "lr": lr, "train_seconds": seconds, "train_flops": flops,
               **reduce_terms({k: v.detach() for k, v in terms.items()}, world)}
        history.append(rec)
        if lead and (step % cfg.log_every == 0 or step == first):
            log.write(json.dumps({"split": "train", **rec}) + "\n")
            log.flush()
            print(f"sft step {step} loss {rec['loss']:.4f} stop {rec['stop']:.4f} "
                  f"{seconds:.0f}s", flush=True)
        if cfg.save_every > 0 and step % cfg.save_every == 0:
            save_checkpoint(out, step, model, opt, state(), rank, world, cfg.keep,
                            reader_extra(codec))
        if cfg.halt_at is not None and step >= cfg.halt_at:
            log.close()
            return {"halted_at": step, "history": history}
    final = evaluate_sft(model, val_enc, cfg, codec) if val_enc and lead else {}
    log.write(json.dumps({"split": "val", "step": step, **final}) + "\n")
    log.close()
    path = save_checkpoint(out, step, model, opt, state(), rank, world, cfg.keep,
                           reader_extra(codec))
    result = {"steps": step, "eval": final, "checkpoint": str(path), "train_seconds": seconds,
              "train_flops": flops,
              "train_samples": len(train_s), "val_samples": len(val_s),
              "skips": len(skips),
              "skip_reasons": {f"{a}: {r}": c for (a, r), c in skips.counts().items()}}
    if lead:
        (out / "result.json").write_text(json.dumps(result, indent=1))
    return {**result, "history": history}


def sft_and_print(cfg: SFTConfig) -> dict[str, Any]:
    """`vst sft`: run and print the held-out losses and the checkpoint."""
    result = sft(cfg)
    print(json.dumps(result["eval"], indent=1))
    print(f"checkpoint: {result['checkpoint']}")
    return result
