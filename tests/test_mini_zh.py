"""mini-zh (issue #24): the GB2312 vocabulary, the variant's plumbing, a Chinese page end to
end through a random-init codec, the shipped weights, and the Chinese corpus sources.

    HF_HUB_OFFLINE=1 python -m pytest -q tests/test_mini_zh.py
"""

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from codec import load_codec
from codec.mini import VARIANTS, WEIGHTS_DIR, MiniCodec, mode_config
from codec.mini.vocab import CHARS, EN, ZH_EXTRA_CHARS, gb2312_chars, get_vocab
from data.errors import BadInput

SENTENCE = "删除一个现存数据库的目录入口（通常也是数据库创建者）。DROP DATABASE name; “引号”\n"


# -- vocabulary ------------------------------------------------------------------------------

def test_gb2312_list_is_the_standard():
    symbols, hanzi = gb2312_chars()
    assert len(hanzi) == 6763 and len(set(hanzi)) == 6763
    assert hanzi[0] == "啊" and hanzi[-1] == "齄"  # first of level 1, last of level 2
    assert "，" in symbols and "。" in symbols and "（" in symbols and "Ａ" in symbols


def test_zh_vocab_covers_gb2312_and_keeps_mini_ids():
    zh = get_vocab("zh")
    symbols, hanzi = gb2312_chars()
    assert all(ch in zh for ch in hanzi + symbols + ZH_EXTRA_CHARS)
    assert zh.encode(CHARS) == EN.encode(CHARS)  # mini's characters keep their ids
    assert zh.n_classes == len(set(CHARS + symbols + hanzi + ZH_EXTRA_CHARS)) + 2
    assert len(zh.chars) == len(set(zh.chars))


def test_zh_vocab_round_trips_and_marks_unknown():
    zh = get_vocab("zh")
    ids = zh.encode(SENTENCE)
    assert 1 not in ids and zh.decode(ids) == SENTENCE and zh.n_unknown(SENTENCE) == 0
    assert zh.encode("😀") == [1] and zh.decode([1]) == "\ufffd" and zh.n_unknown("😀a") == 1
    assert EN.n_unknown(SENTENCE) == 29  # what mini does with it: every hanzi unknown
    with pytest.raises(BadInput):
        get_vocab("klingon")


def test_mini_weights_are_untouched():
    """mini's shipped weights, byte for byte, as before issue #24."""
    pinned = {"tiny": "3f6081bafa7775b4e238ea5255d3a144a3f957cc0de1e80d2aeb825a7ff55df8",
              "small": "3e39909d9e09b1b41047132d728bf167b6283fac39e42ac98aff31e6ca6317bb",
              "base": "de57c5bf418c54b34a2f81f5c2d122afa6996a1720b8b0407d297e34640e96a0"}
    for mode, digest in pinned.items():
        data = (WEIGHTS_DIR / f"{mode}.safetensors").read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, mode
    assert json.loads((WEIGHTS_DIR / "small.json").read_text())["model"].get("vocab", "en") == "en"


# -- the variant -----------------------------------------------------------------------------

def test_variant_config_and_errors():
    cfg = mode_config("small", variant="mini-zh")
    assert cfg.vocab == "zh" and cfg.grid == (24, 2) and cfg.n == 48
    assert cfg.chars.n_classes == get_vocab("zh").n_classes
    assert mode_config("small").vocab == "en" and mode_config("small").n == 32
    with pytest.raises(BadInput):
        mode_config("huge", variant="mini-zh")
    with pytest.raises(BadInput):
        mode_config("small", variant="mini-xx")


def zh_page(text: str = SENTENCE * 6):
    from render import get_preset, paginate, rasterize

    cfg = get_preset(VARIANTS["mini-zh"].render_preset)
    page = next(iter(paginate(text, cfg)))
    return page, rasterize(page, cfg), cfg


def test_chinese_page_renders_on_the_cell_grid():
    """Every line of a Chinese page has a canonical path: each character in whole cells
    (hanzi two), none unknown, so the aligned loss sees all of it."""
    from codec.mini.data import to_sample

    page, image, cfg = zh_page()
    assert not page.missing_glyphs
    sample = to_sample(page, image, cfg, get_vocab("zh"))
    assert sample.frames and all(p is not None for p in sample.frames)
    ids = np.concatenate(sample.frames)
    assert 1 not in ids and (ids > 1).sum() == len(page.text)  # every character, once


@pytest.mark.parametrize("reader", ["ctc", "causal"])
def test_random_mini_zh_encodes_and_reads_a_chinese_page(reader):
    codec = MiniCodec.random("small", variant="mini-zh", reader=reader)
    assert codec.name == "mini-zh"
    page, image, _ = zh_page()
    tokens = codec.encode([image])
    assert tokens.shape == (1, 48, codec.D) and torch.isfinite(tokens).all()
    texts = codec.decode(tokens, max_new_tokens=200)
    assert len(texts) == 1 and isinstance(texts[0], str)
    assert codec.cfg.chars.n_unknown(page.text) == 0  # nothing charged as unknown
    tokens.requires_grad_(True)
    nll = codec.text_nll(tokens, [page.text])
    assert torch.isfinite(nll.nll).all() and nll.nll.item() > 0
    nll.nll.sum().backward()
    assert tokens.grad.abs().sum() > 0  # a likelihood a VST can train through


def test_reader_positions_count_cells_not_characters():
    """The causal reader's step for a character sits at the cell the character starts in:
    hanzi take two cells, so 'ab中c' starts at cells 0, 1, 2, 4 (and its end at 5)."""
    from codec.mini.reader import BOS, CausalReader

    zh = get_vocab("zh")
    reader = CausalReader(48, 52, dim=32, depth=1, heads=2, chars=zh)
    ids_in = torch.tensor([[BOS] + zh.encode("ab中c")])
    assert reader.cell_positions(ids_in).tolist() == [[0, 1, 2, 4, 5]]
    en = CausalReader(48, 52, dim=32, depth=1, heads=2)
    assert en.cell_positions(torch.tensor([[BOS] + EN.encode("abc")])).tolist() == [[0, 1, 2, 3]]


def test_reader_greedy_and_fast_read_agree_with_teacher_forcing_on_wide_characters():
    """A random zh reader reads mostly hanzi: its greedy read, teacher-forced back, is the
    argmax at every step (so greedy and teacher forcing put steps at the same cells), and
    the speculative read with that read as its draft takes every character of it."""
    from codec.mini.reader import CausalReader, teacher_forcing
    from codec.mini.speculative import ReadStats, fast_greedy

    torch.manual_seed(0)
    zh = get_vocab("zh")
    reader = CausalReader(8, 20, dim=32, depth=2, heads=2, chars=zh).eval()
    cells = torch.randn(6, 20, 16)
    with torch.no_grad():
        reads = reader.greedy(cells, max_len=12)
        texts = [zh.decode(r) for r in reads]
        assert sum(zh.widths[i] == 2 for r in reads for i in r) > 10  # wide characters read
        inputs, targets, _ = teacher_forcing(texts, zh)
        best = reader(cells, inputs).argmax(-1)
    for r, ids in enumerate(reads):
        n = len(ids) + (len(ids) < 12)  # the EOS step too, unless the read was cut
        assert best[r, :n].tolist() == targets[r, :n].tolist()
    stats = ReadStats()
    drafts = [(ids, [0] * len(ids)) for ids in reads]
    assert fast_greedy(reader, cells, drafts, 12, stats) == reads
    assert stats.fallbacks == 0 and stats.accepted > 0


def test_ctc_drafts_do_not_fill_a_wide_characters_second_cell():
    from codec.mini.speculative import ctc_drafts

    zh = get_vocab("zh")
    a, han, b = zh.encode("a中b")
    logits = torch.zeros(1, 12, zh.n_classes)
    logits[0, :, 0] = 1.0  # blank everywhere, then a (cell 0), 中 (cells 1-2), b (cell 3)
    for frame, ch in ((0, a), (2, han), (6, b)):
        logits[0, frame, ch] = 5.0
    assert zh.decode(ctc_drafts(logits, zh.widths)[0][0]) == "a中b"
    assert zh.decode(ctc_drafts(logits)[0][0]) == "a中 b"  # one cell each: a space is filled


def test_validation_pages_spread_over_documents():
    from codec.mini.data import render_pages
    from render import get_preset

    cfg = get_preset("mini-zh")
    docs = ["English page text.\n" * 200, "第二个文档。\n" * 5, "third\n" * 5, "中文第四。\n" * 5]
    pages = render_pages(docs, cfg, 4)
    assert len(pages) == 4
    assert [p.text.split("\n")[0] for p in pages] == [
        "English page text.", "第二个文档。", "third", "中文第四。"]  # one page of each first


def test_freeze_encoder_trains_a_new_mode_beside_the_others(tmp_path):
    """`--freeze-encoder`: a new mode (`tiny`) trains on mini-zh's encoder and leaves it,
    and so the other modes' tokens, bit for bit as loaded."""
    from safetensors.torch import load_file

    from codec.mini.configs import CodecTrainConfig
    from codec.mini.train import train
    from data.corpus.build import write_corpus

    corpus = tmp_path / "c.jsonl.zst"
    write_corpus([{"text": SENTENCE * 30, "meta": {"id": f"d{i}"}} for i in range(21)], corpus)
    shipped = VARIANTS["mini-zh"].weights_dir
    out = tmp_path / "w"
    train(CodecTrainConfig(variant="mini-zh", modes="tiny", corpus=str(corpus),
                           init_from=str(shipped), freeze_encoder=True, steps=2, val_every=2,
                           val_pages=1, batch=1, workers=0, threads=1, ctc=0, probe=0,
                           blank_frames=0.2, out=str(out), workdir=str(tmp_path / "r")))
    new = load_file(str(out / "tiny.safetensors"))
    old = load_file(str(shipped / "small.safetensors"))
    enc = [k for k in new if k.startswith("encoder.")]
    assert enc and all(torch.equal(new[k], old[k]) for k in enc)
    assert not torch.equal(new["readout.head.bias"], old["readout.head.bias"])  # it trained
    with pytest.raises(BadInput, match="--freeze-encoder"):
        train(CodecTrainConfig(variant="mini-zh", modes="tiny", freeze_encoder=True,
                               out=str(out), workdir=str(tmp_path / "r")))


def test_sparse_ce_is_the_full_sum_at_rate_one():
    from codec.mini.train import sparse_ce

    torch.manual_seed(0)
    head = torch.nn.Linear(8, 30)
    feats, paths = torch.randn(3, 10, 8), torch.randint(0, 30, (3, 10))
    paths[:, ::2] = 0
    ok = torch.tensor([True, False, True])
    full = torch.nn.functional.cross_entropy(head(feats[ok]).flatten(0, 1), paths[ok].flatten(),
                                             reduction="sum")
    assert torch.allclose(sparse_ce(head, feats, paths, ok, 1.0), full)
    assert sparse_ce(head, feats, paths, ok, 0.3) > 0


def test_load_mini_zh_offline(monkeypatch):
    """The shipped mini-zh weights load offline through the registry, like any codec."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    codec = load_codec("mini-zh:small")
    assert codec.name == "mini-zh" and codec.mode == "small" and codec.cfg.vocab == "zh"
    assert codec.version.startswith("mini-zh-small-")
    assert load_codec("mini:small").cfg.vocab == "en"
    _, image, _ = zh_page()
    assert codec.encode([image]).shape == (1, codec.n, codec.D)


def test_reader_from_starts_a_mini_zh_reader_from_minis(tmp_path):
    """`train-reader --reader-from shipped`: the new reader starts from `mini`'s (shapes
    that fit as they are, class rows row by row), and the run writes a mini-zh checkpoint
    with a causal reader."""
    from safetensors.torch import load_file

    from codec.mini.configs import ReaderTrainConfig
    from codec.mini.train_reader import train
    from data.corpus.build import write_corpus

    corpus = tmp_path / "c.jsonl.zst"
    write_corpus([{"text": SENTENCE * 30, "meta": {"id": f"d{i}"}} for i in range(21)], corpus)
    out = tmp_path / "w"
    train(ReaderTrainConfig(variant="mini-zh", modes="small", corpus=str(corpus),
                            init="shipped", reader_from="shipped", steps=1, lr=1e-12,
                            warmup=1, val_every=1, val_pages=1, batch=1, workers=0,
                            threads=1, out=str(out), workdir=str(tmp_path / "r")))
    new = load_file(str(out / "small.safetensors"))
    en = load_file(str(WEIGHTS_DIR / "small.safetensors"))
    assert torch.allclose(new["reader.blocks.0.qkv.weight"].float(),
                          en["reader.blocks.0.qkv.weight"].float(), atol=1e-3)
    n = en["reader.head.weight"].shape[0]
    assert new["reader.head.weight"].shape[0] == get_vocab("zh").n_classes > n
    assert torch.allclose(new["reader.embed.weight"][:n].float(),
                          en["reader.embed.weight"].float(), atol=1e-3)
    meta = json.loads((out / "small.json").read_text())
    assert meta["model"]["reader"] == "causal" and meta["model"]["vocab"] == "zh"


# Written for this test (not from any corpus): everyday Chinese with English names mixed in.
FRESH = ("今天下午我们在图书馆讨论了新的计划，大家都同意先把数据整理好，再开始训练模型。"
         "如果遇到问题，请查看文档或者联系管理员。使用 Python 3 运行脚本之前，需要安装所有依赖。"
         "这个系统可以把长文本转换成图片，然后压缩成少量的视觉标记。\n")


@pytest.mark.parametrize("mode", list(VARIANTS["mini-zh"].modes))
def test_shipped_mini_zh_reads_fresh_chinese(mode):
    """Every shipped mini-zh mode reads a Chinese page it never saw (>= 90%; the card's
    held-out numbers are the real measure), and reads nothing from null tokens."""
    from codec.text_metrics import precision

    codec = load_codec(f"mini-zh:{mode}")
    page, image, _ = zh_page(FRESH * 3)
    tokens = codec.encode([image])
    assert precision(codec.decode(tokens)[0], page.text) >= 0.9
    assert precision(codec.decode(torch.zeros_like(tokens))[0], page.text) < 0.1


def test_shipped_mini_zh_modes_share_one_encoder():
    """A mode trained later (`--freeze-encoder`) kept the encoder of the others, so one
    encoder pass serves every mode and converted stores of one mode stay valid."""
    from safetensors.torch import load_file

    folder = VARIANTS["mini-zh"].weights_dir
    states = [load_file(str(p)) for p in sorted(folder.glob("*.safetensors"))]
    assert len(states) >= 2
    enc = [k for k in states[0] if k.startswith("encoder.")]
    assert enc and all(torch.equal(st[k], states[0][k]) for st in states[1:] for k in enc)


# -- corpus ----------------------------------------------------------------------------------

ROFF = """.\\" generated
.de XX
\\\\$1
..
.TH LS 1 2022年9月 "GNU coreutils 9.1" 用户命令
.SH 名称
ls \\- 列出目录内容
.SH 描述
.PP
列出指定“文件”（默认为当前目录）的信息。如果既没有指定 \\fB\\-cftuvSUX\\fP 中任何一个，则按字母排序项目。
.TP
\\fB\\-a\\fP, \\fB\\-\\-all\\fP
不要忽略以点号（“.”）起始的条目
.BR ls (1)
"""


def test_roff_to_text():
    from data.corpus.zh import roff_to_text

    text = roff_to_text(ROFF)
    assert text.startswith("LS(1)\n")
    assert "ls - 列出目录内容" in text and "指定 -cftuvSUX 中任何一个" in text
    assert "-a, --all\n不要忽略" in text and "ls(1)" in text
    assert "\\f" not in text and "$1" not in text and ".TP" not in text and "generated" not in text


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode()
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)


def test_manpages_zh_source_on_a_fake_tree(tmp_path):
    from data.corpus import read_corpus
    from data.corpus.build import TRAIN_FILE, build_corpus
    from data.corpus.sources import SOURCE_NAMES

    man = tmp_path / "man"
    _write(man / "man1/ls.1.gz", ROFF * 3)
    _write(man / "man1/dir.1.gz", ".so man1/ls.1\n")  # a link page
    _write(man / "man1/english.1.gz", ".TH EN 1\n.SH NAME\n" + "plain English words " * 40)
    _write(man / "man1/tiny.1", ".TH T 1\n.SH 名称\n很短\n")
    _write(man / "man8/ls.8.gz", ROFF * 3)  # the same text twice: a duplicate
    manifest = build_corpus(tmp_path / "out", sources=["manpages-zh"], heldout_source=None,
                            roots={"manpages-zh": man}, log=lambda *_: None)
    report = manifest["sources"]["manpages-zh"]
    assert report["documents"] == 1 and report["duplicates_removed"] == 1
    assert report["filtered"] == {"link": 1, "non-chinese": 1, "tiny": 1}
    docs = list(read_corpus(tmp_path / "out" / TRAIN_FILE))
    assert len(docs) == 1 and "不要忽略以点号" in docs[0].text and "\\fB" not in docs[0].text
    assert "manpages-zh" not in SOURCE_NAMES  # English builds stay English


def test_card_zh_section(tmp_path):
    """The model card's mini-zh section: the curve (both compression measures, CER, blind
    floor) and the verdict on each target, from a fidelity run's metrics."""
    from codec.mini.card_zh import zh_section

    row = {"visual_tokens_per_page": 48, "compression": 6.2, "chars_per_visual_token": 7.5,
           "precision": 0.951, "cer": 0.05, "blind_precision": 0.0, "blind_cer": 1.0,
           "pages": 64, "decode_pages_per_s": 3.0}
    metrics = {"source": "held-out", "documents": 1, "max_pages": 64,
               "results": {"mini-zh:small": row,
                           "mini-zh:base": {**row, "compression": 3.1, "precision": 0.97}}}
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(metrics))
    text = "\n".join(zh_section(path))
    assert "| mini-zh:small | 24x2 | 48 | 6.2x | 7.5 | **95.10%** | 5.00% | 0.0% |" in text
    assert "| >= 95% precision at >= 5x |" in text and "yes (mini-zh:small)" in text
    assert "| >= 90% precision at >= 8x |" in text and text.count("| no |") == 1
