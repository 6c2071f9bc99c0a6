"""Frozen optical codecs: page images <-> continuous visual tokens <-> text.

`load_codec` (codec.registry) is the only way the project builds one.
"""

from codec.base import Codec, TextNLL
from codec.registry import available_codecs, load_codec, parse_codec_options, register_codec

__all__ = ["Codec", "TextNLL", "available_codecs", "load_codec", "parse_codec_options",
           "register_codec"]
