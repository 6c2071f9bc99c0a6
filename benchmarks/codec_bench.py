"""Codec throughput on CPU: encode, greedy decode and text_nll (forward + backward),
pages per second per mode and batch size, on freshly rendered held-out pages.

Codecs with a fast greedy path (`mini`: `decode(fast=True)`, drafted by the CTC read-out
and verified by the causal reader) are timed both ways, interleaved repeat by repeat so a
shared machine's load hits both alike: the plain step-by-step greedy decode ("old"), the
fast one, their ratio, and whether every page's text was identical.

    python benchmarks/codec_bench.py [--codec mini] [--modes tiny,small,base] [--batch 1,16]
    python benchmarks/codec_bench.py --random   # untrained weights (no checkpoint needed)

Prints a table and writes JSON to --out (default runs/codec_bench.json). Timings on a
shared machine vary; each number is the best of --repeats runs.
"""

from __future__ import annotations

import argparse
import inspect
import json
import time
from pathlib import Path


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> dict:
    import torch

    from codec import load_codec
    from data.corpus import heldout_texts
    from render import paginate, rasterize

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--codec", default="mini")
    p.add_argument("--modes", default="tiny,small,base")
    p.add_argument("--batch", default="1,16")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--random", action="store_true", help="untrained weights")
    p.add_argument("--out", default="runs/codec_bench.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    results = []
    for mode in args.modes.split(","):
        codec = load_codec(args.codec, mode=mode, **({"random_init": True} if args.random else {}))
        cfg = codec.render_config
        pages = [pg for t in heldout_texts(8, min_chars=2000) for pg in paginate(t, cfg)]
        for bs in map(int, args.batch.split(",")):
            chunk = pages[:bs]
            t0 = time.perf_counter()
            images = [rasterize(pg, cfg) for pg in chunk]
            render_s = time.perf_counter() - t0
            tokens = codec.encode(images)
            enc = best_time(lambda: codec.encode(images), args.repeats)
            two_ways = "fast" in inspect.signature(codec.decode).parameters
            old_s, fast_s, same = [], [], True
            for _ in range(args.repeats):  # interleaved: the same load for both
                t0 = time.perf_counter()
                old = codec.decode(tokens, fast=False) if two_ways else codec.decode(tokens)
                old_s.append(time.perf_counter() - t0)
                if two_ways:
                    t0 = time.perf_counter()
                    new = codec.decode(tokens, fast=True)
                    fast_s.append(time.perf_counter() - t0)
                    same &= new == old
            dec = min(old_s)

            def nll_step():
                leaf = tokens.clone().requires_grad_(True)
                codec.text_nll(leaf, [pg.text for pg in chunk]).nll.sum().backward()

            nll = best_time(nll_step, args.repeats)
            row = {"codec": args.codec, "mode": mode, "n": codec.n, "D": codec.D, "batch": len(chunk),
                   "render_pages_per_s": len(chunk) / render_s,
                   "encode_pages_per_s": len(chunk) / enc, "decode_pages_per_s": len(chunk) / dec,
                   "text_nll_fwd_bwd_pages_per_s": len(chunk) / nll, "load": load_average()}
            if two_ways:
                st = codec.last_decode_stats
                row.update(fast_decode_pages_per_s=len(chunk) / min(fast_s),
                           decode_speedup=dec / min(fast_s), decode_identical=same,
                           draft_accepted=st.accepted / max(st.drafted, 1),
                           chars_from_draft=st.accepted / max(st.chars, 1),
                           verify_rounds=st.rounds, fallbacks=st.fallbacks)
            results.append(row)
            print(f"{args.codec}:{mode:5s} n={codec.n:3d} batch={len(chunk):3d}  "
                  f"encode {row['encode_pages_per_s']:7.1f} p/s  decode {row['decode_pages_per_s']:7.1f} p/s  "
                  f"text_nll+grad {row['text_nll_fwd_bwd_pages_per_s']:6.1f} p/s  "
                  f"(render {row['render_pages_per_s']:.0f} p/s)")
            if two_ways:
                print(f"    greedy decode: old {row['decode_pages_per_s']:6.2f} p/s  fast "
                      f"{row['fast_decode_pages_per_s']:6.2f} p/s  x{row['decode_speedup']:.1f}  "
                      f"identical {same} ({len(chunk)} pages)  draft accepted "
                      f"{row['draft_accepted']:.1%}, {row['chars_from_draft']:.1%} of chars, "
                      f"{st.rounds} rounds, {st.fallbacks} fallbacks  [load {row['load']}]")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": args.threads, "results": results}, indent=2) + "\n")
    print(f"load average (1, 5, 15 min) at the end: {load_average()}")
    return {"results": results}


if __name__ == "__main__":
    main()
