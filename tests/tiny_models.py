"""Tiny Hugging Face causal LMs and tokenizers built offline, for tests and benchmarks.

``build_tokenizer`` trains a small byte-level BPE with the ``tokenizers`` library and wraps it
as a ``PreTrainedTokenizerFast``; ``build_model`` makes a randomly initialised model of a given
family from a config object; ``save_tiny`` writes both with ``save_pretrained`` so tests load
them the way users do (``AutoModelForCausalLM.from_pretrained(dir)``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPTJConfig,
    GPTNeoXConfig,
    Lfm2Config,
    LlamaConfig,
    MistralConfig,
    Olmo2Config,
    OlmoConfig,
    PhiConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

FAMILIES = ("llama", "mistral", "qwen2", "olmo", "olmo2", "gpt2", "gpt_neox")
# Further MLP naming schemes of the family table (contract/families.py): fc_in/fc_out (GPT-J),
# fc1/fc2 (Phi), w1/w3/w2 under ``feed_forward`` (LFM2, whose tied head has no tensor of its own).
MLP_VARIANT_FAMILIES = ("gptj", "phi", "lfm2")

_DEFAULT_CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "alice sends bob a letter about the weather in paris",
    "numbers like 0123456789 and letters abcdefghijklmnopqrstuvwxyz",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ punctuation .,;:!?-_()[]{}'\"/@#+=",
]


def build_tokenizer(corpus: list[str] | None = None, vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """Byte-level BPE over ``corpus`` (all 256 bytes always present, so any text encodes)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus or _DEFAULT_CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>", pad_token="<pad>"
    )


def build_config(
    family: str, vocab_size: int, hidden: int = 32, layers: int = 4, intermediate: int = 64, heads: int = 4
) -> PretrainedConfig:
    common = dict(vocab_size=vocab_size, bos_token_id=0, eos_token_id=0, pad_token_id=1)
    if family in ("llama", "mistral", "qwen2", "olmo", "olmo2"):
        cls = {
            "llama": LlamaConfig,
            "mistral": MistralConfig,
            "qwen2": Qwen2Config,
            "olmo": OlmoConfig,
            "olmo2": Olmo2Config,
        }[family]
        return cls(
            hidden_size=hidden,
            intermediate_size=intermediate,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            max_position_embeddings=512,
            tie_word_embeddings=False,
            **common,
        )
    if family == "gpt2":
        return GPT2Config(n_embd=hidden, n_layer=layers, n_head=heads, n_inner=intermediate, n_positions=512, **common)
    if family == "gpt_neox":
        return GPTNeoXConfig(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=intermediate,
            max_position_embeddings=512,
            **common,
        )
    if family == "gptj":
        return GPTJConfig(
            n_embd=hidden, n_layer=layers, n_head=heads, n_inner=intermediate, n_positions=512, rotary_dim=4, **common
        )
    if family == "phi":
        return PhiConfig(
            hidden_size=hidden,
            intermediate_size=intermediate,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            max_position_embeddings=512,
            **common,
        )
    if family == "lfm2":
        return Lfm2Config(
            hidden_size=hidden,
            intermediate_size=intermediate,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            max_position_embeddings=512,
            full_attn_idxs=[1],
            block_auto_adjust_ff_dim=False,
            **common,
        )
    raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES + MLP_VARIANT_FAMILIES}")


def build_model(family: str, vocab_size: int = 300, seed: int = 0, **kw: int) -> PreTrainedModel:
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(build_config(family, vocab_size, **kw))
    model.eval()
    return model


def save_tiny(directory: Path, family: str = "llama", seed: int = 0, **kw: int) -> Path:
    """Write a tiny model + tokenizer to ``directory`` with ``save_pretrained``; returns it."""
    tokenizer = build_tokenizer()
    model = build_model(family, vocab_size=len(tokenizer), seed=seed, **kw)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory
