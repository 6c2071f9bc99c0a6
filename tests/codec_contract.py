"""The contract every codec backend meets, as reusable checks (see codec/base.py).

Use it from a backend's tests in one of two ways:

    from codec_contract import CodecContract            # (or tests.codec_contract)

    class TestMyCodec(CodecContract):
        @pytest.fixture(scope="class")
        def codec(self):
            return build_tiny_codec()

or call `check_codec_contract(codec)` to run every check at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch

TEXTS = (
    "The quick brown fox jumps over the lazy dog.\nPack my box with five dozen liquor jugs.\n",
    "def encode(pages):\n    return tokens  # batched, no gradients\n\n0123456789 +-*/=()[]{}\n",
)


def render_first_pages(codec, texts: Sequence[str] = TEXTS) -> tuple[list[np.ndarray], list[str]]:
    """The first page of each text, rendered with the codec's own render config."""
    from render import render_text

    images, page_texts = [], []
    for text in texts:
        page, image = next(iter(render_text(text, codec.render_config)))
        images.append(image)
        page_texts.append(page.text)
    return images, page_texts


def _n(codec, tokens: torch.Tensor) -> None:
    assert tokens.dim() == 3 and tokens.shape[2] == codec.D
    if codec.n is not None:
        assert tokens.shape[1] == codec.n


def check_properties(codec) -> None:
    from render import RenderConfig

    assert isinstance(codec.name, str) and codec.name
    assert isinstance(codec.mode, str) and codec.mode
    assert isinstance(codec.D, int) and codec.D > 0
    assert codec.n is None or (isinstance(codec.n, int) and codec.n > 0)
    if codec.grid is not None:
        rows, cols = codec.grid
        assert codec.n is None or rows * cols == codec.n
    assert isinstance(codec.render_config, RenderConfig)
    assert isinstance(codec.version, str) and codec.version
    assert codec.count_text_tokens("hello world") == 2  # cl100k_base
    assert codec.count_text_tokens("") == 0


def check_encode(codec, images: list[np.ndarray]) -> torch.Tensor:
    tokens = codec.encode(images)
    assert isinstance(tokens, torch.Tensor) and tokens.is_floating_point()
    assert tokens.shape[0] == len(images)
    _n(codec, tokens)
    assert not tokens.requires_grad, "encode must run without autograd"
    assert torch.isfinite(tokens).all()
    # deterministic, and a stacked uint8 batch means the same as a list of pages
    assert torch.equal(codec.encode(images), tokens)
    stacked = codec.encode(np.stack(images))
    torch.testing.assert_close(stacked, tokens, rtol=1e-4, atol=1e-4)
    # pages are encoded independently of their batch neighbours
    torch.testing.assert_close(codec.encode(images[1:]), tokens[1:], rtol=1e-4, atol=1e-4)
    assert not torch.equal(tokens[0], tokens[1]), "different pages gave identical tokens"
    return tokens


def check_decode(codec, tokens: torch.Tensor) -> None:
    texts = codec.decode(tokens)
    assert isinstance(texts, list) and len(texts) == len(tokens)
    assert all(isinstance(t, str) for t in texts)
    assert codec.decode(tokens) == texts, "greedy decoding must be deterministic"
    short = codec.decode(tokens, max_new_tokens=3)
    assert len(short) == len(tokens)


def check_null_tokens(codec) -> None:
    null = codec.null_tokens(2)
    assert null.shape[0] == 2
    _n(codec, null)
    assert len(codec.decode(null)) == 2
    out = codec.text_nll(null, ["a", "b c"])
    assert torch.isfinite(out.nll).all()


def check_text_nll(codec, tokens: torch.Tensor, texts: Sequence[str]) -> None:
    params = list(codec.parameters())
    assert params, "the codec exposes no parameters to check"
    assert all(not p.requires_grad for p in params), "codec weights must be frozen"
    leaf = tokens.detach().clone().requires_grad_(True)
    out = codec.text_nll(leaf, list(texts))
    assert out.nll.shape == (len(texts),)
    assert torch.isfinite(out.nll).all() and (out.nll >= 0).all()
    assert out.n_bytes.tolist() == [len(t.encode("utf-8")) for t in texts]
    bpb = out.bits_per_byte()
    assert torch.isfinite(bpb) and bpb.dim() == 0
    out.nll.sum().backward()
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
    assert leaf.grad.abs().sum() > 0, "no gradient reached the tokens"
    assert all(p.grad is None for p in params), "a codec weight received a gradient"
    # a page's NLL depends on its own text
    swapped = codec.text_nll(tokens, list(texts)[::-1]).nll
    assert not torch.allclose(swapped, out.nll.detach())


def check_codec_contract(codec, texts: Sequence[str] = TEXTS) -> None:
    images, page_texts = render_first_pages(codec, texts)
    check_properties(codec)
    tokens = check_encode(codec, images)
    check_decode(codec, tokens)
    check_text_nll(codec, tokens, page_texts)
    check_null_tokens(codec)


class CodecContract:
    """Subclass and provide a `codec` fixture; every test here then runs on it."""

    @pytest.fixture(scope="class")
    def codec(self):  # pragma: no cover - overridden
        raise NotImplementedError

    @pytest.fixture(scope="class")
    def pages(self, codec):
        return render_first_pages(codec)

    @pytest.fixture(scope="class")
    def tokens(self, codec, pages):
        return codec.encode(pages[0])

    def test_properties(self, codec):
        check_properties(codec)

    def test_encode_shape_deterministic(self, codec, pages):
        check_encode(codec, pages[0])

    def test_decode(self, codec, tokens):
        check_decode(codec, tokens)

    def test_text_nll_grad_reaches_tokens_only(self, codec, tokens, pages):
        check_text_nll(codec, tokens, pages[1])

    def test_null_tokens(self, codec):
        check_null_tokens(codec)

    def test_registered(self, codec):
        from codec import available_codecs

        assert codec.name in available_codecs()
