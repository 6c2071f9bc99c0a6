"""Build a tiny, random-weight DeepSeek-OCR-2 checkpoint in HF format, for tests.

The model classes are the real ones (`DeepseekOcr2ForConditionalGeneration`); only the
widths, depths and vocabulary are shrunk. The processor geometry is kept (1024² global
view, 768² tiles, 16-px patches, 4x downsampling), so token counts and order are those of
the real model: 256 global + 144 per tile + 1 separator.

The tokenizer is a byte-level BPE trained here with the `tokenizers` library, so nothing is
downloaded. Used by tests/test_deepseek*.py and benchmarks/deepseek_encode_bench.py.
"""

from __future__ import annotations

from pathlib import Path

# DeepSeek's special-token spellings, so prompt handling matches the real tokenizer.
BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
IMAGE = "<image>"
SPECIALS = [BOS, EOS, PAD, IMAGE]

_CORPUS = [
    "Free OCR.",
    "The quick brown fox jumps over the lazy dog.",
    "Optical compression renders long text as page images and encodes them as vision tokens.",
    "A page of about one thousand text tokens fits into one hundred vision tokens.",
    "def encode(pages): return tokens  # batched, without gradients",
    "0123456789 +-*/=()[]{}<>.,;:!? \"'` ~@#$%^&_|\\",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.",
]


def build_tokenizer(vocab_size: int = 384):
    """A byte-level BPE with DeepSeek's special tokens; like DeepSeek's tokenizer it puts
    BOS in front when asked for special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=None
    )


def tiny_config(tokenizer, *, real_size: bool = False):
    """A DeepseekOcr2Config: tiny widths by default, or the real model's sizes (random weights)."""
    from transformers import DeepseekOcr2Config

    # the real vocabulary size at real size (embedding/lm_head memory), else the tiny one
    vocab = 129280 if real_size else len(tokenizer)
    text = dict(
        vocab_size=vocab,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_position_embeddings=4096,
    )
    if real_size:
        # Sizes of deepseek-community/DeepSeek-OCR-2's config (vision side exact; the
        # 3B-MoE decoder as in DeepSeek-OCR: 12 layers, 64 experts, 6 active, 2 shared).
        sam = dict(initializer_range=0.02)  # SAM ViT-B defaults; real init would be ~0
        encoder = dict(
            hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
            num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=1024,
        )
        text.update(
            hidden_size=1280, intermediate_size=6848, num_hidden_layers=12,
            num_attention_heads=10, num_key_value_heads=10, n_routed_experts=64,
            n_shared_experts=2, num_experts_per_tok=6, moe_intermediate_size=896,
            mlp_layer_types=["dense"] + ["sparse"] * 11,
        )
    else:
        sam = dict(
            hidden_size=32, output_channels=16, num_hidden_layers=2, num_attention_heads=2,
            window_size=14, global_attn_indexes=[1], downsample_channels=[32, 48],
            # The default 1e-10 gives a random SAM that ignores its input image.
            initializer_range=0.02,
        )
        encoder = dict(
            hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=1024, vocab_size=vocab,
        )
        text.update(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, mlp_layer_types=["dense", "sparse"], n_routed_experts=4,
            n_shared_experts=1, num_experts_per_tok=2, moe_intermediate_size=32,
        )
    return DeepseekOcr2Config(
        vision_config={"sam_config": sam, "encoder_config": encoder},
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE),
    )


def build_processor(tokenizer):
    from transformers import DeepseekOcr2Processor
    from transformers.models.deepseek_ocr2.image_processing_pil_deepseek_ocr2 import (
        DeepseekOcr2ImageProcessorPil,
    )

    image_processor = DeepseekOcr2ImageProcessorPil()  # PIL: no torchvision needed
    return DeepseekOcr2Processor(image_processor=image_processor, tokenizer=tokenizer)


def build_model(tokenizer, *, real_size: bool = False, seed: int = 0):
    import torch
    from transformers import DeepseekOcr2ForConditionalGeneration

    torch.manual_seed(seed)
    model = DeepseekOcr2ForConditionalGeneration(tiny_config(tokenizer, real_size=real_size))
    return model.eval()


def save_tiny_checkpoint(out_dir: str | Path, *, seed: int = 0) -> Path:
    """Write config, safetensors weights, tokenizer and processor files to `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    build_model(tokenizer, seed=seed).save_pretrained(out)
    build_processor(tokenizer).save_pretrained(out)
    return out


if __name__ == "__main__":
    import sys

    print(save_tiny_checkpoint(sys.argv[1] if len(sys.argv) > 1 else "tiny-deepseek-ocr2"))
