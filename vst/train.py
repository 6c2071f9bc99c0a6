r"""Train a Visual-Symbolic Transformer (or the same-shape text baseline).

Single device (CPU, or one GPU with bf16 autocast); the codec defaults to the store's own
(`vst train` and its alias `vst-train` take every field of `TrainConfig` as a flag):

    vst-train --flavour debug --data synthetic --steps 200 --out runs/vst-debug
    vst-train --flavour small --data runs/demo/store --steps 5000 --batch-size 32 \
        --pages-per-window 8 --dec 0.1 --out runs/vst-small
    vst-train --modality text --tokenizer cl100k --flavour small --data runs/demo/store \
        --steps 5000 --batch-size 32 --pages-per-window 8 --out runs/text-small

DDP across processes (gloo on CPU, NCCL on GPU); the global batch is split over ranks:

    torchrun --standalone --nproc_per_node 2 -m jobs.cli train --flavour debug --data synthetic \
        --steps 200 --batch-size 8 --out runs/vst-ddp
    torchrun --standalone --nproc_per_node 8 -m jobs.cli train --flavour 1b --data /data/store \
        --batch-size 256 --grad-accum 4 --pages-per-window 16 --out runs/vst-1b

Add `--resume` to continue from the newest checkpoint in `--out` exactly (weights,
optimizer, RNG, data position). From Python: `from vst.train import TrainConfig, train`;
`train(TrainConfig(...))` returns a dict with the history, final eval and checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch

from data.errors import BadInput, BadStore
from vst.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from vst.config import ModelConfig, flavour
from vst.data import Loader, TextCollate, WindowSource, collate_vector, text_codec
from vst.evaluate import evaluate
from vst.losses import compute_losses
from vst.model import VST
from vst.reader import build_reader, reader_extra, reader_parameters, restore_reader
from vst.schedule import budget_used, lr_at, resumed_flops, resumed_seconds, resumed_total
from vst.train_config import TrainConfig, resolve_codec

PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


# -- setup helpers ----------------------------------------------------------------------


def dist_env() -> tuple[int, int, int]:
    """(rank, world, local_rank) from torchrun's environment; (0, 1, 0) when absent."""
    return (
        int(os.environ.get("RANK", "0")),
        int(os.environ.get("WORLD_SIZE", "1")),
        int(os.environ.get("LOCAL_RANK", "0")),
    )


def pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _check_codec_matches_store(cfg: TrainConfig, codec, rank: int) -> None:
    if codec is None or cfg.data == "synthetic" or rank != 0:
        return
    from data.store import read_store_meta

    meta = read_store_meta(cfg.data)
    if (codec.D, codec.n) != (meta.D, meta.n):
        raise BadStore(
            f"codec {cfg.codec} has D={codec.D}, n={codec.n}; the store has "
            f"D={meta.D}, n={meta.n}: decoder-CE and bpb need the store's codec",
            hint="--codec auto uses the store's own")
    if str(getattr(codec, "version", "")) != meta.codec_version:
        print(
            f"warning: codec version {codec.version} differs from the store's {meta.codec_version}"
        )


def build_sources(cfg: TrainConfig, codec) -> tuple[WindowSource, WindowSource]:
    if cfg.data == "synthetic":
        from vst.synthetic import SyntheticSource

        kw = dict(n_docs=cfg.synthetic_docs, pages_per_window=cfg.pages_per_window, seed=cfg.seed)
        return SyntheticSource(codec, split="train", **kw), SyntheticSource(
            codec, split="val", **kw
        )
    from vst.store_source import store_sources, window_tokens

    return store_sources(
        cfg.data,
        cfg.window_tokens or window_tokens(cfg.data, cfg.pages_per_window),
        cfg.val_fraction,
    )


def mean_token_norm(source: WindowSource, windows: int = 16) -> float:
    """Mean norm of real (non-padding) tokens in the first windows: the default alpha."""
    total, count = 0.0, 0
    for i in range(min(windows, len(source))):
        w = source.window(i)
        norms = torch.from_numpy(w.tokens).float().norm(dim=-1)
        if w.valid is not None:
            norms = norms[torch.from_numpy(w.valid)]
        total, count = total + float(norms.sum()), count + norms.numel()
    return total / max(count, 1)


def build_model_config(cfg: TrainConfig, source: WindowSource) -> ModelConfig:
    copied = ("modality", "mlp", "head", "norm_proj", "energy_samples", "head_init", "aux_head",
              "gate", "mixture")  # the same name and meaning in both configs
    over: dict[str, Any] = {name: getattr(cfg, name) for name in copied}
    over.update(D=source.D, grid=tuple(source.grid))
    if cfg.depth is not None:
        over["depth"] = cfg.depth
    if cfg.modality == "text":
        over.update(
            rope="1d", vocab_size=text_codec(cfg.tokenizer)[2], max_seq_len=cfg.text_seq_len
        )
    else:
        over.update(rope=cfg.rope, alpha=cfg.alpha if cfg.alpha > 0 else mean_token_norm(source))
    return flavour(cfg.flavour, **over)


def make_collate(cfg: TrainConfig, mcfg: ModelConfig) -> Callable:
    if cfg.modality == "text":  # evaluation scores whole windows from it (vst.evaluate)
        return TextCollate(cfg.tokenizer, cfg.text_seq_len, cfg.text_context == "page")
    return lambda ws: collate_vector(ws, mcfg.grid, mcfg.rope)


def make_optimizer(model: VST, cfg: TrainConfig, fused: bool,
                   reader_params: list[torch.nn.Parameter] = ()) -> torch.optim.Optimizer:
    # no weight decay on gains, biases and the document-start vector
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": other, "weight_decay": 0.0},
    ]
    if reader_params:  # the hierarchical reader: its own peak lr, the same schedule
        scale = (cfg.reader_lr if cfg.reader_lr is not None else cfg.lr) / cfg.lr
        groups.append({"params": list(reader_params), "weight_decay": 0.0, "lr_scale": scale})
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused or None)


def truncate_metrics(path: Path, resume_step: int) -> None:
    """On resume, drop a metrics.jsonl's records from after the checkpoint (a killed run's
    tail), and all of them when starting over (step 0)."""
    if path.exists():
        kept = [line for line in path.read_text().splitlines()
                if resume_step and json.loads(line)["step"] <= resume_step]
        path.write_text("".join(line + "\n" for line in kept))


class Logger:
    """TensorBoard (+ wandb when installed and asked for) and a metrics.jsonl, rank 0 only."""

    def __init__(self, cfg: TrainConfig, out: Path, active: bool, resume_step: int) -> None:
        self.active, self.tb, self.wb = active, None, None
        self.jsonl = (out / "metrics.jsonl") if active else None
        if not active:
            return
        truncate_metrics(self.jsonl, resume_step)
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tb"), purge_step=resume_step or None)
        if cfg.wandb:
            try:
                import wandb
            except ImportError:
                print("wandb is not installed; logging to TensorBoard only")
            else:
                self.wb = wandb.init(
                    project=cfg.wandb, config=asdict(cfg), dir=str(out), resume="allow"
                )

    def log(self, step: int, metrics: dict[str, float], prefix: str = "train") -> None:
        if not self.active:
            return
        with self.jsonl.open("a") as f:
            f.write(json.dumps({"step": step, "split": prefix, **metrics}) + "\n")
        for k, v in metrics.items():
            if self.tb is not None:
                self.tb.add_scalar(f"{prefix}/{k}", v, step)
        if self.wb is not None:
            self.wb.log({f"{prefix}/{k}": v for k, v in metrics.items()}, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wb is not None:
            self.wb.finish()


# -- the loop ---------------------------------------------------------------------------


def train(config: TrainConfig | dict[str, Any]) -> dict[str, Any]:
    """Train; returns {"history", "eval", "checkpoint", "tokens_per_s", "model_config", ...}.

    Under torchrun every rank calls this; the process group is created (and destroyed)
    here unless the caller already set one up.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    rank, world, local_rank = dist_env()
    with process_group(world, cuda=torch.cuda.is_available() and cfg.device != "cpu"):
        return _train(cfg, rank, world, local_rank)


@contextlib.contextmanager
def process_group(world: int, cuda: bool):
    """Under torchrun (world > 1): create the process group (NCCL on GPU, gloo on CPU) and
    destroy it after, unless the caller already set one up."""
    own = False
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo")
            own = True
    try:
        yield
    finally:
        if own:
            import torch.distributed as dist

            dist.destroy_process_group()


def _train(cfg: TrainConfig, rank: int, world: int, local_rank: int) -> dict[str, Any]:
    device = pick_device(cfg.device, local_rank)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = resolve_codec(cfg)
    torch.manual_seed(cfg.seed)  # same init on every rank (DDP also broadcasts it)

    codec = (
        cfg.load_codec()
        if (cfg.dec > 0 or cfg.modality == "vector" or cfg.data == "synthetic")
        else None
    )
    train_src, val_src = build_sources(cfg, codec)
    _check_codec_matches_store(cfg, codec, rank)
    # what decoder-CE and evaluation read the predictions with (vst/reader.py)
    reader = build_reader(cfg.reader, codec) if cfg.modality == "vector" else codec
    if reader_parameters(reader) and world > 1:
        raise BadInput("--reader trainable runs in one process for now (its weights sit "
                         "outside the DDP-wrapped VST); drop torchrun or use --reader frozen")
    ckpt = latest_checkpoint(out) if cfg.resume else None
    if ckpt is not None:  # the checkpoint's model config wins (alpha was measured once)
        from vst.checkpoint import read_state

        mcfg = ModelConfig.from_dict(read_state(ckpt)["model_config"])
    else:
        mcfg = build_model_config(cfg, train_src)
    model = VST(mcfg).to(device)
    use_bf16 = cfg.dtype == "bf16" or (cfg.dtype == "auto" and device.type == "cuda")
    opt = make_optimizer(model, cfg, fused=device.type == "cuda",
                         reader_params=reader_parameters(reader))
    step = 0
    if ckpt is not None:
        state = load_checkpoint(ckpt, model, opt, rank=rank)
        restore_reader(reader, ckpt)
        step = state["step"]
        if state.get("world", world) != world:
            print(
                f"note: resuming a {state['world']}-rank run on {world} ranks; "
                "the data order is unchanged"
            )
    if ckpt is None and rank > 0:
        torch.manual_seed(cfg.seed + 1000 * rank)  # ranks draw different energy-head noise
    lcfg = cfg.loss_config()
    trunk: torch.nn.Module = model
    if cfg.compile:
        trunk = torch.compile(model)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        trunk = DDP(trunk, device_ids=[device.index] if device.type == "cuda" else None)
    collate = make_collate(cfg, mcfg)
    loader = Loader(train_src, cfg.batch_size, cfg.seed, rank, world)
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)  # noqa: E731
    logger = Logger(cfg, out, rank == 0, step)
    flops_tok = model.flops_per_token(
        cfg.pages_per_window * mcfg.tokens_per_page
        if mcfg.modality == "vector"
        else cfg.text_seq_len
    )
    peak = _peak_flops(device)
    if rank == 0:
        (out / "config.json").write_text(
            json.dumps({"train": asdict(cfg), "model": mcfg.to_dict()}, indent=1)
        )
        print(
            f"VST {mcfg.modality} d_model={mcfg.d_model} depth={mcfg.depth} "
            f"params={model.num_params():,} device={device} world={world} start_step={step}"
        )

    def ckpt_state() -> dict[str, Any]:
        return {
            "train_config": asdict(cfg),
            "model_config": mcfg.to_dict(),
            "data_position": step,
            "history_tail": history[-5:],
        }

    def run_eval() -> dict[str, float]:
        metrics: dict[str, float] = {}
        if rank == 0:
            metrics = evaluate(
                model,
                val_src,
                collate,
                codec=reader,
                k=cfg.dec_pages if cfg.eval_pages is None else cfg.eval_pages,
                batches=cfg.eval_batches,
                batch_size=min(cfg.batch_size, max(1, len(val_src))),
                device=device,
                autocast=autocast,
                reg_weights=(cfg.mse, cfg.cos),
            )
            logger.log(step, metrics, "val")
        if world > 1:
            import torch.distributed as dist

            dist.barrier()
        return metrics

    # decoder-CE's FLOPs per page read (forward + backward to the tokens), counted once
    # on real pages of the first batch: with the mini codec it is ~27x the `tiny` trunk's
    # cost per page, so a comparison at equal FLOPs must include it (vst/flops.py)
    # (a trainable reader's weight gradients are counted too)
    dec_page_flops = 0.0
    if mcfg.modality == "vector" and cfg.dec > 0 and codec is not None:
        from vst.flops import per_page_flops

        sample = [p[2] for w in loader.windows(step)[:4] for p in w.pages][:8]
        dec_page_flops = per_page_flops(reader, sample, lines=cfg.dec_lines or None,
                                        weight_grads=bool(reader_parameters(reader)),
                                        causal=cfg.leak_free and reader.n_lines > 1)
    train_flops = resumed_flops(ckpt) if ckpt is not None else 0.0
    history: list[dict[str, float]] = []
    evals: list[dict[str, float]] = []
    bar = _progress(cfg, rank, step)
    tokens_seen, t_window, tok_window = 0, time.perf_counter(), 0
    last_rate = "-"  # tokens/s of the last logging window, for the progress bar
    t_start = time.perf_counter()
    model.train()
    # windows are a pure function of the step, so the next batch is read ahead in a thread
    # while this one computes; the order (and resume) is unaffected
    prefetch = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vst-data")
    pending = prefetch.submit(loader.windows, step)
    train_seconds = resumed_seconds(ckpt) if ckpt is not None else 0.0
    # what the run has read so far, across resumes (the last checkpoint's history carries
    # the totals): scaling fits need data seen, not only compute
    seen = {k: resumed_total(ckpt, k) if ckpt is not None else 0.0
            for k in ("positions_seen", "tokens_seen", "bytes_seen")}
    evals_done = int(budget_used(step, cfg, train_seconds, train_flops) * cfg.eval_points)
    t_step = time.perf_counter()
    while step < cfg.steps:
        used = budget_used(step, cfg, train_seconds, train_flops)
        if used >= 1:
            break
        lr = lr_at(step, cfg, used)
        for g in opt.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        windows = pending.result()
        pending = prefetch.submit(loader.windows, step + 1)
        terms, n_tok = _accumulate(
            windows,
            cfg.grad_accum,
            collate,
            device,
            model,
            trunk,
            lcfg,
            reader,
            autocast,
            world,
        )
        gnorm = (
            torch.nn.utils.clip_grad_norm_(
                [*model.parameters(), *reader_parameters(reader)], cfg.grad_clip)
            if cfg.grad_clip > 0
            else torch.zeros(())
        )
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        positions = float(terms.pop("positions"))
        step_bytes = float(terms.pop("text_bytes"))
        # the step's time is averaged over ranks with the other terms, so every rank sees
        # the same budget and stops at the same step
        terms["step_seconds"] = torch.tensor(time.perf_counter() - t_step, device=device)
        terms = reduce_terms(terms, world)
        step_flops = positions * flops_tok
        if "dec_n" in terms:  # pages read by decoder-CE over all ranks and micro-batches
            # (a mixture reads each scored page once per candidate: vst/losses.py)
            step_flops += terms["dec_n"] * cfg.grad_accum * world * dec_page_flops
        train_flops += step_flops
        train_seconds += terms.pop("step_seconds")
        terms["train_flops"], terms["train_seconds"] = train_flops, train_seconds
        for key, add in (("positions_seen", positions), ("tokens_seen", n_tok),
                         ("bytes_seen", step_bytes)):
            seen[key] += add
            terms[key] = seen[key]
        tokens_seen += n_tok
        tok_window += n_tok
        record = {"step": step, "lr": lr, "grad_norm": float(gnorm), **terms}
        history.append(record)
        if step % cfg.log_every == 0 or step == cfg.steps:
            if device.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t_window
            record["tokens_per_s"] = tok_window / dt
            if peak:
                record["mfu"] = flops_tok * record["tokens_per_s"] / (peak * world)
            t_window, tok_window = time.perf_counter(), 0
            last_rate = f"{record['tokens_per_s']:.0f}"
            logger.log(step, {k: v for k, v in record.items() if k != "step"})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{terms['loss']:.4f}", tok_s=last_rate)
        paused = False
        used = budget_used(step, cfg, train_seconds, train_flops)
        due = cfg.eval_every > 0 and step % cfg.eval_every == 0
        if cfg.eval_points > 0 and int(used * cfg.eval_points) > evals_done:
            evals_done, due = int(used * cfg.eval_points), True  # a share of the budget passed
        if due and step < cfg.steps and used < 1:
            evals.append({"step": step, "train_flops": train_flops,
                          "train_seconds": train_seconds, **run_eval()})
            paused = True
        if cfg.save_every > 0 and step % cfg.save_every == 0 and step < cfg.steps:
            save_checkpoint(out, step, model, opt, ckpt_state(), rank, world, cfg.keep,
                            reader_extra(reader))
            paused = True
        if paused:  # throughput counts training only
            t_window, tok_window = time.perf_counter(), 0
        t_step = time.perf_counter()  # the budget's clock counts training only
        if cfg.halt_at is not None and step >= cfg.halt_at:
            if bar is not None:
                bar.close()
            logger.close()
            prefetch.shutdown(cancel_futures=True)
            return {"halted_at": step, "history": history}
    prefetch.shutdown()
    if bar is not None:
        bar.close()
    final_eval = {"step": step, "train_flops": train_flops, "train_seconds": train_seconds,
                  **run_eval()}
    evals.append(final_eval)
    path = save_checkpoint(out, step, model, opt, ckpt_state(), rank, world, cfg.keep,
                           reader_extra(reader))
    logger.close()
    elapsed = time.perf_counter() - t_start
    result = {
        "steps": step,
        "history": history,
        "eval": final_eval,
        "evals": evals,
        "checkpoint": str(path),
        "tokens_per_s": tokens_seen / elapsed if elapsed > 0 else 0.0,
        "model_config": mcfg.to_dict(),
        "params": model.num_params(),
        # the trunk alone (no input projection, embedding, heads): N in scaling laws
        "non_embedding_params": model.num_params(trunk_only=True),
        # totals over the whole run, resumes included: positions the trunk computed
        # (padding too, as FLOPs count them), real target tokens, and the UTF-8 bytes of
        # text they stand for (the VST: its windows' whole pages; text: its tokens' bytes)
        **seen,
        "flops_per_token": flops_tok,
        "decoder_flops_per_page": dec_page_flops,
        "train_flops": train_flops,
        "train_seconds": train_seconds,  # optimizer steps only (no eval or checkpoints)
        "wall_clock_s": elapsed,
    }
    if rank == 0:
        (out / "result.json").write_text(
            json.dumps({k: v for k, v in result.items() if k != "history"}, indent=1)
        )
    return result


def _accumulate(windows, accum, collate, device, model, trunk, lcfg, codec, autocast, world):
    """Forward/backward over `accum` micro-batches; returns (mean terms, global tokens).

    Each micro-batch's loss is a mean over its windows, so dividing by `accum` gives the
    mean over the whole local batch: the gradient does not depend on `accum`. DDP syncs
    gradients only on the last micro-batch.
    """
    if len(windows) % accum:
        raise BadInput(f"{len(windows)} windows per rank do not split into {accum} micro-batches",
                       hint="make --batch-size a multiple of --grad-accum")
    size = len(windows) // accum
    ddp = trunk if world > 1 else None
    sums: dict[str, torch.Tensor] = {}
    tokens = positions = text_bytes = 0
    for i in range(accum):
        batch = collate(windows[i * size : (i + 1) * size]).to(device)
        sync = ddp is None or i == accum - 1
        with contextlib.nullcontext() if sync else ddp.no_sync():
            with autocast():
                loss, terms = compute_losses(
                    model, batch, lcfg, codec, ddp_model=trunk if trunk is not model else None
                )
            (loss / accum).backward()
        for k, v in terms.items():
            sums[k] = sums.get(k, 0) + v / accum
        tokens += batch.num_tokens
        positions += batch.valid.numel()  # the trunk computes padding too
        text_bytes += _text_bytes(batch)
    sums["positions"] = torch.tensor(float(positions * world))
    sums["text_bytes"] = torch.tensor(float(text_bytes * world))
    return sums, tokens * world


def _text_bytes(batch) -> float:
    """UTF-8 bytes of text a batch covers: a text model's real target tokens, a VST's
    whole pages (the text its scored positions stand for)."""
    if batch.n_bytes is not None:
        return float((batch.n_bytes * batch.valid).sum())
    return float(sum(len(text.encode()) for pages in batch.pages for _, _, text in pages))


def reduce_terms(terms: dict[str, torch.Tensor], world: int) -> dict[str, float]:
    keys = sorted(terms)
    vals = torch.stack([terms[k].float() for k in keys])
    if world > 1:
        import torch.distributed as dist

        vals = vals.to("cpu") if dist.get_backend() == "gloo" else vals
        dist.all_reduce(vals)
        vals = vals / world
    return {k: float(v) for k, v in zip(keys, vals.tolist())}


def _peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def _progress(cfg: TrainConfig, rank: int, step: int):
    if not cfg.progress or rank != 0:
        return None
    from tqdm.auto import tqdm

    # a run capped by wall-clock or FLOPs ends before `steps` (often a large cap): a bar
    # over steps would show a bogus total and ETA, so it counts steps without a total
    capped = cfg.max_seconds is not None or cfg.max_flops is not None
    return tqdm(total=None if capped else cfg.steps, initial=step, desc="vst-train",
                dynamic_ncols=True)
