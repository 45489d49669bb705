"""The embedded default: a BPE tokenizer and a small Llama trained on the fictitious world.

Small enough to memorise the world's facts in well under a minute on two CPU cores, and a real
Hugging Face `LlamaForCausalLM`, so everything that works on it works on any causal LM.
"""
from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>"]

SIZES = {
    # hidden, layers, heads, intermediate
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=512),
    "wide": dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=1024),
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, intermediate_size=1024),
}


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer. Pad, bos and eos are distinct tokens: pad == eos would mask
    eos out of the labels and the model would never learn to stop."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(sorted(set(texts)), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
        model_max_length=512, padding_side="right",
    )


def new_model(tokenizer: PreTrainedTokenizerFast, size: str = "tiny", seed: int = 0,
              max_positions: int = 512) -> LlamaForCausalLM:
    """A randomly initialised Llama of the given size whose vocabulary matches `tokenizer`."""
    import torch

    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {sorted(SIZES)}")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **SIZES[size],
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)
