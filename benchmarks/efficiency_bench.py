"""VST vs the same-shape text model: prefill, decode, KV cache, memory (see docs/runners.md).

    python benchmarks/efficiency_bench.py --out runs/eff-cpu --threads 1         # 4K..32K chars
    python benchmarks/efficiency_bench.py --out runs/eff-gpu --device cuda \
        --dtype bfloat16 --flavour small --max-chars 131072                      # up to 128K

A thin wrapper over `eval.efficiency.run_efficiency` with doubling lengths from
--min-chars to --max-chars; the table and plots land in --out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=Path("runs/efficiency"))
    p.add_argument("--min-chars", type=int, default=4096)
    p.add_argument("--max-chars", type=int, default=32768)
    p.add_argument("--codec", default="mini")
    p.add_argument(
        "--random-codec", action="store_true", help="untrained codec weights, same geometry"
    )
    p.add_argument("--flavour", default="tiny")
    p.add_argument("--text-tokens", default="cl100k", choices=("cl100k", "byte"))
    p.add_argument("--decode-steps", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--no-encode", action="store_true", help="skip timing render + codec encode")
    args = p.parse_args(argv)

    from eval.efficiency import run_efficiency

    lengths, n = [], args.min_chars
    while n <= args.max_chars:
        lengths.append(n)
        n *= 2
    run_efficiency(
        args.out, lengths, codec=args.codec, random_codec=args.random_codec, flavour=args.flavour,
        text_tokens=args.text_tokens, decode_steps=args.decode_steps, repeats=args.repeats,
        device=args.device, dtype=args.dtype, threads=args.threads, encode=not args.no_encode,
    )
    print((args.out / "efficiency.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
