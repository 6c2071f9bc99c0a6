"""Visual-symbolic chat against text baselines on held-out instruction tasks (a table).

Held-out means documents never seen in SFT, and one task family (`section`) never seen at
all. For each context length (characters) it scores, per family:
- the SFT'd VST (`vst chat`'s session: prefill, page-by-page generation, stop head);
- the text baseline: a `vst train --modality text` byte model, instruction-tuned on the same
  samples as bytes for as long as the VST (`vst.sft_text`; `--text-sft-seconds 0`: the
  pretrained model, prompted alike); its context is cut from the left to its window;
- the same text model with its context cut to as many positions as the VST used;
by exact match (normalised), ROUGE-L F1, positions per sample and seconds per answer.

    python benchmarks/chat_bench.py --base /work/speedrun/vst \
        --text-base /work/speedrun/text_bytes_flops --corpus /work/speedrun/corpus/train.jsonl.zst \
        --out /tmp/chat_bench --sft-seconds 300 --per-cell 2
    python benchmarks/chat_bench.py --sft /tmp/chat_bench/sft ...   # reuse a tuned checkpoint
"""

from __future__ import annotations

import argparse
import json
import time
from itertools import islice
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="/work/speedrun/vst")
    ap.add_argument("--text-base", default="/work/speedrun/text_bytes_flops")
    ap.add_argument("--corpus", default="/work/speedrun/corpus/train.jsonl.zst")
    ap.add_argument("--docs", type=int, default=400, help="corpus documents to draw samples from")
    ap.add_argument("--out", default="/tmp/chat_bench")
    ap.add_argument("--sft", default=None, help="a tuned checkpoint (skip the SFT stage)")
    ap.add_argument("--sft-seconds", type=float, default=300)
    ap.add_argument("--text-sft-seconds", type=float, default=None,
                    help="text baseline tuning (default: --sft-seconds; 0: pretrained only)")
    ap.add_argument("--train-samples", type=int, default=160)
    ap.add_argument("--contexts", type=int, nargs="+", default=[2000, 4000, 8000])
    ap.add_argument("--per-cell", type=int, default=2, help="held-out samples per family/context")
    ap.add_argument("--threads", type=int, default=1,
                    help="1 is fastest for these tiny models on a shared 2-core machine")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from data.corpus import read_corpus
    from data.corpus.instruct_gen import generate_split
    from data.corpus.instructions import write_instructions
    from eval.chat_score import exact_match as exact
    from eval.metrics import rouge_l
    from vst.chat import ChatSession, load_chat_model
    from vst.data import text_codec
    from vst.generate import load_model
    from vst.sft import sft
    from vst.sft_config import SFTConfig
    from vst.sft_text import text_answer, text_prompt, text_sft

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    docs = list(islice(read_corpus(args.corpus), args.docs))
    split = generate_split(docs, context_chars=tuple(args.contexts), heldout_fraction=0.25,
                           heldout_families=("section",), seed=0)
    train = split.train[:: max(1, len(split.train) // args.train_samples)][: args.train_samples]
    write_instructions(train, out / "train.jsonl")
    cells: dict[tuple[str, int], list] = {}
    for s in split.heldout:
        cells.setdefault((s.family, s.meta["context_chars"]), []).append(s)
    held = [s for key in sorted(cells) for s in cells[key][: args.per_cell]]
    write_instructions(held, out / "heldout.jsonl")
    print(f"{len(docs)} documents; train {len(train)} samples (of {len(split.train)}); "
          f"held-out {len(held)} (of {len(split.heldout)})", flush=True)

    ckpt = args.sft
    sft_result = None
    if ckpt is None:
        cfg = SFTConfig(base=args.base, data=str(out / "train.jsonl"),
                        val_data=str(out / "heldout.jsonl"), out=str(out / "sft"), steps=100000,
                        max_seconds=args.sft_seconds, batch_size=4, lr=1e-3, log_every=10,
                        save_every=0, eval_samples=8, threads=args.threads)
        sft_result = sft(cfg)
        ckpt = sft_result["checkpoint"]
        sft_result.pop("history")
    model, codec, _ = load_chat_model(ckpt)
    text_model, text_state = load_model(args.text_base)
    tokenizer = text_state["train_config"].get("tokenizer", "bytes")
    room = text_model.cfg.max_seq_len
    text_seconds = args.sft_seconds if args.text_sft_seconds is None else args.text_sft_seconds
    text_hist = []
    if text_seconds > 0:
        torch.manual_seed(0)
        text_hist = text_sft(text_model, tokenizer, train, seconds=text_seconds)
        print(f"text SFT: {len(text_hist)} steps, response loss {text_hist[0]['loss']:.3f} -> "
              f"{text_hist[-1]['loss']:.3f}", flush=True)
    encode = text_codec(tokenizer)[0]

    rows = []
    for s in held:
        sess = ChatSession(model, codec, max_pages=1, max_new_tokens=80)
        a = sess.ask(s.instruction, s.context)
        t0 = time.perf_counter()
        full = text_answer(text_model, tokenizer, s.instruction, s.context)
        t_full = time.perf_counter() - t0
        # as many positions in all as the VST used: the context gets what the rest leaves
        overhead = len(encode(text_prompt(s.instruction, ""))) + 2
        t0 = time.perf_counter()
        trunc = text_answer(text_model, tokenizer, s.instruction, s.context,
                            context_tokens=max(0, a.positions - overhead))
        t_trunc = time.perf_counter() - t0
        # the reference answer's bits per byte under the frozen decoder given the VST's
        # tokens, the true tokens (floor) and null tokens (the decoder's prior alone)
        true_toks, ref_pages = codec.encode_text(s.response)
        k = min(len(ref_pages), len(a.tokens))
        with torch.no_grad():
            bpb = {name: float(codec.text_nll(t[:k], ref_pages[:k]).bits_per_byte())
                   for name, t in (("pred", a.tokens), ("true", true_toks),
                                   ("null", codec.null_tokens(k)))}
        text_positions = min(room, len(encode(text_prompt(s.instruction, s.context))) + 1)
        rows.append({"id": s.id, "family": s.family, "chars": s.meta["context_chars"],
                     "ref": s.response, "vst": a.text, "text": full, "trunc": trunc,
                     "vst_em": exact(a.text, s.response),
                     "vst_rouge": rouge_l([a.text], [s.response]),
                     "text_em": exact(full, s.response),
                     "text_rouge": rouge_l([full], [s.response]),
                     "trunc_em": exact(trunc, s.response),
                     "trunc_rouge": rouge_l([trunc], [s.response]),
                     "vst_positions": a.positions, "cl100k": a.text_tokens,
                     "text_positions": text_positions, "stopped": a.stopped,
                     "bpb_pred": bpb["pred"], "bpb_true": bpb["true"], "bpb_null": bpb["null"],
                     "vst_s": a.seconds, "text_s": t_full, "trunc_s": t_trunc})
        print(json.dumps({k: rows[-1][k] for k in ("id", "ref", "vst", "text", "trunc")},
                         ensure_ascii=False)[:400], flush=True)
    (out / "rows.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    table = ["| family | context chars | n | VST EM | VST ROUGE-L | text EM | text ROUGE-L | "
             "trunc EM | trunc ROUGE-L | answer bpb given VST / true / null tokens | "
             "VST positions | "
             "text positions | cl100k tokens | VST s/answer | text s/answer |", "|" + "---|" * 15]
    for key in sorted({(r["family"], r["chars"]) for r in rows}):
        rs = [r for r in rows if (r["family"], r["chars"]) == key]
        mean = lambda k: sum(r[k] for r in rs) / len(rs)  # noqa: E731
        held_out = " (held-out family)" if key[0] == "section" else ""
        table.append(
            f"| {key[0]}{held_out} | {key[1]} | {len(rs)} | {mean('vst_em'):.2f} | "
            f"{mean('vst_rouge'):.3f} | {mean('text_em'):.2f} | {mean('text_rouge'):.3f} | "
            f"{mean('trunc_em'):.2f} | {mean('trunc_rouge'):.3f} | {mean('bpb_pred'):.2f} / "
            f"{mean('bpb_true'):.2f} / {mean('bpb_null'):.2f} | {mean('vst_positions'):.0f} | "
            f"{mean('text_positions'):.0f} | {mean('cl100k'):.0f} | {mean('vst_s'):.1f} | "
            f"{mean('text_s'):.2f} |")
    report = "\n".join(table)
    if sft_result is not None:
        report += "\n\nVST SFT: " + json.dumps(sft_result)
    if text_hist:
        report += (f"\n\ntext SFT: {len(text_hist)} steps in {text_hist[-1]['seconds']:.0f}s, "
                   f"response loss {text_hist[0]['loss']:.3f} -> {text_hist[-1]['loss']:.3f}")
    (out / "table.md").write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
