"""The main job: the whole pipeline, end to end, on the embedded default.

    vst demo --out runs/demo                                  # mini codec, local demo corpus
    vst demo --out runs/demo --codec deepseek-ocr2 --codec-path /models/DeepSeek-OCR-2

Stages (each writes its own folder under OUT and a section of OUT/report.html):

  corpus    build the demo corpus (Pile format, from the stdlib's own docs)
  render    typeset + rasterize it; render throughput and a few page images
  fidelity  text -> render -> encode -> decode -> text on held-out text
  convert   corpus -> visual-token store, through the Ray conversion job
  train     a debug VST on the store, and the same-shape text baseline
  evaluate  RULER-style tasks through the runners, scored; efficiency table
  chat      a short instruction tuning of the VST; chat transcripts on held-out tasks

Sized to finish in a few minutes on a 2-core CPU. OUT/summary.json holds every number.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import typer


@dataclass
class Section:
    """What one stage adds to the report."""

    title: str
    metrics: dict[str, Any]
    html: str = ""
    seconds: float = 0.0
    links: list[str] = field(default_factory=list)
    table: bool = True  # False when `html` already shows the metrics


@dataclass
class DemoSettings:
    """Run the pipeline end to end on the demo corpus and write OUT/report.html."""

    out: Path = Path("runs/demo")  # output folder for every stage and report.html
    codec: str = "mini"  # codec backend: mini (shipped, CPU), deepseek-ocr2 or deepseek-ocr
    codec_path: Optional[Path] = None  # local checkpoint directory for a DeepSeek-OCR backend
    codec_mode: Optional[str] = None  # codec mode (tokens per page), used by every stage;
        # default: the backend's
    trust_remote_code: bool = False  # allow DeepSeek-OCR v1's remote code from --codec-path
    n_docs: int = 24  # demo corpus documents
    max_chars_per_doc: int = 8_000  # characters kept of each demo document
    fidelity_pages: int = 24  # held-out pages per codec mode in the fidelity stage
    train_steps: int = 120  # VST training steps (the text baseline gets equal FLOPs)
    dec_weight: float = 1.0  # weight of the decoder-CE loss (nats per byte)
    eval_samples: int = 2  # evaluate stage: held-out samples per task and length
    eval_lengths: list[int] = field(default_factory=lambda: [1500, 4000])  # evaluate stage:
        # context lengths of the retrieval curriculum, in characters
    eval_train_per_length: int = 12  # evaluate stage: training samples per task and length
    eval_budget: float = 2e11  # evaluate stage: training FLOPs of every family
    sft_seconds: float = 90.0  # chat stage: instruction-tuning wall-clock (encoding excluded)
    sft_steps: int = 200  # chat stage: instruction-tuning steps at most
    chat_chars: int = 1_500  # chat stage: context length of the instruction tasks, in characters
    chat_samples: int = 3  # chat stage: held-out transcripts shown and scored
    seed: int = 0  # seed of the corpus sample, training and tasks
    only: list[str] = field(default_factory=list)  # run only these stages (repeatable):
        # corpus, render, fidelity, convert, train, evaluate, chat; what they need runs too

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        for name in ("n_docs", "train_steps", "fidelity_pages", "eval_samples"):
            if getattr(self, name) < (2 if name == "n_docs" else 1):
                raise typer.BadParameter(f"must be at least {2 if name == 'n_docs' else 1}",
                                         param_hint=f"--{name.replace('_', '-')}")
        stages_to_run(self.only)  # unknown stage names fail before any work

    def load_codec(self):
        from codec import load_codec

        return load_codec(self.codec, mode=self.codec_mode, path=self.codec_path,
                          trust_remote_code=self.trust_remote_code)


@dataclass
class DemoState:
    """What the stages hand on to later stages."""

    settings: DemoSettings
    corpus: Optional[Path] = None  # the demo corpus file
    docs: list[Any] = field(default_factory=list)  # its documents (data.corpus.Document)
    store: Optional[Path] = None  # the visual-token store
    visual_tokens_per_page: int = 0
    vst_checkpoint: Optional[Path] = None
    text_checkpoint: Optional[Path] = None
    _codec: Any = None

    @property
    def codec(self):
        """The frozen codec (the demo's backend, mode and weights), loaded once on first use."""
        if self._codec is None:
            self._codec = self.settings.load_codec()
        return self._codec


# ---------------------------------------------------------------- stages


def stage_corpus(s: DemoSettings, state: DemoState) -> Section:
    from data.corpus import build_demo_corpus, read_corpus

    corpus = build_demo_corpus(s.out / "corpus", n_docs=s.n_docs,
                               max_chars_per_doc=s.max_chars_per_doc, seed=s.seed)
    docs = list(read_corpus(corpus))
    state.corpus = corpus
    state.docs = docs
    chars = sum(len(d.text) for d in docs)
    return Section("Corpus", {"path": str(corpus), "documents": len(docs), "characters": chars},
                   f"<p>{len(docs)} documents, {chars:,} characters of the Python standard "
                   f"library's own documentation, in The Pile's format.</p>")


def stage_render(s: DemoSettings, state: DemoState) -> Section:
    from render import paginate, rasterize, save_png

    cfg = state.codec.render_config
    img_dir = s.out / "render"
    img_dir.mkdir(parents=True, exist_ok=True)
    pages, images, t0 = 0, [], time.perf_counter()
    for doc in state.docs:
        for page in paginate(doc.text, cfg):
            image = rasterize(page, cfg)
            pages += 1
            if len(images) < 4:
                images.append(save_png(image, img_dir / f"page_{len(images)}.png").name)
    seconds = time.perf_counter() - t0
    rate = pages / max(seconds, 1e-9)
    figs = "".join(f'<img src="render/{name}" width="256" alt="page {i}"> '
                   for i, name in enumerate(images))
    return Section("Render", {"render_config_id": cfg.id, "backend": cfg.backend,
                              "width": cfg.width, "height": cfg.height, "pages": pages,
                              "pages_per_s": round(rate, 1)},
                   f"<p>{pages} pages ({cfg.width}x{cfg.height}, {cfg.backend}, config "
                   f"<code>{cfg.id}</code>) in {seconds:.2f}s: <b>{rate:.0f} pages/s</b> "
                   f"(layout + raster, one process, PNG not included).</p><p>{figs}</p>")


def stage_fidelity(s: DemoSettings, state: DemoState) -> Section:
    from data.corpus import heldout_texts
    from eval.fidelity import run_fidelity

    # The shipped codec's whole curve (every mode); a user-named codec as configured.
    if s.codec == "mini" and s.codec_mode is None:
        from codec.mini import MODES

        specs: list = [f"mini:{mode}" for mode in MODES]
    else:
        specs = [state.codec]
    texts = heldout_texts(n=s.fidelity_pages, seed=s.seed)
    summary = run_fidelity(texts, specs, s.out / "fidelity", max_pages=s.fidelity_pages,
                           source="pydoc_data language-reference topics (held out)")
    columns = ("precision", "blind_precision", "cer", "compression", "chars_per_visual_token",
               "encode_pages_per_s", "decode_pages_per_s")
    metrics = {f"{label} {key}": m[key] for label, m in summary["results"].items()
               for key in columns if key in m}
    head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in columns)
    body = "".join(f"<tr><td>{html.escape(label)}</td>"
                   + "".join(f"<td>{_fmt(m.get(c, ''))}</td>" for c in columns) + "</tr>"
                   for label, m in summary["results"].items())
    return Section("Fidelity (held-out text from a different source)", metrics,
                   "<p>Text -> render -> encode -> decode -> text. Precision is Fox-style "
                   "(1 - normalized edit distance); compression is cl100k text tokens per "
                   "visual token; the blind floor is the decoder given null tokens. Full "
                   "report with sample pages, diffs and the DeepSeek-OCR anchors: "
                   "<a href='fidelity/report.html'>fidelity/report.html</a>.</p>"
                   f"<table><tr><th>codec</th>{head}</tr>{body}</table>"
                   "<img src='fidelity/precision_vs_compression.png' width='480'>",
                   table=False,
                   links=["fidelity/report.html", "fidelity/metrics.json"])


def stage_convert(s: DemoSettings, state: DemoState) -> Section:
    from jobs.convert.driver import run_conversion

    store = s.out / "store"
    summary = run_conversion(state.corpus, store, codec=s.codec,
                             codec_path=str(s.codec_path) if s.codec_path else None,
                             codec_mode=s.codec_mode, trust_remote_code=s.trust_remote_code,
                             num_parts=2, num_actors=1)
    state.store = store
    state.visual_tokens_per_page = summary["compression"]["visual_tokens_per_page"]
    metrics = {key: summary[key] for key in ("docs", "pages", "tokens", "skips", "pages_per_s",
                                              "wall_time_s")}
    metrics["text_tokens_per_visual_token"] = summary["compression"]["text_to_visual_tokens"]
    metrics["chars_per_visual_token"] = summary["compression"]["chars_per_visual_token"]
    return Section("Convert (Ray job -> visual-token store)", metrics,
                   f"<p>Store <code>{store}</code>: {summary['pages']} pages in "
                   f"{summary['parts']} parts, checksums verified.</p>",
                   links=["store/summary.json", "store/manifest.json"])


def stage_train(s: DemoSettings, state: DemoState) -> Section:
    from eval.compare import plot_bpb_vs_flops
    from vst.train import TrainConfig, train

    pages_per_window, text_window = 4, 512
    vector_positions = pages_per_window * int(state.visual_tokens_per_page)
    common = dict(data=str(state.store), flavour="debug", batch_size=8, seed=s.seed,
                  progress=True, tensorboard=False, pages_per_window=pages_per_window,
                  codec_mode=s.codec_mode, codec_path=str(s.codec_path) if s.codec_path else None,
                  eval_points=3, eval_batches=1, eval_every=0,
                  eval_pages=-1)
    # the `learn` recipe (vst/recipes.py, docs/experiments.md) at debug size: decoder-CE
    # on every page, a sample of lines each, from a head that starts at the prior
    vst = train(TrainConfig.from_recipe(
        "learn", **common, out=str(s.out / "train" / "vst"), steps=s.train_steps,
        dec=s.dec_weight, save_every=s.train_steps))
    # the same-shape byte-level baseline at the VST's training FLOPs, decoder-CE counted
    text = train(TrainConfig.from_recipe(
        "text-bytes", **common, out=str(s.out / "train" / "text"), text_seq_len=text_window,
        steps=1_000_000, max_flops=vst["train_flops"], save_every=0))
    state.vst_checkpoint = vst["checkpoint"]
    state.text_checkpoint = text["checkpoint"]
    plot = plot_bpb_vs_flops(vst["evals"], {"text (bytes)": text["evals"]},
                             s.out / "train" / "bpb_vs_flops.png")
    ev, tev = vst["eval"], text["eval"]
    metrics = {
        "vst_steps": vst["steps"], "text_steps": text["steps"], "vst_dec_weight": s.dec_weight,
        "vst_train_flops": vst["train_flops"], "text_train_flops": text["train_flops"],
        "positions_per_step_vst": 8 * vector_positions, "positions_per_step_text": 8 * text_window,
        "vst_val_cos": ev.get("val_cos"), "vst_val_mse": ev.get("val_mse"),
        "bpb_given_vst_tokens": ev.get("bpb_pred"), "bpb_given_true_tokens": ev.get("bpb_true"),
        "bpb_given_null_tokens": ev.get("bpb_null"), "text_baseline_bpb": tev.get("bpb_text"),
        "vst_tokens_per_s": vst.get("tokens_per_s"), "text_tokens_per_s": text.get("tokens_per_s"),
    }
    return Section("Train (debug VST, `learn` recipe, vs the same-shape byte-level text "
                   "baseline at equal training FLOPs)",
                   metrics,
                   "<p>Bits per byte of the true pages under the frozen codec decoder, given "
                   "the VST's predicted tokens, the true tokens (floor) and null tokens (the "
                   "decoder's prior), next to the text baseline's own bits per byte on the same "
                   "held-out documents. The baseline trains for the VST's FLOPs, the frozen "
                   "decoder's forward and backward included: on the demo's few documents that "
                   "is ~1,500 steps, and the baseline overfits (its held-out bpb rises along the "
                   "plot). Debug size and a few minutes of CPU: a smoke test of the method, not a "
                   "result (docs/experiments.md has those).</p>"
                   f'<img src="train/{plot.name}" width="560">',
                   links=["train/vst", "train/text"])


def stage_evaluate(s: DemoSettings, state: DemoState) -> Section:
    from eval.efficiency import EfficiencyConfig, run_efficiency
    from eval.long_context_report import task_means
    from jobs.long_context import StudyConfig, run_study

    # The long-context study (jobs/long_context.py) scaled to minutes: the retrieval
    # curriculum from the demo corpus, a VST with a pointer head and the text baselines at
    # equal FLOPs, RULER scores against length on held-out documents' haystacks.
    study = s.out / "eval" / "long_context"
    codec = state.codec
    summary = run_study(StudyConfig(
        out=str(study), corpus=str(state.corpus), codec=f"{s.codec}:{codec.mode}",
        codec_path=str(s.codec_path) if s.codec_path else None,
        lengths=list(s.eval_lengths), train_per_length=s.eval_train_per_length,
        eval_per_length=s.eval_samples, budgets=[s.eval_budget], text_depths=[1],
        short_chars=0, hier=False, seed=s.seed), codec=codec)
    held = set(summary.get("heldout_tasks", []))
    metrics = {}
    for fam, scores in summary["scores"].items():
        trained = [t for t in scores if t not in held]
        for n, v in task_means(scores, trained).items():
            metrics[f"{fam}:{int(n) / 1000:g}K"] = round(v, 1)
    # the codec the demo already loaded: right checkpoint and options, no second load
    run_efficiency(EfficiencyConfig(out=s.out / "eval" / "efficiency", lengths=[2048, 4096, 8192],
                                    flavour="debug", threads=1), codec=codec)
    table = (s.out / "eval" / "efficiency" / "efficiency.md")
    eff_html = f"<pre>{html.escape(table.read_text())}</pre>" if table.exists() else ""
    plots = sorted(study.glob("score_vs_length_*.png"))
    img = "".join(f'<img src="eval/long_context/{p.name}" width="720">' for p in plots)
    return Section("Evaluate (retrieval curriculum; RULER against length; efficiency)", metrics,
                   "<p>The long-context study at demo scale (<code>vst curriculum study</code>): "
                   "RULER-style retrieval samples built from the demo corpus, a fresh VST with a "
                   "pointer head and the cl100k and byte text models trained at equal FLOPs, "
                   "scored end to end (text -> render -> encode -> VST -> decode) with RULER's "
                   "string_match_all on haystacks from held-out documents; metrics are the mean "
                   "over the trained tasks at each length. The full study: docs/long_context.md."
                   "</p>" + img + eff_html,
                   links=["eval/long_context/report.md", "eval/efficiency/efficiency.md"])


def stage_chat(s: DemoSettings, state: DemoState) -> Section:
    from jobs.demo_chat import chat_section

    return Section(**chat_section(s, state))


# A stage reads what these earlier stages leave in `state`; --only pulls them in.
PREREQUISITES = {"convert": ["corpus"], "render": ["corpus"], "train": ["convert"],
                 "evaluate": ["corpus"], "chat": ["train"]}

STAGES: list[tuple[str, Callable[[DemoSettings, DemoState], Section]]] = [
    ("corpus", stage_corpus),
    ("render", stage_render),
    ("fidelity", stage_fidelity),
    ("convert", stage_convert),
    ("train", stage_train),
    ("evaluate", stage_evaluate),
    ("chat", stage_chat),
]


# ---------------------------------------------------------------- report


def write_report(s: DemoSettings, sections: list[Section], total: float) -> Path:
    summary = {"settings": {k: v if isinstance(v, list) else str(v) for k, v in vars(s).items()},
               "total_seconds": total,
               "stages": {sec.title: {"seconds": round(sec.seconds, 2), **sec.metrics}
                          for sec in sections}}
    (s.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    body = []
    for sec in sections:
        rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_fmt(v))}</td></tr>"
                       for k, v in sec.metrics.items()
                       if sec.table and not isinstance(v, (dict, list)))
        links = " ".join(f'<a href="{link}">{html.escape(link)}</a>' for link in sec.links)
        body.append(f"<h2>{html.escape(sec.title)} <small>({sec.seconds:.1f}s)</small></h2>"
                    f"{sec.html}<table>{rows}</table><p>{links}</p>")
    page = (f"<!doctype html><meta charset='utf-8'><title>VST demo</title><style>"
            f"body{{font-family:sans-serif;max-width:960px;margin:2em auto}}"
            f"table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px}}"
            f"</style><h1>Visual-Symbolic Transformer: end-to-end demo</h1>"
            f"<p>codec <code>{html.escape(s.codec)}</code>, total {total:.0f}s. "
            f"All numbers: <a href='summary.json'>summary.json</a>.</p>" + "".join(body))
    path = s.out / "report.html"
    path.write_text(page)
    return path


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def stages_to_run(only: Optional[list[str]]) -> list[str]:
    names = [name for name, _ in STAGES]
    if not only:
        return names
    unknown = sorted(set(only) - set(names))
    if unknown:
        raise typer.BadParameter(f"unknown stage(s) {', '.join(unknown)}; "
                                 f"choose from {', '.join(names)}", param_hint="--only")
    wanted, todo = set(), list(only)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(PREREQUISITES.get(name, []))
    return [name for name in names if name in wanted]


def run_demo(settings: DemoSettings, only: Optional[list[str]] = None) -> dict:
    from rich.console import Console

    console = Console()
    run = stages_to_run(only)
    settings.out.mkdir(parents=True, exist_ok=True)
    state = DemoState(settings)
    sections, t_start = [], time.perf_counter()
    try:
        for name, stage in STAGES:
            if name not in run:
                continue
            console.rule(f"[bold]{name}")
            t0 = time.perf_counter()
            section = stage(settings, state)
            section.seconds = time.perf_counter() - t0
            sections.append(section)
            console.print({k: v for k, v in section.metrics.items()
                           if not isinstance(v, (dict, list))})
    finally:  # a failed stage still leaves the report of the stages before it
        total = time.perf_counter() - t_start
        report = write_report(settings, sections, total)
        console.print(f"[green]report:[/green] {report}  ({total:.0f}s, "
                      f"{len(sections)}/{len(run)} stages)")
    return json.loads((settings.out / "summary.json").read_text())


def demo_command():
    """`vst demo`: the command line is `DemoSettings`."""
    from jobs.config_cli import config_command

    return config_command(DemoSettings, lambda s: run_demo(s, only=s.only or None))
