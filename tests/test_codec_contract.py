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
