"""The honest comparison: a VST against same-shape text models on the same documents.

    vst eval compare --store S --heldout-store H --vst runs/vst --text runs/text-bytes \
        --text runs/text-cl100k --out runs/compare

For each split (held-out documents of the training store; the held-out source's store)
it scores exactly the same pages of the same windows:

* bits per byte under the frozen decoder given the VST's predicted tokens, the true
  tokens (the floor) and null tokens (the decoder's prior);
* each text model's own bits per byte with its full context (`vst.evaluate.score_text`,
  the path in-training evaluation takes too); and for one of them (--truncation) with
  each token's context cut to its own page (`_page_cut`: Delta_text is that minus the
  full score) and truncated to the positions the VST uses for the same context (the
  critique's truncation baseline);
* positions per document and KV-cache bytes for both;

and, on held-out documents, free-running continuations of both families from the same
prompts, judged by a text model (bits per byte) and by the training corpus's vocabulary.
Training compute (FLOPs, decoder-CE included) and wall-clock come from the runs'
`result.json`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from data.errors import BadInput
from eval.generation_judge import Judge, corpus_vocabulary, judge_continuations
from vst.data import TextCollate, collate_vector, text_codec
from vst.evaluate import eval_batches, evaluate, score_text
from vst.generate import continue_regrounded, continue_tokens, load_model, read_page, sample_text
from vst.model import VST
from vst.reader import load_reader


@dataclass
class CompareConfig:
    """Score a VST run and text-baseline runs on the same held-out pages (see module doc)."""

    store: str = ""  # the training token store; its held-out documents are scored
    vst: str = ""  # VST run directory (vst-train --out)
    text: list[str] = field(default_factory=list)  # text-baseline run directory (repeatable)
    heldout_store: Optional[str] = None  # store of the held-out source (same codec)
    out: str = "runs/compare"  # report directory (compare.json, compare.md)
    windows: int = 32  # validation windows scored per split
    batch_size: int = 8  # windows per batch
    val_fraction: float = 0.05  # held-out share of documents; must match training's
    truncation: Optional[str] = None  # text run also scored with the VST's positions of
        # context and with its context cut to the page (default: the first --text)
    control: Optional[str] = None  # the reader-only control run (`vst train --recipe
        # hier-control`: the VST's reader trained alone on null tokens); without one, a VST
        # read by the frozen codec is credited against the codec's prior
    generations: int = 6  # held-out documents continued freely by every model
    prompt_pages: int = 2  # pages of prompt before a free-running continuation
    temperature: float = 0.8  # sampling temperature of the text models
    judge: Optional[str] = None  # text run used as judge (default: the first --text)
    seed: int = 0  # seed of the samplers


def load_run(run_dir: str | Path) -> tuple[VST, dict, dict]:
    """(model, checkpoint state, result.json) of a vst-train run directory."""
    model, state = load_model(run_dir)
    result_path = Path(run_dir) / "result.json"
    result = json.loads(result_path.read_text()) if result_path.exists() else {}
    return model, state, result


def kv_bytes_per_position(model: VST, bytes_per_value: int = 2) -> int:
    """K and V of every layer for one position (bf16 by default, as served)."""
    c = model.cfg
    return 2 * c.depth * c.n_kv_heads * c.head_dim * bytes_per_value


def positions_per_document(store, split_docs: list[str], n: int, tokenizers: list[str]) -> dict:
    """Mean positions a document takes: visual tokens, and text tokens per tokenizer."""
    pages = chars = 0
    counts = {t: 0 for t in tokenizers}
    encoders = {t: text_codec(t)[0] for t in tokenizers}
    for doc_id in split_docs:
        doc = store.get_document(doc_id)
        text = "".join(p.text for p in doc.pages)
        pages += len(doc.pages)
        chars += len(text)
        for t, enc in encoders.items():
            counts[t] += len(enc(text))
    k = max(1, len(split_docs))
    out = {"documents": len(split_docs), "chars": chars / k, "vst": n * pages / k}
    out.update({f"text_{t}": c / k for t, c in counts.items()})
    return out


def split_sources(cfg: CompareConfig, T: int) -> dict[str, Any]:
    from vst.store_source import StoreSource

    out = {"heldout_docs": StoreSource(cfg.store, T, "val", cfg.val_fraction, shuffle="none")}
    if cfg.heldout_store:  # every document of the held-out source is held out
        out["heldout_source"] = StoreSource(cfg.heldout_store, T, "val", 1.0, shuffle="none")
    return out


def reader_control(row: dict, vcfg: dict, control, source, windows: int, batch_size: int
                   ) -> dict[str, Any]:
    """The reader-only control on the same pages, and the VST's context gain over it.

    A VST is credited only with what it adds over its reader given null tokens, trained
    the same way: the control run's reader (`control`: its model and reader), or, for a
    VST read by the frozen codec, the codec's prior (the row's bpb_null).
    """
    if control is not None:
        model, reader = control
        ev = evaluate(model, source, lambda ws: collate_vector(ws, model.cfg.grid, model.cfg.rope),
                      codec=reader, k=-1, batches=max(1, windows // batch_size),
                      batch_size=batch_size)
        bpb, kind = ev["bpb_null"], "its reader trained alone on null tokens"
    elif vcfg.get("reader", "frozen") == "frozen":
        bpb, kind = row["bpb_null"], "the frozen reader's prior"
    else:
        return {"reader_control": "missing: a trained reader needs --control (a hier-control run)"}
    return {"bpb_reader_control": bpb, "reader_control": kind,
            "context_gain_vst": bpb - row["bpb_pred"]}


def generations(vst: VST, codec, texts: dict[str, tuple[VST, dict]], source, cfg: CompareConfig
                ) -> list[dict]:
    """Free-running continuations of held-out documents: one page of the VST (decoded by
    the codec) and as many bytes of each text model, from the same prompt pages."""
    records = []
    gen = torch.Generator().manual_seed(cfg.seed)
    n = vst.cfg.tokens_per_page
    docs = [d for d in source.documents()
            if len(source.store.get_document(d).pages) > cfg.prompt_pages]
    for doc_id in docs[: cfg.generations]:
        tokens, page_texts = source.document(doc_id)
        prompt_text = "".join(page_texts[: cfg.prompt_pages])
        truth = page_texts[cfg.prompt_pages]
        prompt = torch.from_numpy(tokens[: cfg.prompt_pages]).reshape(-1, tokens.shape[-1])
        new = continue_tokens(vst, prompt, n, generator=gen).view(1, n, -1).float().cpu()
        # the decoder samples at the text models' temperature, where it can; re-grounded,
        # every generated line is re-encoded before the VST reads on (the same prompt)
        made = {"vst": read_page(codec, new, cfg.temperature, gen),
                "vst_regrounded": continue_regrounded(vst, codec, prompt, 1, cfg.temperature,
                                                      gen)[1][0],
                "true": truth}
        for label, (model, tcfg) in texts.items():
            encode, _, _ = text_codec(tcfg["tokenizer"])
            n_new = max(1, len(encode(truth)))
            made[label] = sample_text(model, tcfg["tokenizer"], prompt_text, n_new,
                                      cfg.temperature, gen)
        for label, text in made.items():
            records.append({"doc": doc_id, "source": label, "prompt": prompt_text,
                            "continuation": text})
    return records


def compare(cfg: CompareConfig) -> dict[str, Any]:
    from data.store import Store

    if not cfg.store or not cfg.vst:
        raise BadInput("compare needs --store and --vst", hint="see vst eval compare --help")
    vst, vstate, vres = load_run(cfg.vst)
    vcfg = vstate["train_config"]
    codec = load_reader(vstate)  # the codec it trained through, with its trained reader if any
    T = vst.cfg.tokens_per_page * vcfg["pages_per_window"]
    texts = {}
    for run in cfg.text:
        model, tstate, tres = load_run(run)
        tcfg = tstate["train_config"]
        texts[f"text_{tcfg['tokenizer']}:{Path(run).name}"] = (model, tcfg, tres)
    control = None
    if cfg.control:
        cmodel, cstate, cres = load_run(cfg.control)
        if cstate["train_config"].get("reader_input") != "null":
            raise BadInput(f"--control {cfg.control} is not a reader-only control run",
                           hint="train one with --recipe hier-control")
        control = (cmodel, load_reader(cstate))
    truncated = next((lb for lb in texts if cfg.truncation and
                      lb.endswith(":" + Path(cfg.truncation).name)), next(iter(texts), None))
    summary: dict[str, Any] = {"config": asdict(cfg), "splits": {}, "training": {},
                               "truncated_model": truncated}
    summary["training"]["vst"] = _training(vres)
    if control is not None:
        summary["training"]["reader_control"] = _training(cres)
    for label, (_, _, tres) in texts.items():
        summary["training"][label] = _training(tres)
    sources = split_sources(cfg, T)
    for split, source in sources.items():
        k = min(cfg.windows, len(source))
        row: dict[str, Any] = {"windows": k}
        row.update(evaluate(vst, source, lambda ws: collate_vector(ws, vst.cfg.grid,
                                                                    vst.cfg.rope),
                            codec=codec, k=-1, batches=max(1, k // cfg.batch_size),
                            batch_size=cfg.batch_size))
        row.update(reader_control(row, vcfg, control, source, k, cfg.batch_size))
        batches = max(1, k // cfg.batch_size)
        for label, (model, tcfg, _) in texts.items():
            collate = TextCollate(tcfg["tokenizer"])
            # the context baselines of one model: its context cut to the page, and to the
            # positions the VST holds (a stride of T/2: every target sees T/2 to T)
            scores = evaluate(model, source, collate, k=-1, batches=batches,
                              batch_size=cfg.batch_size, page_cut=label == truncated)
            row[f"bpb_{label}"] = scores["bpb_text"]
            if label == truncated:
                row[f"bpb_{label}_page_cut"] = scores["bpb_text_page_cut"]
                row[f"bpb_{label}_truncated_{T}"] = score_text(
                    model, eval_batches(source, batches, cfg.batch_size), collate, k=-1,
                    context=T, stride=T // 2)["bpb"]
        docs = source.documents()[: max(8, k)]
        row["positions"] = positions_per_document(
            source.store, docs, vst.cfg.tokens_per_page,
            sorted({tcfg["tokenizer"] for _, tcfg, _ in texts.values()}))
        row["kv_bytes_per_position"] = {"vst": kv_bytes_per_position(vst), **{
            label: kv_bytes_per_position(m) for label, (m, _, _) in texts.items()}}
        summary["splits"][split] = row
    heldout = sources["heldout_docs"]
    if cfg.generations and texts:
        records = generations(vst, codec, {lb: (m, c) for lb, (m, c, _) in texts.items()},
                              heldout, cfg)
        judge_label = next((lb for lb in texts if cfg.judge and
                            lb.endswith(":" + Path(cfg.judge).name)), next(iter(texts)))
        jm, jc, _ = texts[judge_label]
        # the judge reads at most half its context of each continuation (one page fits a
        # 4096-byte judge; a garbled page can decode to more characters than the page held)
        limit = jm.cfg.max_seq_len // 2
        for rec in records:
            rec["continuation"] = rec["continuation"][:limit]
        train_store = Store(cfg.store)
        vocab = corpus_vocabulary(p.text for d in _train_docs(train_store, cfg.val_fraction)
                                  for p in train_store.get_document(d).pages)
        summary["generation"] = {
            "judge": judge_label, "temperature": cfg.temperature,
            "scores": judge_continuations(records, Judge(jm, jc["tokenizer"]), vocab),
            "samples": records,
        }
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(summary, indent=1, default=float))
    (out / "compare.md").write_text(report_markdown(summary))
    return summary


def plot_bpb_vs_flops(vst_evals: list[dict], text_evals: dict[str, list[dict]],
                      path: str | Path) -> Path:
    """Held-out bits per byte against training FLOPs on one axes: the VST's predicted,
    null and true tokens through the frozen decoder, and every text model (evaluations
    that `vst-train --eval-points` records)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    v = [e for e in vst_evals if e.get("train_flops") and "bpb_pred" in e]
    for key, style in (("bpb_pred", "o-"), ("bpb_null", ":"), ("bpb_true", "--")):
        ax.plot([e["train_flops"] for e in v], [e[key] for e in v], style,
                label=f"VST, {key[4:]} tokens")
    for name, evals in text_evals.items():
        t = [e for e in evals if e.get("train_flops") and "bpb_text" in e]
        ax.plot([e["train_flops"] for e in t], [e["bpb_text"] for e in t], "s-", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs (the VST's include decoder-CE through the frozen codec)")
    ax.set_ylabel("held-out bits per byte")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _train_docs(store, val_fraction: float, limit: int = 2000) -> list[str]:
    from data.corpus import split_of

    return [d for d in store.doc_ids if split_of(d, val_fraction) == "train"][:limit]


def _training(result: dict) -> dict:
    keys = ("steps", "train_flops", "wall_clock_s", "params", "tokens_per_s",
            "decoder_flops_per_page")
    return {k: result.get(k) for k in keys}


def report_markdown(summary: dict) -> str:
    lines = ["# VST against text baselines (same documents, same scored pages)", ""]
    for split, row in summary["splits"].items():
        lines += [f"## {split} ({row['windows']} windows)", "", "| model | bits per byte |",
                  "|---|---|"]
        names = {"bpb_pred": "VST, predicted tokens, each line read without later slots "
                 "(leak-free, the headline)",
                 "bpb_pred_bidir": "VST, predicted tokens read page-wide (may leak)",
                 "bpb_true": "true tokens (the floor)", "bpb_null": "null tokens (the prior)"}
        for key, name in names.items():
            if key in row:
                lines.append(f"| {name}, through the VST's reader | {row[key]:.3f} |")
        if "bpb_reader_control" in row:
            lines.append(f"| reader-only control: {row['reader_control']} | "
                         f"{row['bpb_reader_control']:.3f} |")
            lines.append(f"| context gain of the VST (control - VST) | "
                         f"{row['context_gain_vst']:.3f} |")
        elif "reader_control" in row:
            lines.append(f"| reader-only control | {row['reader_control']} |")
        for key, value in row.items():
            if key.startswith("bpb_text"):
                lines.append(f"| {key[4:]} | {value:.3f} |")
        pos = row["positions"]
        lines += ["", "positions per document: " + ", ".join(
            f"{k} {v:,.0f}" for k, v in pos.items() if k not in ("documents", "chars")),
            f"(mean over {pos['documents']} documents of {pos['chars']:,.0f} characters); "
            "KV-cache bytes per position (bf16): " + ", ".join(
                f"{k} {v:,}" for k, v in row["kv_bytes_per_position"].items()), ""]
    lines += ["## Training compute", "", "| run | steps | FLOPs | wall-clock s |", "|---|---|---|---|"]
    for label, t in summary["training"].items():
        flops = t.get("train_flops")
        lines.append(f"| {label} | {t.get('steps')} | "
                     f"{flops:.3g} | {t.get('wall_clock_s') or 0:.0f} |" if flops else
                     f"| {label} | {t.get('steps')} | - | - |")
    gen = summary.get("generation")
    if gen:
        lines += ["", f"## Free-running continuations (judge: {gen['judge']}, text models "
                  f"sample at temperature {gen['temperature']})", "",
                  "| source | judge bits per byte | corpus-vocabulary share |", "|---|---|---|"]
        for src, s in gen["scores"].items():
            lines.append(f"| {src} | {s['bpb']:.3f} | {s['vocab_share']:.3f} |")
        lines += ["", "### Samples", ""]
        for rec in gen["samples"][: 3 * (len(gen["scores"]))]:
            snippet = rec["continuation"][:300].replace("\n", "⏎ ")
            lines.append(f"- **{rec['source']}** ({rec['doc']}): `{snippet}`")
    return "\n".join(lines) + "\n"
