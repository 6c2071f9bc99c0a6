"""Efficiency report: the VST against the same-shape text-token transformer, at equal text.

For each text length (characters of the same English text) both models see the whole
document: the VST as visual tokens (pages x n), the text model as cl100k (or byte)
tokens. Both are `vst.model.VST` with the same trunk (depth, width, heads, GQA, MLP); only
the input/output layers differ. Per model and length we measure

- prefill latency: one forward over the document, filling a KV cache;
- decode throughput: single-position steps against that cache (positions/s, and the text
  characters those positions stand for: a visual token carries a whole line);
- KV-cache bytes held for the document (2 x layers x kv-heads x head-dim x positions);
- peak memory of the prefill above the baseline, KV cache included (CUDA allocator peak;
  on CPU, sampled malloc bytes in use);
- positions per document: visual tokens vs cl100k tokens vs UTF-8 bytes.

Rendering and codec encoding/decoding are timed separately (`encode_s`, `codec_decode_s`)
and never folded into the model numbers silently. The public anchor is Glyph
(arXiv 2510.17800): up to 4.8x prefill, 4.4x decode and 67% less KV memory at 128K tokens.

Run it as `vst eval efficiency --out DIR` or call
`run_efficiency(EfficiencyConfig(out=..., lengths=[...]))`.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from data.errors import BadInput

DEFAULT_LENGTHS = (4096, 8192, 16384, 32768)
GLYPH_ANCHOR = {
    "source": "Glyph (arXiv 2510.17800), 128K context vs its text backbone",
    "prefill_speedup": 4.8,
    "decode_speedup": 4.4,
    "kv_memory_saving": 0.67,
}


# ------------------------------------------------------------------------ the text


def sample_text(n_chars: int) -> str:
    """`n_chars` of English prose: the stdlib's language-reference topics, repeated as needed."""
    from pydoc_data.topics import topics

    body = "\n\n".join(topics[k].strip() for k in sorted(topics))
    reps = -(-n_chars // len(body))
    return (body * reps)[:n_chars]


@dataclass
class Positions:
    chars: int
    bytes: int
    cl100k: int
    pages: int
    visual: int

    @property
    def compression(self) -> float:
        """cl100k tokens per visual token (the compression ratio at this length)."""
        return self.cl100k / max(self.visual, 1)


def count_positions(text: str, encoder: Any) -> Positions:
    """Positions one document costs in each modality (`encoder`: a runners PageEncoder)."""
    from codec.base import cl100k

    pages = encoder.pages(text)
    n = encoder.codec.n or 1
    return Positions(
        chars=len(text),
        bytes=len(text.encode("utf-8")),
        cl100k=len(cl100k().encode(text, disallowed_special=())),
        pages=len(pages),
        visual=len(pages) * n,
    )


# ----------------------------------------------------------------------- measuring


class PeakMemory:
    """Peak memory above the level at entry.

    CUDA: the allocator's peak. CPU: bytes in use by malloc (glibc `mallinfo2`, which
    follows frees, unlike RSS), sampled every `interval` seconds by a thread; very short
    peaks between samples can be missed. Without glibc, sampled RSS.
    """

    def __init__(self, device: str, interval: float = 0.0005) -> None:
        self.device, self.interval, self.peak = device, interval, 0

    def __enter__(self) -> "PeakMemory":
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        import gc

        gc.collect()  # pending frees would otherwise land inside the window and hide the peak
        self._read = _heap_reader()
        self._base = self._max = self._read()
        self._stop = threading.Event()

        def poll() -> None:
            while not self._stop.is_set():
                self._max = max(self._max, self._read())
                time.sleep(self.interval)

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self._base
            return
        self._stop.set()
        self._thread.join()
        self._max = max(self._max, self._read())
        self.peak = max(0, self._max - self._base)


def _heap_reader():
    """A callable giving bytes in use: glibc malloc's count if available, else RSS."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2

        def heap() -> int:
            m = libc.mallinfo2()
            return int(m.uordblks + m.hblkhd)  # small-chunk bytes in use + mmapped chunks

        heap()
        return heap
    except (OSError, AttributeError):
        import psutil

        proc = psutil.Process()
        return lambda: proc.memory_info().rss


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _positions(model: Any, start: int, length: int, device: str):
    """Rotary coordinates: (page, row, col) for a 3D-rope VST, plain indices otherwise."""
    import torch

    idx = torch.arange(start, start + length, device=device)[None]
    if model.cfg.modality == "vector" and model.cfg.rope == "3d":
        from vst.rope import page_positions

        n = model.cfg.tokens_per_page
        return page_positions(idx // n, idx % n, model.cfg.grid)
    return idx


def _inputs(model: Any, length: int, device: str, dtype, tokens=None):
    import torch

    g = torch.Generator(device="cpu").manual_seed(0)
    if model.cfg.modality == "vector":
        x = tokens[None] if tokens is not None else torch.randn(1, length, model.cfg.D, generator=g)
        return x.to(device, dtype)
    return torch.randint(0, model.cfg.vocab_size, (1, length), generator=g).to(device)


def _next_input(model: Any, h):
    """What the model feeds itself: its predicted vector, or its greedy token id."""
    if model.cfg.modality == "vector":
        return model.head(h[:, -1:])
    return model.lm_head(h[:, -1:]).argmax(-1)


@dataclass
class Measurement:
    model: str  # "vst" or "text"
    chars: int
    positions: int
    prefill_s: float
    decode_steps: int
    decode_pos_s: float  # positions generated per second against the document's cache
    decode_chars_s: float  # text characters those positions stand for, per second
    kv_bytes: int
    peak_mem_bytes: int


def measure(
    model: Any,
    length: int,
    *,
    chars: int,
    decode_steps: int = 16,
    repeats: int = 2,
    device: str = "cpu",
    dtype: str = "float32",
    tokens=None,
    name: str = "",
) -> Measurement:
    """Prefill `length` positions into a fresh KV cache, then decode `decode_steps` more."""
    import torch

    torch_dtype = getattr(torch, dtype)
    cfg = model.cfg
    x = _inputs(model, length, device, torch_dtype, tokens)
    bos = torch.zeros(x.shape[:2], dtype=torch.bool, device=device)
    bos[:, 0] = True  # the document starts here (BOS-style input convention)
    pos = _positions(model, 0, length, device)
    prefill = []
    autocast = torch.autocast(device.split(":")[0], dtype=torch_dtype, enabled=dtype != "float32")
    with torch.inference_mode(), autocast:
        model(x[:, : min(8, length)], bos[:, : min(8, length)], pos[:, : min(8, length)])  # warm-up
        # memory first, in its own pass, so the sampling thread never slows a timed run
        with PeakMemory(device) as mem:
            cache = model.new_cache(1, length + decode_steps + 1, torch_dtype)
            _next_input(model, model(x, bos, pos, cache=cache))
        del cache
        for _ in range(max(1, repeats)):
            cache = model.new_cache(1, length + decode_steps + 1, torch_dtype)
            _sync(device)
            t0 = time.perf_counter()
            h = model(x, bos, pos, cache=cache)
            nxt = _next_input(model, h)
            _sync(device)
            prefill.append(time.perf_counter() - t0)
        no_bos = torch.zeros(1, 1, dtype=torch.bool, device=device)
        _sync(device)
        t0 = time.perf_counter()
        for step in range(decode_steps):
            h = model(nxt, no_bos, _positions(model, length + step, 1, device), cache=cache)
            nxt = _next_input(model, h)
        _sync(device)
        decode_s = time.perf_counter() - t0
    elt = torch.finfo(torch_dtype).bits // 8
    kv = 2 * cfg.depth * cfg.n_kv_heads * cfg.head_dim * length * elt
    pos_s = decode_steps / decode_s if decode_steps else 0.0
    return Measurement(
        model=name or cfg.modality,
        chars=chars,
        positions=length,
        prefill_s=statistics.median(prefill),
        decode_steps=decode_steps,
        decode_pos_s=pos_s,
        decode_chars_s=pos_s * chars / max(length, 1),
        kv_bytes=kv,
        peak_mem_bytes=int(mem.peak),
    )


# -------------------------------------------------------------------------- report


def build_models(
    codec: Any,
    *,
    flavour: str = "tiny",
    text_vocab: int = 100277,
    max_len: int = 1 << 17,
    device: str = "cpu",
    seed: int = 0,
):
    """A VST and the same-shape text-token model (random weights: timing needs no training)."""
    import torch

    from vst.config import flavour as make_config
    from vst.model import VST

    grid = tuple(codec.grid) if getattr(codec, "grid", None) else (1, codec.n or 1)
    vcfg = make_config(flavour, modality="vector", D=codec.D, grid=grid, max_seq_len=max_len)
    tcfg = vcfg.with_(modality="text", vocab_size=text_vocab, rope="1d")
    torch.manual_seed(seed)
    return VST(vcfg).to(device).eval(), VST(tcfg).to(device).eval()


@dataclass
class EfficiencyConfig:
    """VST vs the same-shape text model at equal text lengths: prefill, decode, KV, memory."""

    out: Path = Path("runs/efficiency")  # report folder: efficiency.{json,md} and plots
    lengths: list[int] = field(default_factory=lambda: list(DEFAULT_LENGTHS))  # document
        # lengths in characters (repeat the flag: --lengths 4096 --lengths 131072)
    codec: str = "mini"  # codec spec for load_codec (name, name:mode or module:factory)
    flavour: str = "tiny"  # model size of both models
    text_tokens: str = "cl100k"  # what the text model reads: cl100k (vocab 100277) | byte
    decode_steps: int = 16  # decode steps timed per length
    repeats: int = 2  # timing repeats (the median is kept)
    device: str = "cpu"  # cpu | cuda | cuda:N
    dtype: str = "float32"  # float32 | bfloat16 | float16
    encode: bool = True  # also time render + codec encode of the real pages (the VST is
        # then fed those tokens) and codec decode of one page
    random_codec: bool = False  # untrained codec weights of the same page geometry
        # (positions and timings are unchanged; only decoded text is noise)
    threads: int = 0  # torch intra-op threads (0: leave as is; 1 is steadier on a shared CPU)
    plots: bool = True  # write the PNG plots

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.lengths = [int(n) for n in self.lengths]
        if self.text_tokens not in ("cl100k", "byte"):
            raise BadInput(f"--text-tokens must be 'cl100k' or 'byte', got {self.text_tokens!r}")


def run_efficiency(cfg: EfficiencyConfig, *, codec: Any = None, renderer: Any = None,
                   models: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """Measure both models at each length; write efficiency.{json,md} and plots; return the JSON.

    `codec` (a built codec) replaces `cfg.codec`; `renderer` replaces the codec's own paging;
    `models` (vst, text) replace the random-weight models of `cfg.flavour`.
    """
    import torch

    previous_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run_efficiency(cfg, codec, renderer, models)
    finally:
        torch.set_num_threads(previous_threads)


def _run_efficiency(cfg: EfficiencyConfig, codec: Any, renderer: Any,
                    models: tuple[Any, Any] | None) -> dict[str, Any]:
    import torch

    from eval.runners.visual import PageEncoder

    from codec import load_codec

    flavour, text_tokens, device, dtype = cfg.flavour, cfg.text_tokens, cfg.device, cfg.dtype
    decode_steps, repeats, random_codec = cfg.decode_steps, cfg.repeats, cfg.random_codec
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    codec = load_codec(codec if codec is not None else cfg.codec, random_init=random_codec)
    encoder = PageEncoder(codec, renderer)
    vst, text = models or build_models(
        codec, flavour=flavour, text_vocab=100277 if text_tokens == "cl100k" else 256, device=device
    )
    rows: list[dict[str, Any]] = []
    for n_chars in cfg.lengths:
        doc = sample_text(int(n_chars))
        pos = count_positions(doc, encoder)
        row: dict[str, Any] = {"chars": n_chars, **asdict(pos)}
        row["compression_vs_cl100k"] = pos.compression
        tokens = None
        if cfg.encode:
            pages = encoder.pages(doc)
            t0 = time.perf_counter()
            tokens = encoder.encode_pages(pages)
            row["encode_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            with torch.no_grad():
                codec.decode(tokens[:1])
            row["codec_decode_s_per_page"] = time.perf_counter() - t0
            tokens = tokens.reshape(-1, tokens.shape[-1])
        text_len = pos.cl100k if text_tokens == "cl100k" else pos.bytes
        v = measure(vst, pos.visual, chars=n_chars, decode_steps=decode_steps, repeats=repeats,
                    device=device, dtype=dtype, tokens=tokens, name="vst")
        t = measure(text, text_len, chars=n_chars, decode_steps=decode_steps, repeats=repeats,
                    device=device, dtype=dtype, name=f"text-{text_tokens}")
        row["vst"], row["text"] = asdict(v), asdict(t)
        row["prefill_speedup"] = t.prefill_s / max(v.prefill_s, 1e-12)
        row["decode_speedup_positions"] = v.decode_pos_s / max(t.decode_pos_s, 1e-12)
        row["decode_speedup_chars"] = v.decode_chars_s / max(t.decode_chars_s, 1e-12)
        row["kv_saving"] = 1.0 - v.kv_bytes / max(t.kv_bytes, 1)
        rows.append(row)
    result = {
        "device": device,
        "dtype": dtype,
        "torch_threads": torch.get_num_threads(),
        "codec": {"name": getattr(codec, "name", "?"), "version": getattr(codec, "version", "?"),
                  "n": codec.n, "D": codec.D, "random_weights": random_codec},
        "flavour": flavour,
        "text_tokens": text_tokens,
        "models": {"vst": _model_info(vst), "text": _model_info(text)},
        "decode_steps": decode_steps,
        "repeats": repeats,
        "anchor": GLYPH_ANCHOR,
        "rows": rows,
    }
    (out / "efficiency.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out / "efficiency.md").write_text(markdown_table(result), encoding="utf-8")
    if cfg.plots:
        result["plots"] = [str(p) for p in plot(result, out)]
    return result


def _model_info(model: Any) -> dict[str, Any]:
    c = model.cfg
    return {**c.to_dict(), "d_model": c.d_model, "n_heads": c.n_heads, "n_kv_heads": c.n_kv_heads,
            "params": model.num_params(), "trunk_params": model.num_params(True)}


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def markdown_table(result: dict[str, Any]) -> str:
    a = result["anchor"]
    lines = [
        f"# Efficiency: VST vs same-shape text model ({result['text_tokens']} tokens)",
        "",
        f"Device `{result['device']}` ({result['dtype']}, {result['torch_threads']} threads); "
        f"flavour `{result['flavour']}`; codec `{result['codec']['name']}` "
        f"(n={result['codec']['n']}, D={result['codec']['D']}). "
        "Random weights: speed does not depend on them.",
        f"Anchor: {a['source']}: {a['prefill_speedup']}x prefill, {a['decode_speedup']}x decode, "
        f"{a['kv_memory_saving']:.0%} less KV memory.",
        "",
        "| chars | pages | visual pos | text pos | compression | prefill VST (s) "
        "| prefill text (s) "
        "| prefill speedup | decode VST (pos/s) | decode text (pos/s) | decode speedup (chars/s) "
        "| KV VST | KV text | KV saving | peak mem VST | peak mem text |",
        "|" + "---|" * 16,
    ]
    for r in result["rows"]:
        v, t = r["vst"], r["text"]
        lines.append(
            f"| {r['chars']} | {r['pages']} | {v['positions']} | {t['positions']} "
            f"| {r['compression_vs_cl100k']:.1f}x | {v['prefill_s']:.4f} | {t['prefill_s']:.4f} "
            f"| {r['prefill_speedup']:.2f}x | {v['decode_pos_s']:.1f} | {t['decode_pos_s']:.1f} "
            f"| {r['decode_speedup_chars']:.2f}x | {_fmt_bytes(v['kv_bytes'])} "
            f"| {_fmt_bytes(t['kv_bytes'])} | {r['kv_saving']:.0%} "
            f"| {_fmt_bytes(v['peak_mem_bytes'])} | {_fmt_bytes(t['peak_mem_bytes'])} |"
        )
    if any("encode_s" in r for r in result["rows"]):
        lines += ["", "Codec cost, outside the model numbers above:", "",
                  "| chars | render + encode (s) | codec decode, 1 page (s) |", "|---|---|---|"]
        lines += [f"| {r['chars']} | {r['encode_s']:.3f} | {r['codec_decode_s_per_page']:.4f} |"
                  for r in result["rows"] if "encode_s" in r]
    lines += [
        "",
        "compression = cl100k tokens per visual token. Decode speedup compares text characters "
        "produced per second (a VST position stands for a page line, a text position for one "
        "token); per-position rates are in the JSON (`decode_speedup_positions`).",
        "",
    ]
    return "\n".join(lines)


def plot(result: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    x = [r["chars"] for r in rows]
    panels = [
        ("prefill_latency.png", "prefill latency (s)", "prefill_s"),
        ("decode_throughput.png", "decode (text chars / s)", "decode_chars_s"),
        ("kv_cache.png", "KV cache (MiB)", "kv_bytes"),
        ("peak_memory.png", "peak memory (MiB)", "peak_mem_bytes"),
        ("positions.png", "positions per document", "positions"),
    ]
    paths = []
    for fname, label, key in panels:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for model, style in (("vst", "o-"), ("text", "s--")):
            y = [r[model][key] for r in rows]
            if key.endswith("bytes"):
                y = [v / 2**20 for v in y]
            ax.plot(x, y, style, label=rows[0][model]["model"])
        if key == "positions":
            ax.plot(x, [r["bytes"] for r in rows], ":", label="utf-8 bytes")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("document length (characters)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out / fname
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------- CLI


def report(cfg: EfficiencyConfig) -> dict[str, Any]:
    """`vst eval efficiency`: run, then print the table."""
    result = run_efficiency(cfg)
    print((cfg.out / "efficiency.md").read_text(encoding="utf-8"))
    print(f"wrote {cfg.out / 'efficiency.json'} and {len(result.get('plots', []))} plots")
    return result
