"""Runners end to end on tiny models and 2-sample task files: format, prompts, resuming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from eval.runners.codec_reader import CodecReaderRunner
from eval.runners.common import (
    PredictionFile,
    Prompt,
    Runner,
    build_prompt,
    max_new_tokens_for,
    run_tasks,
)

SAMPLES = [
    {
        "input": "What is the magic number?",
        "context": "Passage 1: The grass is green. The magic number is 42. " * 6,
        "answers": ["42"],
        "length": 60,
        "all_classes": None,
        "_id": "a1",
    },
    {
        "input": "What colour is the sky?",
        "context": "Passage 1: The sky is blue. The sun is yellow. " * 6,
        "answers": ["blue"],
        "length": 54,
        "all_classes": None,
        "_id": "b2",
    },
]




def write_task(dir_: Path, name: str = "hotpotqa", samples=SAMPLES) -> Path:
    dir_.mkdir(parents=True, exist_ok=True)
    path = dir_ / f"{name}.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in samples), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


class EchoRunner(Runner):
    """Answers with what it was asked, so tests can see the prompt a runner built."""

    name = "echo"

    def __init__(self) -> None:
        self.calls: list[tuple[Prompt, str, int]] = []

    def predict(self, prompt: Prompt, *, dataset: str, max_new_tokens: int) -> str:
        self.calls.append((prompt, dataset, max_new_tokens))
        return prompt.context


# ----------------------------------------------------------------- prompts and files


def test_prompt_is_official_template_split_at_context():
    from eval import longbench

    s = SAMPLES[0]
    p = build_prompt("hotpotqa", s)
    assert p.text == longbench.dataset2prompt()["hotpotqa"].format(**s)
    assert p.context == s["context"] and s["input"] in p.after and "{" not in p.before
    assert build_prompt("hotpotqa_e", s).text == p.text  # LongBench-E files share templates
    assert max_new_tokens_for("hotpotqa", s) == 32 and max_new_tokens_for("gov_report_e", s) == 512
    assert max_new_tokens_for("anything", {"max_new_tokens": 7}) == 7
    # unknown datasets (custom or RULER-style files without a template) get a generic one
    generic = build_prompt("my_task", s)
    assert generic.context == s["context"] and generic.after.endswith("Answer:")
    custom = build_prompt("x", {**s, "template": "Q {input} C {context}"})
    assert custom.before == f"Q {s['input']} C "


def test_ruler_records_prompt_and_metric(tmp_path):
    """RULER-style files carry their own template, answer prefix and max-new-tokens."""
    from eval import ruler

    rec = ruler.generate_sample("niah_single_1", 1200, index=0, unit="chars", seed=1)
    p = build_prompt("niah_single_1_1200", rec)
    assert p.text == ruler.build_prompt(rec) and p.context == rec["context"]
    assert max_new_tokens_for("niah_single_1_1200", rec) == rec["max_new_tokens"]
    task = write_task(tmp_path / "data", "niah_single_1_1200", [rec])
    run_tasks(EchoRunner(), [task], tmp_path / "pred", progress=False)
    (line,) = read_jsonl(tmp_path / "pred" / "niah_single_1_1200.jsonl")
    assert line["metric"] == rec["metric"] and line["answers"] == rec["answers"]
    scores = ruler.score_directory(tmp_path / "pred", write=False)
    assert scores["niah_single_1_1200"]["score"] == 100.0  # the echoed context holds the needle


def test_prediction_file_resumes_and_drops_torn_line(tmp_path):
    path = tmp_path / "d.jsonl"
    pf = PredictionFile(path)
    pf.append({"pred": "x", "_id": "a"})
    with open(path, "a") as f:
        f.write('{"pred": "half')  # a crash mid-write
    again = PredictionFile(path)
    assert "a" in again and len(again.done) == 1
    assert read_jsonl(path) == [{"pred": "x", "_id": "a"}]


def test_run_tasks_writes_official_lines_and_resumes(tmp_path):
    task = write_task(tmp_path / "data")
    runner = EchoRunner()
    out = tmp_path / "pred"
    (res,) = run_tasks(runner, [task.parent], out, progress=False)
    assert (res.predicted, res.skipped) == (2, 0)
    lines = read_jsonl(out / "hotpotqa.jsonl")
    assert [r["_id"] for r in lines] == ["a1", "b2"]
    for rec, s in zip(lines, SAMPLES):
        assert {"pred", "answers", "all_classes", "length", "_id"} <= set(rec)
        assert rec["answers"] == s["answers"] and rec["length"] == s["length"]
        assert rec["pred"] == s["context"]
    assert runner.calls[0][2] == 32  # hotpotqa's official max-new-tokens
    assert json.loads((out / "run_info.json").read_text())["runner"] == "echo"

    # rerun: nothing new; drop one line: only that sample is predicted again
    (res,) = run_tasks(runner, [task], out, progress=False)
    assert (res.predicted, res.skipped) == (0, 2)
    (out / "hotpotqa.jsonl").write_text(json.dumps(lines[0]) + "\n")
    runner.calls.clear()
    (res,) = run_tasks(runner, [task], out, progress=False)
    assert (res.predicted, res.skipped) == (1, 1)
    assert [c[0].context for c in runner.calls] == [SAMPLES[1]["context"]]
    assert len(read_jsonl(out / "hotpotqa.jsonl")) == 2

    class Other(EchoRunner):
        name = "other"

    with pytest.raises(ValueError, match="holds predictions"):
        run_tasks(Other(), [task], out, progress=False)


def test_predictions_score_with_the_official_scorer(tmp_path):
    """Our files are what LongBench's eval.py reads: an oracle scores 100, an echo less."""
    from eval.longbench import score_directory

    class Oracle(EchoRunner):
        name = "oracle"

        def predict(self, prompt, *, dataset, max_new_tokens):
            return next(s["answers"][0] for s in SAMPLES if s["input"] in prompt.after)

    task = write_task(tmp_path / "data")
    e_task = write_task(tmp_path / "data_e", "hotpotqa_e")
    run_tasks(Oracle(), [task], tmp_path / "pred", progress=False)
    assert score_directory(tmp_path / "pred", write=False) == {"hotpotqa": 100.0}
    run_tasks(Oracle(), [e_task], tmp_path / "pred_e", progress=False)  # LongBench-E layout
    assert (tmp_path / "pred_e" / "hotpotqa.jsonl").exists()
    scores = score_directory(tmp_path / "pred_e", longbench_e=True, write=False)
    assert scores["hotpotqa"]["0-4k"] == 100.0
    run_tasks(EchoRunner(), [task], tmp_path / "echo", progress=False)
    assert score_directory(tmp_path / "echo", write=False)["hotpotqa"] < 100.0


def test_samples_without_id_get_stable_ids(tmp_path):
    no_id = [{k: v for k, v in s.items() if k != "_id"} for s in SAMPLES]
    task = write_task(tmp_path / "data", "niah_single_1", no_id)
    run_tasks(EchoRunner(), [task], tmp_path / "pred", progress=False)
    (res,) = run_tasks(EchoRunner(), [task], tmp_path / "pred", progress=False)
    assert res.skipped == 2


# ----------------------------------------------------------------------- text runner


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    from tests.tiny_hf import build_tiny_hf_lm

    return build_tiny_hf_lm(tmp_path_factory.mktemp("tiny_lm"), window=128)


def test_hf_text_runner_end_to_end(tiny_lm, tmp_path):
    from eval.runners.text import HFTextRunner

    task = write_task(tmp_path / "data")
    runner = HFTextRunner(tiny_lm, max_length=48)
    assert runner.name == f"hf:{tiny_lm.name}" and not runner.chat
    (res,) = run_tasks(runner, [task], tmp_path / "pred", progress=False)
    assert res.predicted == 2
    lines = read_jsonl(tmp_path / "pred" / "hotpotqa.jsonl")
    assert all(isinstance(r["pred"], str) for r in lines)
    # greedy: the same prompt gives the same prediction
    p = build_prompt("hotpotqa", SAMPLES[0])
    again = runner.predict(p, dataset="hotpotqa", max_new_tokens=32)
    assert again == lines[0]["pred"]
    # middle truncation keeps both ends of the prompt within the token budget
    text = build_prompt("hotpotqa", SAMPLES[0]).text
    cut = runner.truncate(text, 48)
    assert len(runner.tokenizer(cut).input_ids) <= 48 + 2
    assert cut.startswith("Answer the question") and cut.endswith("Answer:")
    assert runner.truncate("short", 48) == "short"


def test_hf_text_runner_chat_and_samsum_stop(tiny_lm, tmp_path):
    from tests.tiny_hf import build_tiny_hf_lm
    from eval.runners.text import HFTextRunner

    chat_dir = build_tiny_hf_lm(tmp_path / "chat", window=128, chat_template=True)
    runner = HFTextRunner(chat_dir, max_length=64)
    assert runner.chat
    seen = []
    def fake_greedy(ids, n, stops):
        seen.append((runner.tokenizer.decode(ids), stops))
        return "a\nb"

    runner._greedy = fake_greedy
    p = build_prompt("hotpotqa", SAMPLES[0])
    assert runner.predict(p, dataset="hotpotqa", max_new_tokens=4) == "a\nb"
    assert seen[-1][0].endswith("assistant:") and seen[-1][1] == []
    # samsum: raw completion (no chat template) and the answer stops at the first newline
    assert runner.predict(p, dataset="samsum", max_new_tokens=4) == "a"
    assert not seen[-1][0].endswith("assistant:") and seen[-1][1] == ["\n"]


def test_hf_text_runner_loglikelihood(tiny_lm):
    from eval.runners.text import HFTextRunner

    runner = HFTextRunner(tiny_lm)
    lp, greedy = runner.loglikelihood("The sky is", " blue")
    assert lp < 0 and isinstance(greedy, bool)
    # chain rule: log p(a b) = log p(a) + log p(b | a) with the same tokenization
    a, b = runner.loglikelihood("", "The sky"), runner.loglikelihood("The sky", " is blue")
    whole = runner.loglikelihood("", "The sky is blue")
    assert whole[0] == pytest.approx(a[0] + b[0], abs=1e-3)
    assert runner.loglikelihood_rolling("The sky is blue") == pytest.approx(whole[0], abs=1e-3)


# --------------------------------------------------------------- codec reader (fake)


class ByteCodec:
    """A perfect fake transcriber: each token holds `per` raw bytes of its page."""

    name, version, D, per = "bytes", "fake-0", 4, 4
    n = 4
    page_chars = n * per
    render_config = None
    device = torch.device("cpu")
    reads_prompts = False  # the contract's flag (codec.base.Codec): it only transcribes

    def render(self, text: str):
        import numpy as np

        raw = np.zeros(self.page_chars, dtype=np.uint8)
        b = text.encode()[: self.page_chars]
        raw[: len(b)] = list(b)
        return raw

    # the codec contract's paging: fixed blocks of characters, drawn as raw bytes
    def paginate(self, text: str):
        from codec.toy import char_pages

        return char_pages(text, self.page_chars)

    def rasterize(self, page):
        return self.render(page.text)

    def used_tokens(self, page) -> int:
        return min(self.n, max(1, -(-len(page.text) // self.per)))

    def encode(self, pages):
        import numpy as np

        x = torch.as_tensor(np.stack(pages)).float()  # [B, chars]
        return x.view(len(pages), self.n, self.per)

    def decode(self, tokens, max_new_tokens=None):
        return [bytes(int(v) for v in t.flatten() if v > 0).decode() for t in tokens]

    def null_tokens(self, batch):
        return torch.zeros(batch, self.n, self.D)


def test_codec_reader_transcribes_then_answers(tmp_path):
    codec = ByteCodec()
    answerer = EchoRunner()
    runner = CodecReaderRunner(codec, answerer=answerer, page_separator="")
    assert runner.mode == "transcribe" and runner.name == "codec-reader:bytes[transcribe->echo]"
    task = write_task(tmp_path / "data")
    run_tasks(runner, [task], tmp_path / "pred", progress=False)
    lines = read_jsonl(tmp_path / "pred" / "hotpotqa.jsonl")
    # a perfect transcriber hands the answerer the context unchanged
    assert [r["pred"] for r in lines] == [s["context"] for s in SAMPLES]
    assert lines[0]["runner"] == runner.name
    info = json.loads((tmp_path / "pred" / "run_info.json").read_text())
    assert info["mode"] == "transcribe" and "fallback" in info
    assert info["answerer"]["runner"] == "echo"

    # budget in visual tokens: 3 pages of 4 tokens -> keep first and last page only
    short = CodecReaderRunner(
        codec, answerer=EchoRunner(), max_visual_tokens=12, page_separator="|"
    )
    text = "0123456789abcdef" * 4 + "tail"
    pred = short.predict(Prompt("", text, ""), dataset="x", max_new_tokens=4)
    assert pred == "0123456789abcdef|tail"
    with pytest.raises(ValueError, match="answerer"):
        CodecReaderRunner(codec)


def test_codec_reader_direct_mode(tmp_path):
    class ReadingCodec(ByteCodec):
        name = "reader"
        reads_prompts = True

        def read(self, tokens, *, before, after, max_new_tokens):
            return f"{tokens.shape[0]} pages|{after.strip()[-7:]}\nmore"

    runner = CodecReaderRunner(ReadingCodec())
    assert runner.mode == "direct" and runner.name == "codec-reader:reader[direct]"
    p = build_prompt("samsum", {"context": "x" * 40, "input": "Dialogue: hi"})
    assert runner.predict(p, dataset="samsum", max_new_tokens=8) == "3 pages|gue: hi"


# ----------------------------------------------------------------------------- CLI


def cli_app():
    """`vst eval`: the eval sub-app as the front door (jobs/cli.py) mounts it."""
    import jobs.cli  # noqa: F401  (mounts run, lm-eval and efficiency on the eval app)
    from eval.eval_cli import app

    return app


def test_cli_run_hf_and_resume(tiny_lm, tmp_path):
    from typer.testing import CliRunner

    task = write_task(tmp_path / "data")
    args = ["run", str(task.parent), "--out", str(tmp_path / "pred"), "--runner", "hf",
            "--model", str(tiny_lm), "--max-length", "40"]
    res = CliRunner().invoke(cli_app(), args)
    assert res.exit_code == 0, res.output
    assert "hotpotqa: 2 predicted" in res.output
    res = CliRunner().invoke(cli_app(), args)
    assert "0 predicted, 2 already done" in res.output
    assert len(read_jsonl(tmp_path / "pred" / "hotpotqa.jsonl")) == 2


def test_cli_codec_runner_needs_answerer_for_transcribing_codec(tmp_path):
    from typer.testing import CliRunner

    task = write_task(tmp_path / "data")
    args = ["run", str(task), "--out", str(tmp_path / "p"), "--runner", "codec", "--codec", "toy"]
    res = CliRunner().invoke(cli_app(), args)
    assert res.exit_code != 0 and "answerer" in str(res.exception)


# ------------------------------------------------------- DeepSeek-OCR-2 direct reader


@pytest.fixture(scope="module")
def tiny_ds(tmp_path_factory):
    from codec import load_codec
    from tests.tiny_deepseek import save_tiny_checkpoint

    path = save_tiny_checkpoint(tmp_path_factory.mktemp("ds"))
    return load_codec("deepseek-ocr2", path=str(path))


def test_deepseek_direct_reader_matches_backend(tiny_ds, tmp_path):
    """With the OCR prompt around one page, the codec's read/read_nll are exactly its
    decode/NLL."""
    runner = CodecReaderRunner(tiny_ds)
    assert runner.mode == "direct" and runner.name == "codec-reader:deepseek-ocr2[direct]"
    assert runner.max_visual_tokens == tiny_ds.max_positions - 1024
    ctx = runner.encode("The magic number is 42.")
    ocr = tiny_ds.read(ctx.tokens, before="", after=tiny_ds.prompt_suffix, max_new_tokens=6)
    assert ocr == tiny_ds.decode(ctx.tokens, max_new_tokens=6)[0]
    text = "The magic number"
    want = float(tiny_ds.text_nll(ctx.tokens, [text]).nll[0])
    assert tiny_ds.read_nll(ctx.tokens, tiny_ds.prompt_suffix, text) == pytest.approx(want, rel=1e-4)
    # end to end on a task file
    task = write_task(tmp_path / "data")
    (res,) = run_tasks(runner, [task], tmp_path / "pred", progress=False, limit=1)
    (line,) = read_jsonl(tmp_path / "pred" / "hotpotqa.jsonl")
    assert res.predicted == 1 and isinstance(line["pred"], str)


def test_codec_reader_mini_transcribe_then_hf_answerer(tiny_lm, tmp_path):
    """The honest fallback for the mini codec, with the real renderer and a real text model."""
    from codec import load_codec
    from eval.runners.text import HFTextRunner

    codec = load_codec("mini", random_init=True)
    answerer = HFTextRunner(tiny_lm, max_length=48)
    runner = CodecReaderRunner(codec, answerer=answerer, max_visual_tokens=2 * codec.n)
    assert runner.name == f"codec-reader:mini[transcribe->hf:{tiny_lm.name}]"
    long = [{**SAMPLES[0], "context": SAMPLES[0]["context"] * 20}]
    assert len(runner.encoder.pages(long[0]["context"])) > 2  # so the middle cut is exercised
    task = write_task(tmp_path / "data", samples=long)
    (res,) = run_tasks(runner, [task], tmp_path / "pred", progress=False)
    (line,) = read_jsonl(tmp_path / "pred" / "hotpotqa.jsonl")
    assert res.predicted == 1 and isinstance(line["pred"], str) and line["runner"] == runner.name
    assert runner.encode(long[0]["context"]).positions == 2 * codec.n
