"""The pointer (copy) head: matches only earlier inputs, reduces to the plain heads when its
gate is shut, copies exactly when open, and lets a VST answer a needle task end to end."""

import json

import pytest
import torch

from vst.pointer import (PointerHead, PointerMemory, text_pointer_nll,
                         vector_pointer_terms)


def _head(d=16, dim=8, gate=0.0, seed=0):
    torch.manual_seed(seed)
    head = PointerHead(d, dim)
    torch.nn.init.zeros_(head.gate.weight)
    torch.nn.init.constant_(head.gate.bias, gate)
    return head


def test_vector_pointer_matches_only_earlier_real_inputs():
    torch.manual_seed(0)
    T, D = 6, 8
    inputs = torch.randn(1, T, D)
    targets = torch.randn(1, T, D)
    targets[0, 3] = inputs[0, 1]  # earlier input: a match
    targets[0, 2] = inputs[0, 5]  # later input: not visible from position 2
    targets[0, 4] = inputs[0, 0]  # input 0 is a special (not ok): no match
    ok = torch.ones(1, T, dtype=torch.bool)
    ok[0, 0] = False
    scored = torch.ones(1, T, dtype=torch.bool)
    out = vector_pointer_terms(_head(), torch.randn(1, T, 16), inputs, targets, ok, scored)
    assert out["ptr_share"].item() == pytest.approx(1 / T)
    assert out["ptr_acc_unique"].item() in (0.0, 1.0)  # one unique-copy target
    assert torch.isfinite(out["ptr"]) and out["ptr"] > 0


def test_text_pointer_reduces_to_cross_entropy_when_gate_is_shut():
    torch.manual_seed(1)
    B, T, d, V = 2, 7, 16, 11
    h = torch.randn(B, T, d)
    lm = torch.nn.Linear(d, V, bias=False)
    inputs = torch.randint(0, V, (B, T))
    targets = torch.randint(0, V, (B, T))
    scored = torch.zeros(B, T, dtype=torch.bool)
    scored[:, 3:] = True
    nll = text_pointer_nll(_head(gate=-40.0), h, lm, inputs, targets,
                           torch.ones(B, T, dtype=torch.bool), scored)
    ce = torch.nn.functional.cross_entropy(lm(h[scored]), targets[scored], reduction="none")
    assert torch.allclose(nll, ce, atol=1e-4)


def test_text_pointer_copy_mass_is_the_share_of_matching_earlier_inputs():
    B, T, d, V = 1, 5, 16, 7
    head = _head(gate=40.0)
    torch.nn.init.zeros_(head.q.weight)  # uniform attention over the allowed inputs
    inputs = torch.tensor([[3, 4, 3, 5, 3]])
    targets = torch.tensor([[0, 0, 0, 0, 3]])
    scored = torch.zeros(B, T, dtype=torch.bool)
    scored[0, 4] = True
    nll = text_pointer_nll(head, torch.randn(B, T, d), torch.nn.Linear(d, V), inputs, targets,
                           torch.ones(B, T, dtype=torch.bool), scored)
    assert torch.exp(-nll).item() == pytest.approx(3 / 5, rel=1e-3)  # inputs 0, 2, 4 are 3


def test_memory_copies_a_stored_vector_exactly_or_keeps_the_generated_one():
    values = torch.randn(4, 8)
    for gate, expect_copy in ((40.0, True), (-40.0, False)):
        mem = PointerMemory(_head(gate=gate))
        mem.extend(torch.randn(4, 16), values, torch.tensor([True, True, False, True]))
        generated = torch.randn(8)
        got = mem.next_vector(torch.randn(16), generated)
        if expect_copy:
            assert any(torch.equal(got, v) for i, v in enumerate(values) if i != 2)
        else:
            assert torch.equal(got, generated)


def test_memory_next_id_mixes_pointer_and_lm():
    head = _head(gate=40.0)
    torch.nn.init.zeros_(head.q.weight)
    mem = PointerMemory(head)
    mem.extend(torch.randn(3, 16), torch.tensor([5, 5, 2]), torch.ones(3, dtype=torch.bool))
    lm_logits = torch.zeros(9)
    lm_logits[7] = 50.0  # the LM alone says 7; the open gate copies the commonest input
    assert mem.next_id(torch.randn(16), lm_logits) == 5


def test_a_pointer_vst_learns_a_needle_task_and_answers_end_to_end(tmp_path):
    """A fresh VST with a pointer head, tuned for a FLOPs budget on single-needle samples,
    reads a held-out needle back through the codec (the copy is exact)."""
    from codec import load_codec
    from data.corpus.instructions import Instruction
    from eval import ruler
    from eval.runners.common import build_prompt
    from eval.runners.vst_runner import VSTRunner
    from jobs.long_context import StudyConfig, fresh_vst_base
    from vst.sft import sft
    from vst.sft_config import SFTConfig

    torch.set_num_threads(1)

    def samples(seed, n):
        out = []
        for rec in ruler.generate("niah_single_1", 1200, n, unit="chars", seed=seed):
            p = build_prompt("niah_single_1", rec)
            out.append(Instruction(f"{rec['_id']}-{seed}", p.before + p.after, p.context,
                                   rec["needles"][0]["text"], "niah"))
        return out

    for name, ss in (("train", samples(0, 16)), ("val", samples(1, 2))):
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(json.dumps(s.to_dict()) + "\n" for s in ss))
    codec = load_codec("mini", mode="small")
    base = fresh_vst_base(StudyConfig(out=str(tmp_path), vst_depth=1), tmp_path, codec)
    res = sft(SFTConfig(base=str(base), data=str(tmp_path / "train.jsonl"),
                        val_data=str(tmp_path / "val.jsonl"), format="jsonl",
                        out=str(tmp_path / "run"), steps=10**6, max_flops=2.5e10, dec=0.0,
                        lr=3e-3, warmup=5, save_every=0, log_every=100), codec=codec)
    assert 2.5e10 <= res["train_flops"] < 2.5e10 * 1.2  # stopped by the FLOPs budget
    assert res["eval"]["ptr_acc_unique"] > 0.9  # the needle line itself, not the blanks
    runner = VSTRunner(res["checkpoint"], codec=codec)
    recs = ruler.generate("niah_single_1", 1200, 3, unit="chars", seed=9)
    preds = [runner.predict(build_prompt("niah_single_1", r), dataset="niah_single_1",
                            max_new_tokens=64) for r in recs]
    assert ruler.string_match_all(preds, [r["answers"] for r in recs]) >= 66
    assert runner.last_stats["positions"] > 0
    # truncated to no context pages, the same model cannot have the needle
    blind = VSTRunner(res["checkpoint"], codec=codec, max_visual_tokens=0)
    preds = [blind.predict(build_prompt("niah_single_1", r), dataset="niah_single_1",
                           max_new_tokens=64) for r in recs]
    assert ruler.string_match_all(preds, [r["answers"] for r in recs]) == 0
    assert blind.last_stats["positions"] < runner.last_stats["positions"]


def test_instruction_first_prompts_keep_the_instruction_and_the_latest_context():
    from vst.data import text_codec
    from vst.sft_text import prompt_ids

    encode = text_codec("bytes")[0]
    ids = prompt_ids(encode, "QUESTION?", "a" * 50 + "NEEDLE", "instruction-first", room=30)
    text = bytes(ids).decode()
    assert text.startswith("QUESTION?\n\n") and text.endswith("NEEDLE\n") and len(ids) == 30
    capped = bytes(prompt_ids(encode, "Q?", "a" * 50 + "NEEDLE", "instruction-first", room=100,
                              context_tokens=7)).decode()
    assert capped == "Q?\n\nNEEDLE\n"
