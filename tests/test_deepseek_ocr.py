"""The `deepseek-ocr` (v1) backend.

DeepSeek's remote code cannot be obtained here, so this tests what can be tested honestly:
the trust_remote_code refusal, directory checks, the mode geometry and token counts, and
the backend's mechanics (remote-code loading, layout tokens, text_nll, greedy decoding)
against a STAND-IN model written below. The stand-in has the attribute names of
DeepSeek-OCR's DeepseekOCRForCausalLM but is not DeepSeek's code or architecture: nothing
here verifies the backend against real DeepSeek-OCR weights.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys

import numpy as np
import pytest
import torch

from codec import available_codecs, load_codec
from codec.deepseek_common import CheckpointError
from codec.deepseek_ocr import RemoteCodeRefused, mode_geometry

try:  # tests/ as a package or as a plain directory on sys.path
    from tests.codec_contract import check_codec_contract
    from tests.tiny_deepseek import build_tokenizer, save_tiny_checkpoint
except ModuleNotFoundError:
    from codec_contract import check_codec_contract
    from tiny_deepseek import build_tokenizer, save_tiny_checkpoint

STAND_IN = '''
"""Stand-in for DeepSeek-OCR's remote code, for tests only (same attribute names)."""
import torch
from torch import nn
from transformers import DeepseekV2Config, DeepseekV2ForCausalLM, DeepseekV2Model


class DeepseekOCRConfig(DeepseekV2Config):
    model_type = "deepseek_vl_v2"


class Sam(nn.Module):  # pixels [B, 3, S, S] -> [B, C, S/64, S/64], like SAM + its 4x neck
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 64, 64)

    def forward(self, x):
        return self.conv(x)


class Clip(nn.Module):  # (pixels, sam features) -> [B, 1 + hw, C], a CLS token first
    def __init__(self, c):
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, c))
        self.lin = nn.Linear(c, c)

    def forward(self, x, sam):
        f = self.lin(sam.flatten(2).transpose(1, 2))
        return torch.cat([self.cls.expand(f.shape[0], -1, -1), f], dim=1)


class DeepseekOCRModel(DeepseekV2Model):
    def __init__(self, config):
        super().__init__(config)
        c, d = 8, config.hidden_size
        self.sam_model = Sam(c)
        self.vision_model = Clip(c)
        self.projector = nn.Linear(2 * c, d)
        self.image_newline = nn.Parameter(torch.randn(d) / d**0.5)
        self.view_seperator = nn.Parameter(torch.randn(d) / d**0.5)

    def forward(self, input_ids=None, **kwargs):
        # DeepSeek-OCR's forward reads input_ids.shape unconditionally; so does this one.
        if input_ids is None:
            raise TypeError("stand-in: forward needs input_ids, like DeepSeek-OCR's")
        return super().forward(input_ids=input_ids, **kwargs)


class DeepseekOCRForCausalLM(DeepseekV2ForCausalLM):
    config_class = DeepseekOCRConfig

    def __init__(self, config):
        super().__init__(config)
        self.model = DeepseekOCRModel(config)
        self.post_init()
'''


def _stand_in_checkpoint(out):
    out.mkdir(parents=True, exist_ok=True)
    code = out / "modeling_deepseekocr.py"
    code.write_text(STAND_IN)
    spec = importlib.util.spec_from_file_location("stand_in_deepseekocr", code)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    tokenizer = build_tokenizer()
    config = module.DeepseekOCRConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, kv_lora_rank=16, q_lora_rank=None,
        qk_rope_head_dim=8, v_head_dim=16, qk_nope_head_dim=8, first_k_dense_replace=1,
        n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, n_shared_experts=1,
        max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    config.auto_map = {
        "AutoConfig": "modeling_deepseekocr.DeepseekOCRConfig",
        "AutoModel": "modeling_deepseekocr.DeepseekOCRForCausalLM",
    }
    torch.manual_seed(0)
    module.DeepseekOCRForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    assert (out / "modeling_deepseekocr.py").is_file()
    return out


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _stand_in_checkpoint(tmp_path_factory.mktemp("stand-in-ocr1"))


@pytest.fixture(scope="module")
def codec(ckpt):
    # random weights rarely emit EOS: a short cap keeps default-length decodes cheap
    return load_codec(
        "deepseek-ocr", path=ckpt, trust_remote_code=True, mode="tiny", max_new_tokens=16
    )


def pages(n, side=512, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8)


# ---- geometry (no model needed) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "side", "n", "n_layout"),
    [("tiny", 512, 64, 73), ("small", 640, 100, 111), ("base", 1024, 256, 273),
     ("large", 1280, 400, 421)],
)
def test_mode_geometry(mode, side, n, n_layout):
    assert mode_geometry(mode) == (side, n, (int(n**0.5),) * 2)
    assert mode_geometry(mode, keep_layout_tokens=True) == (side, n_layout, (1, n_layout))


def test_unknown_mode():
    with pytest.raises(ValueError, match="unknown mode"):
        mode_geometry("gundam")


# ---- refusal and directory checks -----------------------------------------------------------


def test_refuses_without_flag(ckpt):
    assert "deepseek-ocr" in available_codecs()
    with pytest.raises(RemoteCodeRefused, match="--trust-remote-code") as err:
        load_codec("deepseek-ocr", path=ckpt)
    assert "modeling_deepseekocr.py" in str(err.value)  # says which code would run
    with pytest.raises(RemoteCodeRefused):
        load_codec("deepseek-ocr", path=ckpt, trust_remote_code="yes")  # only a real True


def test_directory_errors(ckpt, tmp_path, monkeypatch):
    monkeypatch.delenv("VST_DEEPSEEK_OCR_PATH", raising=False)
    with pytest.raises(CheckpointError, match="--codec-path"):
        load_codec("deepseek-ocr", trust_remote_code=True)
    with pytest.raises(FileNotFoundError):
        load_codec("deepseek-ocr", path=tmp_path / "nowhere", trust_remote_code=True)
    d = tmp_path / "copy"
    shutil.copytree(ckpt, d)
    (d / "modeling_deepseekocr.py").unlink()
    with pytest.raises(CheckpointError, match="remote code"):
        load_codec("deepseek-ocr", path=d, trust_remote_code=True)
    shutil.copy(ckpt / "modeling_deepseekocr.py", d)
    (d / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights"):
        load_codec("deepseek-ocr", path=d, trust_remote_code=True)
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, "auto_map": {}}))
    with pytest.raises(CheckpointError, match="not a DeepSeek-OCR v1 checkpoint"):
        load_codec("deepseek-ocr", path=d, trust_remote_code=True)


def test_ocr2_checkpoint_is_pointed_elsewhere(tmp_path):
    ocr2 = save_tiny_checkpoint(tmp_path / "ocr2")
    with pytest.raises(CheckpointError, match="use the `deepseek-ocr2` codec"):
        load_codec("deepseek-ocr", path=ocr2, trust_remote_code=True)


# ---- mechanics against the stand-in ---------------------------------------------------------


def test_encode_counts_and_layout(codec, ckpt):
    assert codec.n == 64 and codec.grid == (8, 8) and codec.D == 64
    assert "mode=tiny" in codec.version and "layout=0" in codec.version
    tokens = codec.encode(pages(2))
    assert tokens.shape == (2, 64, 64)
    torch.testing.assert_close(codec.encode(pages(2)), tokens)
    layout = load_codec(
        "deepseek-ocr", path=ckpt, trust_remote_code=True, mode="tiny", keep_layout_tokens=True
    )
    assert layout.n == 73 and "layout=1" in layout.version
    full = layout.encode(pages(2))
    assert full.shape == (2, 73, 64)
    rows = full[:, :72].reshape(2, 8, 9, 64)
    torch.testing.assert_close(rows[:, :, :8].reshape(2, 64, 64), tokens)  # row-major grid
    newline, sep = codec.inner.image_newline, codec.inner.view_seperator
    torch.testing.assert_close(rows[:, :, 8], newline.expand(2, 8, -1))  # a newline ends each row
    torch.testing.assert_close(full[:, -1], sep.expand(2, -1))  # then the view separator
    # the decoder sees the full layout either way
    texts = ["Free OCR.", "fox"]
    torch.testing.assert_close(codec.text_nll(tokens, texts).nll, layout.text_nll(full, texts).nll)


def test_text_nll_gradient_and_decode(codec):
    tokens = codec.encode(pages(2)).clone().requires_grad_(True)
    out = codec.text_nll(tokens, ["The quick brown fox.", "Lorem ipsum"])
    assert torch.isfinite(out.nll).all() and (out.nll > 0).all()
    out.nll.sum().backward()
    assert tokens.grad.abs().sum() > 0
    assert all(p.grad is None for p in codec.model.parameters())
    texts = codec.decode(tokens.detach(), max_new_tokens=6)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert codec.decode(tokens.detach()[1:], max_new_tokens=6) == texts[1:]
    with pytest.raises(ValueError, match="tokens must be"):
        codec.decode(tokens.detach()[:, :10])


def test_contract_on_stand_in(codec):
    """The shared contract holds for the v1 mechanics (stand-in model, not DeepSeek's)."""
    check_codec_contract(codec)
