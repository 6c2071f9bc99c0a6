"""Frozen optical codecs: page images <-> continuous visual tokens <-> text."""

from codec.base import Codec, TextNLL, available_codecs, load_codec, register_codec

__all__ = ["Codec", "TextNLL", "available_codecs", "load_codec", "register_codec"]
