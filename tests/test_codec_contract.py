"""The shared codec contract, run on every mini mode (tiny random instances) and on the
shipped default checkpoint. Other backends reuse `tests/codec_contract.py`."""

from __future__ import annotations

import pytest
import torch

try:
    from tests.codec_contract import CodecContract, check_codec_contract
except ImportError:  # pytest's rootdir-less import mode
    from codec_contract import CodecContract, check_codec_contract

from codec import available_codecs, load_codec
from codec.mini import MODES


def test_registry_names_mini_and_rejects_unknown():
    assert "mini" in available_codecs()
    with pytest.raises(ValueError, match="unknown codec"):
        load_codec("no-such-codec")


def test_load_codec_is_the_one_door():
    """name, name:mode, module:factory and KEY=VALUE options all reach the factory."""
    from codec import parse_codec_options
    from codec.toy import ToyCodec

    assert "toy" in available_codecs()
    toy = load_codec("toy", options=["D=32", "seed=3"])
    assert isinstance(toy, ToyCodec) and toy.D == 32
    assert load_codec(toy) is toy  # a built codec passes through
    assert load_codec("mini:tiny", random_init=True).mode == "tiny"
    assert load_codec("mini", mode="tiny", random_init=True).n == 16
    outside = load_codec("codec.toy:ToyCodec", options={"D": 16})  # outside the registry
    assert isinstance(outside, ToyCodec) and outside.D == 16
    assert parse_codec_options(["a=3", "b=true", "c=text", 'd="x"']) == {
        "a": 3, "b": True, "c": "text", "d": "x"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_codec_options(["novalue"])
    with pytest.raises(ValueError, match="cannot import"):
        load_codec("no_such_module_xyz:factory")
    with pytest.raises(ValueError, match="no callable"):
        load_codec("codec.toy:nothing_here")


def test_paging_contract_concatenates_back_to_the_text():
    text = "The quick brown fox jumps over the lazy dog.\n" * 30
    for codec in (load_codec("toy"), load_codec("mini:tiny", random_init=True)):
        pages = codec.paginate(text)
        assert "".join(p.text for p in pages) == text
        tokens, texts = codec.encode_text(text)
        assert tokens.shape == (len(pages), codec.n, codec.D)
        assert texts == [p.text for p in pages]
        assert all(1 <= codec.used_tokens(p) <= codec.n for p in pages)
        assert codec.used_tokens(pages[-1]) <= codec.used_tokens(pages[0])


@pytest.mark.parametrize("mode", sorted(MODES))
def test_contract_random_mini(mode):
    check_codec_contract(load_codec("mini", mode=mode, random_init=True))


class TestShippedMini(CodecContract):
    @pytest.fixture(scope="class")
    def codec(self):
        return load_codec("mini")  # default mode, shipped weights, no arguments


def test_shape_errors_are_clear():
    codec = load_codec("mini", random_init=True)
    with pytest.raises(ValueError, match="tokens must be"):
        codec.decode(torch.zeros(1, codec.n + 1, codec.D))
    with pytest.raises(ValueError, match="pages must be"):
        codec.encode(torch.zeros(1, 64, 64, 3, dtype=torch.uint8))
