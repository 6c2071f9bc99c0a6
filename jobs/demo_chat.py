"""The main job's chat stage: a short instruction tuning of the demo's VST, then a few chat
transcripts on held-out tasks (question pages rendered beside the decoded answers).

    vst demo --out runs/demo --only chat           # pulls in corpus, convert, train
    vst demo --out runs/demo --sft-seconds 120     # a longer SFT stage

Samples come from the demo corpus (data.corpus.instruct_gen): held-out documents, and one
family (`section`) never seen in SFT. Sized for a couple of minutes on a 2-core CPU.
"""

from __future__ import annotations

import html
from typing import Any


def chat_section(s: Any, state: Any) -> dict[str, Any]:
    """The stage's work; `s` is jobs.demo's DemoSettings, `state` its DemoState. Returns the
    fields of the report section (jobs.demo wraps them, so this module needs nothing of it)."""
    from data.corpus.instruct_gen import FAMILIES, generate
    from data.corpus.instructions import write_instructions
    from eval.chat_score import exact_match, score_answers
    from render import save_png
    from vst.chat import ChatSession
    from vst.generate import load_model
    from vst.sft import sft
    from vst.sft_config import SFTConfig

    out = s.out / "chat"
    # the last quarter of the documents (at least one) is held out: the demo corpus is small,
    # so a hash split (generate_split) could leave either side empty
    docs = sorted(state.docs, key=lambda d: d.id)
    n_held = max(1, len(docs) // 4)
    held_families = ("section",)
    train_s = generate(docs[:-n_held], families=[f for f in FAMILIES if f not in held_families],
                       context_chars=(s.chat_chars,), seed=s.seed)
    held_s = generate(docs[-n_held:], context_chars=(s.chat_chars,), seed=s.seed)
    train = write_instructions(train_s, out / "train.jsonl")
    held = write_instructions(held_s, out / "heldout.jsonl")
    codec = state.codec
    result = sft(SFTConfig(base=str(state.vst_checkpoint), data=str(train), val_data=str(held),
                           out=str(out / "sft"), steps=s.sft_steps, max_seconds=s.sft_seconds,
                           batch_size=4, save_every=0, eval_samples=8, log_every=10), codec=codec)
    model, _ = load_model(result["checkpoint"])
    # one transcript per family first, so the held-out family is always shown
    by_family: dict[str, list] = {}
    for x in held_s:
        by_family.setdefault(x.family, []).append(x)
    picks = [x for group in zip(*by_family.values()) for x in group][: s.chat_samples]
    rows, preds, refs, metrics = [], [], [], {}
    for i, x in enumerate(picks):
        answer = ChatSession(model, codec, max_pages=1).ask(x.instruction, x.context)
        page = codec.paginate(x.instruction)[0]
        image = out / f"question-{i}.png"
        save_png(codec.rasterize(page), image)
        preds.append(answer.text)
        refs.append(x.response)
        rows.append(
            f"<tr><td><img src='chat/{image.name}' width='240'></td><td><b>{html.escape(x.family)}"
            f"</b>{' (held-out family)' if x.family in held_families else ''}<br>"
            f"answer: <pre>{html.escape(answer.text[:300])}</pre>reference: "
            f"<code>{html.escape(x.response)}</code><br>exact match "
            f"{exact_match(answer.text, x.response):.0f}; {answer.positions} visual positions vs "
            f"{answer.text_tokens} cl100k tokens; {answer.seconds:.1f}s</td></tr>")
        metrics.setdefault("positions", []).append(answer.positions)
        metrics.setdefault("cl100k_tokens", []).append(answer.text_tokens)
    scores = score_answers(preds, refs) if refs else {}
    summary = {
        "sft_steps": result["steps"], "sft_seconds": result["train_seconds"],
        "sft_train_samples": result["train_samples"], "sft_skips": result["skips"],
        **{f"heldout_{k}": v for k, v in result["eval"].items()},
        **{f"chat_{k}": v for k, v in scores.items()},
        **{f"mean_{k}": sum(v) / len(v) for k, v in metrics.items()},
    }
    return dict(
        title="Chat (instruction tuning on [V_instruction, V_context, V_response]; held-out "
        "tasks)",
        metrics=summary,
        html="<p>The demo's VST tuned for a few minutes on generated instruction tasks (key-value "
        "retrieval, next sentence); answers to held-out documents and to a family never seen in "
        "tuning (section), generated page by page and decoded by the frozen codec. At debug "
        "size the answers are not expected to be right: the stage shows that the path runs "
        "and is scored.</p><table>" + "".join(rows) + "</table>",
        links=["chat/sft", "chat/heldout.jsonl"])
