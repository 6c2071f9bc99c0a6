"""Instruction tuning: readers, the generated set, the loss mask, a tiny SFT run, the stop
head, and `vst chat` end to end (toy codec, debug flavour)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from codec import load_codec
from data.corpus import Document, SkipLog
from data.corpus.instruct_gen import generate, generate_split, mix_by_answer_tokens
from data.corpus.instructions import Instruction, read_instructions, write_instructions
from vst.chat import ChatSession, NotSFTModel, load_chat_model
from vst.checkpoint import latest_checkpoint
from vst.config import flavour
from vst.model import VST
from vst.sft import sft, sft_losses
from vst.sft_config import SFTConfig
from vst.sft_data import N_SPECIALS, collate_sft, encode_sample
from vst.train import TrainConfig, train


def reasons(skips: SkipLog) -> list[str]:
    return [s.reason for s in skips]


# -- readers ----------------------------------------------------------------------------


def test_alpaca_json_and_jsonl_with_bad_records(tmp_path):
    recs = [{"instruction": "Add.", "input": "2 and 2", "output": "4"},
            {"instruction": "Greet.", "output": "Hello"},  # no input: empty context
            {"instruction": "Nothing.", "input": "", "output": "  "},  # empty response
            {"input": "x", "output": "y"},  # no instruction
            {"instruction": "Long.", "input": "z" * 50, "output": "ok"}]  # oversized context
    (tmp_path / "a.json").write_text(json.dumps(recs))
    skips = SkipLog()
    got = list(read_instructions(tmp_path / "a.json", skips=skips, max_context_chars=40))
    assert [(s.instruction, s.context, s.response) for s in got] == \
        [("Add.", "2 and 2", "4"), ("Greet.", "", "Hello")]
    assert len(skips) == 3
    r = reasons(skips)
    assert "empty response" in r and any("instruction" in x for x in r) and \
        any("max_context_chars" in x for x in r)
    # the same as JSONL, plus a line of invalid UTF-8 and one of broken JSON
    lines = [json.dumps(x).encode() for x in recs[:2]] + [b'{"instruction": "\xff\xfe"}', b"{oops"]
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(lines))
    skips = SkipLog()
    got = list(read_instructions(tmp_path / "a.jsonl", fmt="alpaca", skips=skips))
    assert len(got) == 2
    assert sorted(x.split(":")[0] for x in reasons(skips)) == ["invalid JSON", "invalid UTF-8"]


def test_sharegpt_one_sample_per_assistant_turn(tmp_path):
    recs = [{"id": "c1", "conversations": [
        {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"},
        {"from": "human", "value": "Name a colour."}, {"from": "gpt", "value": "Blue."}]},
        {"id": "c2", "conversations": [{"from": "gpt", "value": "orphan"}]},
        {"id": "c3", "conversations": []},
        {"id": "c4", "conversations": [{"from": "human", "value": "Q"},
                                       {"from": "gpt", "value": ""}]}]
    (tmp_path / "s.jsonl").write_text("\n".join(json.dumps(r) for r in recs))
    skips = SkipLog()
    got = list(read_instructions(tmp_path / "s.jsonl", skips=skips))
    assert [(s.instruction, s.response) for s in got] == \
        [("Hi", "Hello!"), ("Name a colour.", "Blue.")]
    assert got[0].context == "" and got[1].context == "User: Hi\nAssistant: Hello!"
    r = reasons(skips)
    assert len(r) == 3 and "empty response" in r and "missing or empty conversations" in r
    assert any("without a user turn" in x for x in r)


def test_plain_jsonl_roundtrip_and_missing_fields(tmp_path):
    samples = [Instruction("a", "Q?", "ctx", "A", "kv"), Instruction("b", "Q2?", "", "B")]
    path = write_instructions(samples, tmp_path / "p.jsonl")
    with path.open("a") as f:
        f.write(json.dumps({"instruction": "no response"}) + "\n")
    skips = SkipLog()
    assert list(read_instructions(path, skips=skips)) == samples
    assert len(skips) == 1 and "response" in reasons(skips)[0]


# -- the generated set ------------------------------------------------------------------

SENT = "The {w} module handles {w} records carefully. "


def docs(k: int = 12, chars: int = 3000) -> list[Document]:
    out = []
    for i in range(k):
        words = [f"word{i}x{j}" for j in range(200)]
        text = "".join(SENT.format(w=w) + ("\n" if j % 3 == 0 else "") for j, w in enumerate(words))
        out.append(Document(f"doc{i}", text[:chars]))
    return out


def test_generator_is_seeded_and_answers_are_in_context():
    a = generate(docs(), context_chars=(1000, 2000), seed=3)
    b = generate(docs(), context_chars=(1000, 2000), seed=3)
    c = generate(docs(), context_chars=(1000, 2000), seed=4)
    assert a == b and a != c
    assert {s.family for s in a} == {"kv", "next_sentence", "section"}
    for s in a:
        assert s.response and s.response in s.context, s.id


def test_split_has_disjoint_documents_and_a_heldout_family():
    split = generate_split(docs(20), context_chars=(1000,), heldout_fraction=0.3, seed=0,
                           heldout_families=("section",))
    train_docs = {s.meta["doc"] for s in split.train}
    held_docs = {s.meta["doc"] for s in split.heldout}
    assert train_docs and held_docs and not train_docs & held_docs
    assert "section" not in {s.family for s in split.train}
    assert "section" in {s.family for s in split.heldout}


def test_mixing_counts_answer_tokens_not_rows():
    long = [Instruction(f"l{i}", "q", "", "x" * 100, "long") for i in range(10)]
    short = [Instruction(f"s{i}", "q", "", "y", "short") for i in range(10)]
    mix = mix_by_answer_tokens({"long": long, "short": short}, {"long": 1, "short": 1}, 400)
    by = {f: sum(len(s.response) for s in mix if s.family == f) for f in ("long", "short")}
    assert by["long"] == 200 and by["short"] == 200  # equal answer tokens ...
    assert sum(s.family == "short" for s in mix) == 100 * sum(s.family == "long" for s in mix)


# -- model, loss, training --------------------------------------------------------------


@pytest.fixture(scope="module")
def toy():
    return load_codec("toy")


def toy_samples(n: int = 8) -> list[Instruction]:
    """Short answers (one toy page of 32 characters) and long ones (two pages), told apart
    by the instruction, so the stop head has something to learn."""
    out = []
    for i in range(n):
        v = f"{1000 + 37 * i}"
        kind = "short" if i % 2 == 0 else "long"
        resp = f"answer {v} ok" if kind == "short" else f"answer {v} ok and {v} again, {v} again"
        out.append(Instruction(f"t{i}", f"{kind} k{i}?", f"noise line {i}\nk{i}: {v}\nmore",
                               resp, "kv"))
    return out


def test_loss_falls_on_response_positions_only(toy):
    torch.manual_seed(0)
    model = VST(flavour("debug", D=toy.D, grid=toy.grid, specials=N_SPECIALS))
    enc = [encode_sample(toy, s) for s in toy_samples(2)]
    batch = collate_sft(enc, toy.grid, toy.D)
    cfg = SFTConfig(dec=1.0)
    assert batch.resp.any() and (~batch.resp & batch.valid).any()
    loss, _ = sft_losses(model, batch, cfg, toy)
    # perturbing the targets of instruction/context positions leaves the loss unchanged
    other = batch.valid & ~batch.resp
    pert = collate_sft(enc, toy.grid, toy.D)
    pert.targets[other] += torch.randn_like(pert.targets[other]) * 5
    assert torch.allclose(sft_losses(model, pert, cfg, toy)[0], loss)
    # ... and the gradient w.r.t. every non-response prediction is zero (stop head aside)
    h = {}

    def keep(module, inputs, out):  # the head's prediction, kept with its gradient
        out.retain_grad()
        h["x"] = out

    model.head.register_forward_hook(keep)
    loss, _ = sft_losses(model, batch, SFTConfig(dec=1.0, stop=0.0), toy)
    loss.backward()
    g = h["x"].grad.norm(dim=-1)
    assert (g[~batch.resp] == 0).all() and (g[batch.resp] > 0).any()
    # the stop BCE is trained only where the input is S_resp or a response vector
    # the stop head is trained on response targets; label 1 on each answer's last page
    assert torch.equal(batch.stop_mask, batch.resp)
    assert not batch.stop_label[~batch.resp].any()
    n = toy.n
    for b, pages in enumerate(batch.resp_pages):
        *early, (t_last, _) = pages
        assert batch.stop_label[b, t_last : t_last + n].all()
        assert all(not batch.stop_label[b, t0 : t0 + n].any() for t0, _ in early)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("base")
    train(TrainConfig(out=str(out), flavour="debug", data="synthetic", steps=3, batch_size=2,
                      synthetic_docs=8, eval_every=0, eval_batches=1, save_every=0,
                      tensorboard=False, progress=False, warmup=1))
    return out


@pytest.fixture(scope="module")
def sft_run(base_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    data = write_instructions(toy_samples(8), root / "train.jsonl")
    val = write_instructions(toy_samples(8)[:4], root / "val.jsonl")
    cfg = SFTConfig(base=str(base_run), data=str(data), val_data=str(val), out=str(root / "run"),
                    steps=40, batch_size=4, lr=3e-3, warmup=2, log_every=100, save_every=0)
    return cfg, sft(cfg)


def test_tiny_sft_lowers_the_response_loss(sft_run):
    cfg, result = sft_run
    hist = result["history"]
    first = sum(h["mse"] + h["cos"] + h["dec"] for h in hist[:4]) / 4
    last = sum(h["mse"] + h["cos"] + h["dec"] for h in hist[-4:]) / 4
    assert last < 0.8 * first, (first, last)
    assert hist[-1]["stop"] < hist[0]["stop"]
    assert Path(result["checkpoint"], "model.safetensors").exists()


def test_sft_resume_continues_from_its_checkpoint(base_run, tmp_path):
    data = write_instructions(toy_samples(4), tmp_path / "d.jsonl")
    kw = dict(base=str(base_run), data=str(data), val_data=str(data), out=str(tmp_path / "r"),
              steps=4, batch_size=2, log_every=100, save_every=2, dec=0.0)
    sft(SFTConfig(**kw, halt_at=2))
    # the rest through the command line: `vst sft ... --resume`
    from jobs.cli import app

    args = ["sft", "--resume"] + [a for k, v in kw.items()
                                  for a in (f"--{k.replace('_', '-')}", str(v))]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    done = json.loads((tmp_path / "r" / "result.json").read_text())
    assert done["steps"] == 4 and "checkpoint: " in res.output
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(x)["step"] for x in lines if json.loads(x)["split"] == "train"]
    assert steps == [1, 3]  # logged: step 1 of the first run, the resumed run's first step 3


def test_stop_signal_ends_generation(sft_run, toy):
    cfg, result = sft_run
    model, codec, _ = load_chat_model(result["checkpoint"])
    # the stop head's bias forced high: generation ends after the first page
    with torch.no_grad():
        model.stop.bias.fill_(30.0)
    a = ChatSession(model, codec, max_pages=5).ask("long k1?", "k1: 1037")
    assert a.stopped and len(a.pages) == 1
    with torch.no_grad():
        model.stop.bias.fill_(-30.0)
    a = ChatSession(model, codec, max_pages=3).ask("value of k1?", "k1: 1037")
    assert not a.stopped and len(a.pages) == 3
    # the tuned stop head alone: a short answer ends after one page, a long one does not
    model, codec, _ = load_chat_model(result["checkpoint"])
    short = ChatSession(model, codec, max_pages=4).ask("short k2?", "noise line 2\nk2: 1074\nmore")
    assert short.stopped and len(short.pages) == 1
    long = ChatSession(model, codec, max_pages=4).ask("long k3?", "noise line 3\nk3: 1111\nmore")
    assert len(long.pages) > 1


def test_multi_turn_keeps_earlier_turns(sft_run):
    _, result = sft_run
    model, codec, _ = load_chat_model(result["checkpoint"])
    s = ChatSession(model, codec, max_pages=2)
    a1 = s.ask("value of k1?", "k1: 1037")
    a2 = s.ask("and again?")
    assert a2.positions > a1.positions and a2.text_tokens > a1.text_tokens


def test_vst_chat_one_shot_cli(sft_run, base_run):
    from jobs.cli import app

    _, result = sft_run
    runner = CliRunner()
    res = runner.invoke(app, ["chat", str(Path(result["checkpoint"]).parent),
                              "--prompt", "value of k2?", "--max-pages", "2"])
    assert res.exit_code == 0, res.output
    assert "visual positions vs" in res.output and "cl100k tokens" in res.output
    run_dir = str(Path(result["checkpoint"]).parent)
    res = runner.invoke(app, ["chat", run_dir], input="value of k3?\n")
    assert res.exit_code == 0 and "visual positions vs" in res.output
    # interactive: one turn a line, earlier turns kept (positions grow), an empty line ends
    res = runner.invoke(app, ["chat", str(Path(result["checkpoint"]).parent), "--interactive",
                              "--max-pages", "1"], input="short k1?\nshort k2?\n\n")
    assert res.exit_code == 0, res.output
    used = [int(x) for x in re.findall(r"\[(\d+) visual positions", res.output)]
    assert len(used) == 2 and used[1] > used[0]
    # a base (not SFT) checkpoint and a mismatched codec are refused with a clear message
    res = runner.invoke(app, ["chat", str(base_run), "--prompt", "hi"])
    assert res.exit_code == 2 and res.stderr.startswith("error: ")
    assert "not an instruction-tuned VST" in res.stderr and "Traceback" not in res.output
    res = runner.invoke(app, ["chat", str(Path(result["checkpoint"]).parent), "--prompt", "hi",
                              "--codec", "toy", "--codec-mode", "toy"])
    assert res.exit_code == 0
    with pytest.raises(NotSFTModel):
        load_chat_model(base_run)


def test_codec_mismatch_is_refused(sft_run, monkeypatch):
    from vst.chat import CodecMismatch
    import vst.sft as sft_mod

    _, result = sft_run
    real = sft_mod.codec_record
    monkeypatch.setattr(sft_mod, "codec_record", lambda c: {**real(c), "version": "other"})
    with pytest.raises(CodecMismatch, match="version"):
        load_chat_model(result["checkpoint"])


def test_demo_chat_stage_shows_transcripts_and_scores(base_run, tmp_path, toy):
    from jobs.demo import DemoSettings, DemoState, stage_chat

    s = DemoSettings(out=tmp_path, sft_steps=2, chat_samples=3, chat_chars=1000)
    state = DemoState(s, docs=docs(8), vst_checkpoint=base_run, _codec=toy)
    sec = stage_chat(s, state)
    assert sec.metrics["sft_steps"] == 2 and sec.metrics["chat_n"] == 3
    assert 0 <= sec.metrics["chat_exact_match"] <= 1 and "mean_positions" in sec.metrics
    assert sec.html.count("<img") == 3 and "held-out family" in sec.html
    assert (tmp_path / "chat" / "question-0.png").exists()


def test_energy_head_sft_loss_and_sampled_chat(toy):
    torch.manual_seed(0)
    model = VST(flavour("debug", D=toy.D, grid=toy.grid, specials=N_SPECIALS, head="energy",
                        energy_samples=2))
    batch = collate_sft([encode_sample(toy, s) for s in toy_samples(2)], toy.grid, toy.D)
    loss, terms = sft_losses(model, batch, SFTConfig(dec=1.0), toy)
    loss.backward()
    assert torch.isfinite(loss) and "energy" in terms
    a = [ChatSession(model.eval(), toy, max_pages=1, seed=k).ask("short k0?", "k0: 1000").text
         for k in (0, 0, 1)]
    assert a[0] == a[1]  # the seed fixes the sample


def test_text_baseline_sft_lowers_its_response_loss():
    from vst.data import byte_tokenizer
    from vst.sft_text import text_answer, text_batch, text_response_loss, text_sft

    torch.manual_seed(0)
    model = VST(flavour("debug", modality="text", rope="1d", vocab_size=256, max_seq_len=128))
    samples = toy_samples(4)
    batch = text_batch(byte_tokenizer, samples, 128)
    # the loss mask covers the response bytes (and its closing newline) only
    assert int(batch[3].sum()) == sum(len(s.response) + 1 for s in samples)
    before = text_response_loss(model, *batch).detach().item()
    text_sft(model, "bytes", samples, seconds=60, steps=30, lr=3e-3)
    assert text_response_loss(model, *batch).detach().item() < 0.5 * before
    assert isinstance(text_answer(model, "bytes", "short k0?", "k0: 1000", context_tokens=4), str)


def test_samples_go_through_the_store_as_segment_documents(tmp_path, toy):
    """SAMPLE#instruction / #context / #response store documents read back as the sample."""
    from data.store import Store, StoreMeta, StoreWriter, consolidate
    from vst.sft_data import encoded_from_store, segment_documents

    samples = toy_samples(3) + [Instruction("noctx", "short k9?", "", "answer 9 ok", "kv")]
    meta = StoreMeta(D=toy.D, n=toy.n, grid=toy.grid, codec_name="toy", codec_mode="toy",
                     codec_version=toy.version, render_config={}, render_config_id="toy",
                     dtype="float16", layout="zarr")
    with StoreWriter(tmp_path, 0, meta) as writer:
        for doc in segment_documents(samples):
            pages = toy.paginate(doc.text)
            tokens = toy.encode([toy.rasterize(p) for p in pages])
            writer.add_document(doc.id, [(p.start, p.end, p.text) for p in pages],
                                [t.numpy() for t in tokens])
    consolidate(tmp_path)
    store = Store(tmp_path)
    for s in samples:
        got, want = encoded_from_store(store, s), encode_sample(toy, s)
        assert got.texts == want.texts
        for seg in want.tokens:
            assert got.tokens[seg].shape == want.tokens[seg].shape
            torch.testing.assert_close(got.tokens[seg], want.tokens[seg], atol=0.05, rtol=0.01)


def test_ruler_tasks_as_instruction_samples():
    from eval.ruler_instructions import ruler_instructions

    hay = [" ".join(SENT.format(w=f"w{j}") for j in range(300))]
    a = ruler_instructions(["niah_single_1", "vt"], [1500], 2, seed=1, haystack=hay)
    assert a == ruler_instructions(["niah_single_1", "vt"], [1500], 2, seed=1, haystack=hay)
    assert {s.family for s in a} == {"ruler:niah_single_1", "ruler:vt"} and len(a) == 4
    for s in a:
        assert s.response and all(str(x) in s.context for x in s.meta["answers"])


def test_lora_sft_trains_adapters_only_and_reloads(base_run, tmp_path):
    """--lora-rank: peft adapters on the trunk; the base weights stay the base run's, the
    response loss falls, and the checkpoint reloads with its adapters (it describes itself)."""
    from safetensors.torch import load_file

    from vst.generate import load_model

    data = write_instructions(toy_samples(8), tmp_path / "d.jsonl")
    cfg = SFTConfig(base=str(base_run), data=str(data), val_data=str(data),
                    out=str(tmp_path / "lora"), steps=30, batch_size=4, lr=1e-2, warmup=2,
                    log_every=100, save_every=0, lora_rank=4)
    result = sft(cfg)
    hist = result["history"]
    first = sum(h["mse"] + h["cos"] + h["dec"] for h in hist[:4]) / 4
    last = sum(h["mse"] + h["cos"] + h["dec"] for h in hist[-4:]) / 4
    assert last < 0.9 * first, (first, last)
    base = load_file(str(latest_checkpoint(base_run) / "model.safetensors"))
    tuned = load_file(str(Path(result["checkpoint"]) / "model.safetensors"))
    lora_keys = [k for k in tuned if "lora_" in k]
    assert lora_keys, "no adapter weights saved"
    q = next(k for k in base if k.endswith(".q.weight"))
    frozen = q.replace(".q.weight", ".q.base_layer.weight")
    assert torch.equal(tuned[frozen], base[q])  # a base weight, untouched
    model, state = load_model(result["checkpoint"])
    assert state["lora"]["rank"] == 4
    assert any("lora_A" in n for n, _ in model.named_parameters())


def test_two_process_sft_matches_single_process(base_run, tmp_path):
    """torchrun with 2 ranks: each takes half of every batch and the gradients are averaged,
    so the losses and the weights follow the single-process run's. (Samples of one shape:
    ranks average their own means, as torch's DDP does, which equals the batch mean when
    every sample has as many response positions.)"""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    root = Path(__file__).resolve().parents[1]
    same_shape = [s for s in toy_samples(16) if s.instruction.startswith("short")]
    data = write_instructions(same_shape, tmp_path / "d.jsonl")
    kw = dict(base=str(base_run), data=str(data), val_data=str(data), steps=4, batch_size=4,
              lr=3e-3, warmup=1, log_every=1, save_every=0, dec=0.0, eval_samples=1)
    single = sft(SFTConfig(**kw, out=str(tmp_path / "single")))
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    if "GLOO_SOCKET_IFNAME" not in env and Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"  # gloo on loopback in sandboxes without DNS
    args = [a for k, v in kw.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "jobs.cli", "sft", *args, "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logged = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in logged if r["split"] == "train"]
    assert losses == pytest.approx([h["loss"] for h in single["history"]], rel=1e-4, abs=1e-6)
    a = load_file(str(Path(single["checkpoint"]) / "model.safetensors"))
    b = load_file(str(tmp_path / "ddp" / "step-0000004" / "model.safetensors"))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4), k


@pytest.mark.slow
def test_sft_samples_convert_through_the_ray_job(tmp_path):
    """An SFT set converts like any corpus: its segment documents through `vst convert`
    (a local Ray), read back from the store as the samples encoded in memory."""
    import os

    import zstandard

    from data.store import Store
    from jobs.convert.driver import run_conversion
    from vst.sft_data import encoded_from_store, segment_documents

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    samples = toy_samples(4)
    corpus = tmp_path / "sft.jsonl.zst"
    lines = "".join(json.dumps({"text": d.text, "meta": {"id": d.id, **d.meta}}) + "\n"
                    for d in segment_documents(samples))
    corpus.write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))
    summary = run_conversion(corpus, tmp_path / "store", codec="mini:tiny", num_parts=2,
                             num_actors=1, num_cpus=2, layout="npy", id_field="id")
    assert summary["docs"] == 3 * len(samples) and summary["skips"] == 0
    store = Store(tmp_path / "store")
    codec = load_codec("mini:tiny")
    for s in samples:
        got, want = encoded_from_store(store, s), encode_sample(codec, s)
        assert got.texts == want.texts
        for seg in want.tokens:
            torch.testing.assert_close(got.tokens[seg], want.tokens[seg], atol=0.05, rtol=0.01)
