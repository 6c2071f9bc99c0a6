"""The project's own models as runners: the text baseline checkpoint and the VST end to end."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch

from eval.runners.common import Prompt, build_prompt, run_tasks
from tests.test_runners import SAMPLES, ByteCodec, read_jsonl, write_task




def save_ckpt(tmp_path, model, **train):
    from vst.checkpoint import save_checkpoint
    from vst.train import TrainConfig

    cfg = asdict(TrainConfig(**train))
    state = {"model_config": model.cfg.to_dict(), "train_config": cfg}
    return save_checkpoint(tmp_path, 1, model, None, state)


def text_model(max_seq_len=64):
    from vst.config import flavour
    from vst.model import VST

    torch.manual_seed(0)
    cfg = flavour("debug", modality="text", vocab_size=256, rope="1d", max_seq_len=max_seq_len)
    return VST(cfg)


# ------------------------------------------------------------- text-token baseline


def test_vst_text_runner_from_checkpoint(tmp_path):
    from eval.runners.text import VSTTextRunner

    ckpt = save_ckpt(tmp_path / "ckpt", text_model(), modality="text", tokenizer="bytes")
    runner = VSTTextRunner(tmp_path / "ckpt")  # a run directory: newest step
    assert runner.tokenizer_name == "bytes" and runner.name.startswith("vst-text:")
    task = write_task(tmp_path / "data")
    (res,) = run_tasks(runner, [task], tmp_path / "pred", progress=False)
    lines = read_jsonl(tmp_path / "pred" / "hotpotqa.jsonl")
    assert res.predicted == 2 and all(isinstance(r["pred"], str) for r in lines)
    # greedy with the KV cache == greedy by full forwards
    ids = list(b"The sky is")
    fast = runner._greedy(ids, 5, ())
    slow = list(ids)
    for _ in range(5):
        inp = torch.tensor([[0] + slow])
        bos = torch.zeros_like(inp, dtype=torch.bool)
        bos[0, 0] = True
        h = runner.model(inp, bos, torch.arange(inp.size(1))[None])
        slow.append(int(runner.model.lm_head(h[0, -1]).argmax()))
    assert fast == bytes(slow[len(ids):]).decode("utf-8", "replace")
    assert ckpt.name.startswith("step-")


def test_vst_text_runner_likelihoods(tmp_path):
    from eval.runners.text import VSTTextRunner

    runner = VSTTextRunner(model=text_model(max_seq_len=16), tokenizer="bytes")
    a = runner.loglikelihood("", "abc")[0]
    b = runner.loglikelihood("abc", "de")[0]
    assert runner.loglikelihood("", "abcde")[0] == pytest.approx(a + b, abs=1e-4)
    assert runner.loglikelihood_rolling("abcde") == pytest.approx(a + b, abs=1e-4)
    long = "x" * 40  # longer than the window: scored in chunks, still finite
    assert runner.loglikelihood_rolling(long) < 0
    with pytest.raises(ValueError, match="vector VST"):
        VSTTextRunner(model=vector_model(ByteCodec()))


# ----------------------------------------------------------------- VST end to end


def vector_model(codec, max_seq_len=128):
    from vst.config import flavour
    from vst.model import VST

    torch.manual_seed(0)
    grid = getattr(codec, "grid", None) or (2, codec.n // 2)
    return VST(flavour("debug", D=codec.D, grid=tuple(grid), max_seq_len=max_seq_len))


def test_vst_runner_feeds_prompt_and_reads_only_generated_slots(monkeypatch):
    """A perfect byte codec + a scripted VST: the answer is exactly what the VST wrote."""
    from eval.runners import vst_runner

    codec = ByteCodec()  # 16 chars a page, 4 tokens of 4 chars
    runner = vst_runner.VSTRunner(model=vector_model(codec), codec=codec)
    text = "0123456789abcdef" + "ghij"  # one full page + one token's worth on page 2
    seen = {}

    def scripted(model, prompt, n_new, **kw):
        seen["prompt"], seen["n_new"] = prompt.clone(), n_new
        answer = codec.encode([codec.render(" 42!" + "\0" * 12)])[0]  # page-shaped tokens
        return torch.cat([answer, answer])[:n_new]

    import vst.generate

    monkeypatch.setattr(vst.generate, "continue_tokens", scripted)
    out = runner.continue_prompt(text, answer_chars=8)
    # the prompt is page 1 (4 tokens) + the one used slot of page 2
    want = codec.encode([codec.render("0123456789abcdef"), codec.render("ghij")]).reshape(-1, 4)[:5]
    assert torch.equal(seen["prompt"], want)
    assert seen["n_new"] == 3  # to the end of page 2
    # page 2 is decoded with the prompt's slot blanked: only the VST's tokens are read
    assert len(out) == 1 and out[0].strip() == "42!"
    # max-new-tokens 2 ~ 8 chars ~ 2 tokens here: the rest of page 2 suffices
    assert runner.predict(Prompt("", text, ""), dataset="x", max_new_tokens=2) == "42!"
    # long answers ask for whole extra pages (bounded by max_new_pages)
    runner.continue_prompt(text, answer_chars=40)
    assert seen["n_new"] == 3 + 2 * 4


def test_vst_runner_end_to_end_from_checkpoint(tmp_path):
    """Random tiny VST + the VST's toy codec, loaded as `vst eval run --runner vst` would."""
    from eval.runners.vst_runner import VSTRunner
    from codec.toy import ToyCodec

    codec = ToyCodec()
    save_ckpt(tmp_path / "ckpt", vector_model(codec, max_seq_len=96), codec="toy")
    runner = VSTRunner(tmp_path / "ckpt")  # codec rebuilt from the checkpoint's train config
    assert runner.codec.name == "toy" and runner.budget(0) == 95
    short = [{**s, "max_new_tokens": 4} for s in SAMPLES]  # keeps the toy decoder's work small
    task = write_task(tmp_path / "data", samples=short)
    (res,) = run_tasks(runner, [task], tmp_path / "pred", progress=False)
    lines = read_jsonl(tmp_path / "pred" / "hotpotqa.jsonl")
    assert res.predicted == 2 and [r["_id"] for r in lines] == ["a1", "b2"]
    assert all(isinstance(r["pred"], str) and len(r["pred"]) <= 4 * 4 for r in lines)
    info = json.loads((tmp_path / "pred" / "run_info.json").read_text())
    assert info["kind"] == "vst" and info["codec"] == "toy"
    # deterministic (regression head): a rerun of one sample gives the same answer
    p = build_prompt("hotpotqa", SAMPLES[0])
    assert runner.predict(p, dataset="hotpotqa", max_new_tokens=4) == lines[0]["pred"]
    lp, greedy = runner.loglikelihood("the page token model", " reads")
    assert lp < 0 and greedy is False
    with pytest.raises(ValueError, match="tokens of width"):
        VSTRunner(model=vector_model(ByteCodec()), codec=codec)


def test_vst_runner_with_mini_codec_layout():
    """With the real renderer, the answer starts after the prompt's last line."""
    from codec import load_codec
    from eval.runners.vst_runner import VSTRunner

    codec = load_codec("mini", random_init=True)
    runner = VSTRunner(model=vector_model(codec, max_seq_len=256), codec=codec)
    pages = runner.encoder.pages("one line\nsecond line\nthird")
    assert len(pages) == 1 and runner.used_tokens(pages[0]) == 3 * codec.grid[1]
    out = runner.predict(Prompt("Q: ", "one line", "\nA:"), dataset="x", max_new_tokens=4)
    assert isinstance(out, str) and len(out) <= 16
