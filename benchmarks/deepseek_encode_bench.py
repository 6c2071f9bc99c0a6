"""Encode throughput of the `deepseek-ocr2` codec: pages/s at batch sizes 1..64.

    python benchmarks/deepseek_encode_bench.py                 # GPU: real-size config, bf16
    python benchmarks/deepseek_encode_bench.py --size tiny     # anywhere: the tests' tiny config
    python benchmarks/deepseek_encode_bench.py --path DIR      # your own checkpoint instead

The default model is a DeepSeek-OCR-2 of the real sizes (SAM ViT-B, a 24-layer Qwen2-0.5B
style encoder, the 3B-MoE decoder, D = 1280) with RANDOM weights: encode cost does not
depend on the weights' values, so no download is needed. Timings cover the whole
`codec.encode` (PIL pre-processing on the CPU + the vision tower on the device), taken
after one warm-up batch; peak GPU memory is reported per batch size, and a batch that
runs out of memory is reported as such instead of stopping the run.

Pages are rendered `ds-base` (1024²) text pages. Global mode yields 257 tokens a page.

On a CPU the real-size model is refused (its vision tower alone takes ~80 s a page on a
2-core CPU) unless --allow-cpu; the tiny config runs anywhere.

Measured on one H100 (docs/deepseek.md has the table): 76 pages/s at batch 64, 59 at 8.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def make_pages(count: int) -> np.ndarray:
    """`count` rendered ds-base pages (a few distinct ones, repeated)."""
    from render import get_preset, render_text

    line = "optical compression of long documents into vision tokens."
    text = " ".join(f"Line {i}: {line}" for i in range(400))
    distinct = [image for _, image in render_text(text, get_preset("ds-base"))][:4]
    return np.stack([distinct[i % len(distinct)] for i in range(count)])


def build_codec(args):
    from codec import load_codec
    from codec.deepseek_ocr2 import DeepseekOcr2Codec

    if args.path:
        return load_codec(
            "deepseek-ocr2", path=args.path, mode=args.mode, device=args.device, dtype=args.dtype
        )
    from tiny_deepseek import build_model, build_processor, build_tokenizer

    tokenizer = build_tokenizer()
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}[args.dtype]
    with torch.device(args.device):  # built on the device: no 12 GB fp32 copy in host memory
        model = build_model(tokenizer, real_size=args.size == "real").to(dtype)
    return DeepseekOcr2Codec.from_model(
        model, build_processor(tokenizer), weights_id=f"random-{args.size}", mode=args.mode
    )


def bench(codec, pages: np.ndarray, batch: int, repeats: int, cuda: bool) -> dict:
    codec.encode_batch_size = batch
    chunk = pages[:batch]
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    codec.encode(chunk)  # warm-up: kernels, allocator, PIL
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        tokens = codec.encode(chunk)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    row = {"batch": batch, "seconds_median": median, "pages_per_s": batch / median,
           "tokens_per_page": int(tokens.shape[1])}
    if cuda:
        row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=["real", "tiny"], default=None,
                        help="random-weight config (default: real on a GPU, tiny on a CPU)")
    parser.add_argument("--path", help="benchmark this checkpoint directory instead")
    parser.add_argument("--mode", choices=["global", "crops"], default="global")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None,
                        help="default: bf16 on a GPU, fp32 on a CPU")
    parser.add_argument("--batch-sizes", default=None,
                        help="comma-separated (default 1,2,4,8,16,32,64; on a CPU 1,2,4)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--allow-cpu", action="store_true",
                        help="run the real-size model on a CPU anyway")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda but no GPU is visible")
    args.size = args.size or ("real" if cuda else "tiny")
    args.dtype = args.dtype or ("bf16" if cuda else "fp32")
    if not cuda and (args.size == "real" or args.path) and not args.allow_cpu:
        print("refusing: the real-size DeepSeek-OCR-2 is a GPU backend (its vision tower alone "
              "takes ~80 s a page on a 2-core CPU). Use --size tiny for a CPU smoke run, "
              "or --allow-cpu.", file=sys.stderr)
        return 2
    default_sizes = "1,2,4,8,16,32,64" if cuda else "1,2,4"
    sizes = [int(b) for b in (args.batch_sizes or default_sizes).split(",")]

    codec = build_codec(args)
    pages = make_pages(max(sizes))
    info = {"device": torch.cuda.get_device_name() if cuda else "cpu", "size": args.size,
            "mode": args.mode, "dtype": args.dtype, "version": codec.version, "results": []}
    print(f"# {info['device']}  size={args.size}  mode={args.mode}  dtype={args.dtype}  "
          f"D={codec.D}")
    print(f"{'batch':>5} {'pages/s':>9} {'s/batch':>9} {'tokens':>7} {'peak GiB':>9}")
    for batch in sizes:
        try:
            row = bench(codec, pages, batch, args.repeats, cuda)
        except torch.OutOfMemoryError:
            row = {"batch": batch, "error": "out of memory"}
            print(f"{batch:>5} {'OOM':>9}")
            info["results"].append(row)
            continue
        info["results"].append(row)
        peak = f"{row['peak_gib']:.1f}" if "peak_gib" in row else "-"
        print(f"{batch:>5} {row['pages_per_s']:>9.2f} {row['seconds_median']:>9.3f} "
              f"{row['tokens_per_page']:>7} {peak:>9}")
    if args.out:
        args.out.write_text(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
