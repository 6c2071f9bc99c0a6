"""Training throughput: the VST vs the same-shape text baseline, in one run, on this machine.

    python benchmarks/train_bench.py                       # tiny flavour, CPU, toy codec
    python benchmarks/train_bench.py --flavour small --codec mini --device cuda --steps 20

Both models share the trunk (flavour, depth, sequence length T, batch); they differ only
in the input/output layers (D-wide projection + regression head vs embedding + LM head).
One optimizer step is timed end to end (forward, backward, AdamW), the models in turn,
round by round, so a shared machine's fluctuating load hits them alike (medians). The
decoder-CE term (the frozen codec's text NLL of the last k pages, backpropagated into the
predicted tokens) is timed separately and as part of a full VST step. "text bytes/s" converts
tokens/s to the amount of document text each model consumes: a visual token covers a
block of a page (bytes per page / n), a byte-level text token covers one byte.
On GPU the table adds MFU (bf16 autocast).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vst.config import flavour  # noqa: E402
from vst.data import Window, collate_text, collate_vector, text_codec  # noqa: E402
from vst.losses import LossConfig, compute_losses, decoder_nll, gather_pages  # noqa: E402
from vst.model import VST  # noqa: E402
from vst.synthetic import synthetic_documents  # noqa: E402
from vst.train import PEAK_FLOPS  # noqa: E402


def load_bench_codec(name: str):
    if name == "toy":
        from codec.toy import ToyCodec

        return ToyCodec(), "toy"
    from codec import load_codec

    try:
        return load_codec(name), name
    except FileNotFoundError:  # weights not shipped yet: same shapes, random weights
        return load_codec(name, random_init=True), f"{name} (random init)"


def page_texts(codec, count: int, seed: int = 0) -> list[str]:
    """Real page-sized texts: paginated with the codec's own render config when it has one."""
    text = " ".join(synthetic_documents(40, seed, 200, 400))
    if getattr(codec, "render_config", None) is not None:
        from render import paginate

        pages = [p.text for p in paginate(text, codec.render_config)]
    else:
        pages = [text[i : i + codec.page_chars] for i in range(0, len(text), codec.page_chars)]
    return (pages * (count // len(pages) + 1))[:count]


def make_windows(codec, batch: int, pages: int) -> list[Window]:
    n, D = codec.n, codec.D
    texts = page_texts(codec, batch * pages)
    out = []
    for b in range(batch):
        start = np.zeros(pages * n, bool)
        start[0] = True
        out.append(
            Window(
                tokens=np.random.default_rng(b).standard_normal((pages * n, D)).astype(np.float32),
                doc_start=start,
                page=np.repeat(np.arange(pages), n),
                slot=np.tile(np.arange(n), pages),
                pages=[(i * n, n, texts[b * pages + i]) for i in range(pages)],
            )
        )
    return out


def time_round_robin(
    steps: dict[str, Callable[[], None]], rounds: int, warmup: int, device: torch.device
) -> dict[str, float]:
    """Median seconds per call of each step, interleaved round by round.

    Interleaving gives every model the same share of a shared machine's fluctuating load.
    """
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flavour", default="tiny")
    ap.add_argument("--codec", default="toy", help="toy | mini (random weights if none shipped)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--pages-per-window", type=int, default=8)
    ap.add_argument("--dec-pages", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    codec, codec_name = load_bench_codec(args.codec)
    windows = make_windows(codec, args.batch_size, args.pages_per_window)
    T = args.pages_per_window * codec.n
    bytes_per_page = statistics.mean(len(t.encode()) for w in windows for _, _, t in w.pages)
    bf16 = device.type == "cuda"
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)  # noqa: E731
    peak = (
        next((v for k, v in PEAK_FLOPS.items() if k in torch.cuda.get_device_name(device)), None)
        if bf16
        else None
    )

    def train_step(model: VST, batch, lcfg: LossConfig, use_codec) -> Callable[[], None]:
        model.to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step() -> None:
            with autocast():
                loss, _ = compute_losses(model, batch, lcfg, use_codec)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    mcfg = flavour(args.flavour, D=codec.D, grid=codec.grid, alpha=1.0)
    vbatch = collate_vector(windows, codec.grid, "3d").to(device)
    enc, nbytes, vocab = text_codec("bytes")
    # the same pages as bytes, cut to the same T: the same trunk shape, only the I/O differs
    tbatch = collate_text(windows, enc, nbytes, T).to(device)
    tcfg = flavour(args.flavour, modality="text", rope="1d", vocab_size=vocab)
    dec_label = f"VST (L_reg + dec, k={args.dec_pages})"
    models = {
        "VST (L_reg)": (VST(mcfg), vbatch, bytes_per_page / codec.n),
        dec_label: (VST(mcfg), vbatch, bytes_per_page / codec.n),
        "text baseline (bytes)": (VST(tcfg), tbatch, 1.0),
    }
    steps = {
        name: train_step(
            m,
            b,
            LossConfig(dec=1.0, dec_pages=args.dec_pages) if name == dec_label else LossConfig(),
            codec if name == dec_label else None,
        )
        for name, (m, b, _) in models.items()
    }
    # the decoder-CE term alone: text NLL of k pages per window, backward into the tokens
    pred, texts = gather_pages(vbatch.targets, vbatch, args.dec_pages)
    pred = pred.clone().requires_grad_(True)

    def dec_step() -> None:
        nll, nb = decoder_nll(codec, pred, texts)
        (nll / nb).mean().backward()

    steps["decoder-CE alone"] = dec_step
    sec = time_round_robin(steps, args.steps, args.warmup, device)
    dec_sec = sec.pop("decoder-CE alone")
    rows = []
    for name, (model, batch, bytes_per_token) in models.items():
        B, L = batch.inputs.shape[:2]
        tok_s = B * L / sec[name]
        mfu = model.flops_per_token(L) * tok_s / peak if peak else None
        rows.append(
            (name, model.num_params(), L, sec[name] * 1e3, tok_s, tok_s * bytes_per_token, mfu)
        )

    print(
        f"\ndevice={device} threads={torch.get_num_threads()} flavour={args.flavour} "
        f"codec={codec_name} "
        f"(n={codec.n}, D={codec.D}, {bytes_per_page:.0f} bytes/page) batch={args.batch_size} "
        f"pages/window={args.pages_per_window}\n"
    )
    head = "| model | params | T | ms/step | tokens/s | text bytes/s |" + (" MFU |" if peak else "")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for label, params, t, ms, tok_s, byte_s, mfu in rows:
        extra = f" {mfu:.1%} |" if peak else ""
        print(
            f"| {label} | {params / 1e6:.2f}M | {t} | {ms:.1f} | {tok_s:,.0f} "
            f"| {byte_s:,.0f} |{extra}"
        )
    print(
        f"\ndecoder-CE alone: {dec_sec * 1e3:.1f} ms for {len(texts)} pages "
        f"({dec_sec * 1e3 / max(1, len(texts)):.2f} ms/page, forward + backward into the tokens)"
    )


if __name__ == "__main__":
    main()
