"""The `mini-zh` section of codec/mini/MODEL_CARD.md (issue #24): spec, training, and the
Chinese precision/CER curve against compression, next to the blind floor.

    vst fidelity runs/corpus_zh/heldout_source.jsonl.zst --codec mini-zh:small \\
        --codec mini-zh:base --out runs/fidelity_zh
    vst codec card --fidelity runs/fidelity_mini/metrics.json --zh runs/fidelity_zh/metrics.json

(`write_card` in codec/mini/card.py appends `zh_section` when `--zh` is given.)
"""

from __future__ import annotations

import json
from pathlib import Path

from codec.mini import VARIANTS, WEIGHTS_DIR
from codec.mini.card_tables import merged_stages, stage_table, stages

TARGETS_ZH = ((0.95, 5.0), (0.90, 8.0))  # (precision, compression) pairs from issue #24

CURVE_HEAD = ("| mode | grid | tokens/page | compression (cl100k text tokens per visual token) | "
              "chars per visual token | precision | CER | blind floor precision | blind floor "
              "CER | pages | decode pages/s |\n|" + "---|" * 11)
CURVE_ROW = ("| {label} | {grid} | {n} | {compression:.1f}x | {chars:.1f} | **{precision:.2%}** | "
             "{cer:.2%} | {blind_precision:.1%} | {blind_cer:.1%} | {pages} | {dec:.1f} |")

LIMITS = """### mini-zh limitations (honest)

- Tied to the `mini-zh` render preset (512x512, DejaVu Sans Mono 16 px with hanzi from the
  shipped Noto Sans CJK SC subset at two cells each, 20 px pitch, 24 lines x 51 cells).
- No causal reader shipped: `decode` is the CTC read-out's best path (parallel, fast) and
  `text_nll` its CTC likelihood. A causal reader trained for 1,000 steps on `tiny` and on
  `small` (`vst codec train-reader --variant mini-zh`; its positions count cells, two per
  hanzi) read 98.9% of the validation pages against the CTC read-out's 99.1%, so the
  rule fixed beforehand (ship it only if it reads validation better) kept it out.
- Vocabulary: `mini`'s characters (same ids), GB2312's 682 symbols and 6,763 hanzi, the
  no-break space and the check mark; traditional and rarer hanzi decode as U+FFFD.
- Trained on a 2-core CPU shared with other jobs: stage 1 (the encoder under the `small`
  and `base` read-outs, 1,700 steps, 72 minutes) stalled `small` at 91.8% on held-out
  Chinese; each mode's read-out trained again alone on the frozen encoder (`tiny` fresh,
  3,000 steps; `small` 2,000; `base` 1,500; two hours of CPU in all) took every mode
  past 98%. Rare hanzi are seen mainly on the synthetic pages (half of them random GB2312
  lines). Of `tiny`'s 198 edits on the held-out pages, 52% are whitespace (a soft wrap
  read as a line break: the renderer breaks a line at its last space, so such a line ends
  short, like a hard break), 34% other non-hanzi characters and 14% hanzi (look-alike
  substitutions: 客/再, 台/合).
- `tiny` reads better than `small` and `base` here (99.1% against 98.3%): its read-out
  trained longer from a fresh start at the full learning rate, while theirs continue
  the joint stage's. More tokens per line do not buy precision at this training budget.
- Compression is per line, as for `mini`: short lines and the English names and commands
  in Chinese documentation (cl100k packs those densely, 0.56 tokens per character here)
  keep cl100k tokens per visual token at about half the characters per visual token.
"""


def shipped_mib() -> dict[str, float]:
    """MiB on disk of each codec's shipped weights and of the shipped fonts."""
    fonts = Path(__file__).resolve().parents[2] / "render" / "fonts"
    folders = {"mini": WEIGHTS_DIR, "mini-zh": VARIANTS["mini-zh"].weights_dir, "fonts": fonts}
    return {k: sum(f.stat().st_size for f in d.iterdir() if f.is_file()) / 2**20
            if d.is_dir() else 0.0 for k, d in folders.items()}


def _tokens_per_char(metrics: dict) -> float:
    m = next(iter(metrics["results"].values()))
    return m["compression"] / m["chars_per_visual_token"]


def curve(metrics: dict, grids: dict) -> str:
    rows = []
    for label, m in sorted(metrics["results"].items(), key=lambda kv: kv[1]["compression"]):
        rows.append(CURVE_ROW.format(label=label, grid=grids.get(label.split(":")[-1], "?"),
                                     n=int(m["visual_tokens_per_page"]),
                                     chars=m["chars_per_visual_token"],
                                     dec=m["decode_pages_per_s"], **m))
    return CURVE_HEAD + "\n" + "\n".join(rows)


def against(metrics: dict) -> str:
    res = metrics["results"]
    rows = ["| target (held-out Chinese, a source never trained on) | measured | met? |",
            "|---|---|---|"]
    for prec, comp in TARGETS_ZH:
        ok = [k for k, m in res.items() if m["precision"] >= prec and m["compression"] >= comp]
        seen = "; ".join(f"`{k}`: {m['precision']:.1%} at {m['compression']:.1f}x"
                         for k, m in sorted(res.items(), key=lambda kv: kv[1]["compression"]))
        rows.append(f"| >= {prec:.0%} precision at >= {comp:.0f}x | {seen} | "
                    f"{'yes (' + ', '.join(ok) + ')' if ok else 'no'} |")
    return "\n".join(rows)


def zh_section(metrics_path: Path) -> list[str]:
    """Markdown lines of the mini-zh section, from its shipped weights and a fidelity run."""
    from codec.mini.vocab import get_vocab

    variant = VARIANTS["mini-zh"]
    metas = {m: json.loads((variant.weights_dir / f"{m}.json").read_text())
             for m in variant.modes if (variant.weights_dir / f"{m}.json").exists()}
    held = json.loads(Path(metrics_path).read_text())
    plot = Path(metrics_path).parent / "precision_vs_compression.png"
    if plot.exists():
        (Path(__file__).parent / "fidelity_zh.png").write_bytes(plot.read_bytes())
    grids = {m: f"{meta['model']['geometry']['n_lines']}x{meta['model']['cols']}"
             for m, meta in metas.items()}
    size = shipped_mib()
    any_meta = next(iter(metas.values()))
    chain = merged_stages([meta["training"] for meta in metas.values()])
    rc = any_meta["render_config"]
    out = [
        "## mini-zh: the Chinese variant (issue #24)",
        "",
        ("`load_codec(\"mini-zh:small\")`: the same network on its own page, reading Chinese "
         f"and English. Vocabulary `zh`: {get_vocab('zh').n_classes} classes (CTC blank, "
         "unknown, `mini`'s characters with their ids, GB2312's symbols and 6,763 hanzi; "
         "`codec/mini/vocab.py`). Page: render preset `mini-zh`, "
         f"{rc['width']}x{rc['height']}, {rc['font']} {rc['font_size']:.0f} px, hanzi from the "
         "shipped Noto Sans CJK SC subset at two cells each, "
         f"{rc['font_size'] * rc['line_height']:.0f} px line pitch: 24 lines of 51 cells "
         "(25 hanzi or 51 ASCII characters). A token is a fixed piece of a line: "
         f"{', '.join(f'`{m}` {g}' for m, g in grids.items())} (lines x pieces). Weights: "
         f"{size['mini-zh']:.1f} MiB fp16 in codec/mini/weights_zh; with `mini`'s "
         f"{size['mini']:.1f} MiB and the shipped fonts' {size['fonts']:.1f} MiB, "
         f"{sum(size.values()):.1f} MiB shipped in all."),
        "",
        "| mode | version | grid | steps trained (all stages) |",
        "|---|---|---|---|",
        *[f"| {m} | `{meta['version']}` | {grids[m]} | "
          f"{sum(st['steps_done'] for st in stages(meta['training']))} |"
          for m, meta in metas.items()],
        "",
        ("Training (each `--init` continues the previous stage; `--init-from FOLDER` copies "
         "every tensor of that folder's weights whose shape fits, class heads row by row; "
         "`shipped` there is `mini`'s; `--freeze-encoder` keeps the encoder as loaded, so "
         "every mode reads the tokens of one encoder):"),
        "",
        "```bash",
        *[st["command"] for st in chain],
        "```",
        "",
        ("Validation (below; `-`: the stage did not train that mode): stages 1-3 read the "
         "first 12 pages of the validation documents, which are English (python-docs sorts "
         "first), so they track the English reading only; later stages read 32 pages spread "
         "over the validation documents, Chinese and English. The held-out source below is "
         "the measure."),
        "",
        *stage_table(chain, metas),
        "",
        ("Data: `vst corpus build --sources python-docs,manpages-zh,debian-reference-zh,"
         "gimp-help-zh,libreoffice-help-zh,debian-edu-doc-zh --heldout-source "
         "debian-edu-doc-zh` (English Python docs kept in the mix; every 20th document "
         "validates), rendered on the fly, plus 30% synthetic pages (half of them random "
         "GB2312 hanzi lines, so rare characters are seen). Loss: the canonical-path "
         "cross-entropy on every character frame and 15% of blank frames, and the glyph "
         "probe (`--ctc 0 --blank-frames 0.15`): logits over 7,563 classes on every frame "
         "cost 9x more per step."),
        "",
        "### Measured fidelity on held-out Chinese (greedy decoding)",
        "",
        (f"Held-out source: {held['source']} (source `debian-edu-doc-zh`, the Debian Edu "
         f"manual, never trained on; {held['documents']} document), up to "
         f"{held['max_pages']} pages per mode, rendered fresh. Precision = 1 - normalised "
         "edit distance on characters (Fox-style, per page); CER = edit distance / reference "
         "characters over all pages; compression in cl100k tokens per visual token (here "
         f"{_tokens_per_char(held):.2f} cl100k tokens per character: Chinese with English "
         "names and commands) and in characters per visual token; the blind floor is the "
         "decoder given null tokens. Pages/s were measured under a load of ~6 on 2 cores."),
        "",
        curve(held, grids),
        "",
        "![mini-zh precision vs compression](fidelity_zh.png)",
        "",
        against(held),
        "",
        LIMITS,
    ]
    return out
