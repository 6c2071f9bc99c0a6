"""Test fixture: a tiny random Hugging Face causal LM saved to a local directory.

Nothing is downloaded: the tokenizer is trained here with `tokenizers` on a few lines of
text, and the model is a random Llama or Qwen2 config a few hundred kilobytes large.
"""

from __future__ import annotations

from pathlib import Path

_TEXT = [
    "Answer the question based on the given passages. Only give me the answer.",
    "The following are given passages. Question: what is the magic number? Answer: 42",
    "Summarize the dialogue into a few short sentences. The grass is green.",
    "The sky is blue. The sun is yellow. Here we go. There and back again.",
    "Please complete the code given below. def f(x): return x + 1",
]


def build_tiny_hf_lm(
    out_dir: str | Path,
    *,
    arch: str = "llama",
    vocab_size: int = 300,
    hidden: int = 32,
    layers: int = 2,
    window: int = 256,
    chat_template: bool = False,
    seed: int = 0,
) -> Path:
    """Write a tokenizer + random causal LM to `out_dir`; returns the directory."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specials = ["<pad>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_TEXT * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    if chat_template:
        fast.chat_template = (
            "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}assistant:{% endif %}"
        )
    fast.save_pretrained(out)

    common = dict(
        vocab_size=len(fast),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=window,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        raise ValueError(f"arch must be llama or qwen2, not {arch!r}")
    model.save_pretrained(out)
    return out
