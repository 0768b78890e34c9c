"""Shared fixtures: offline environment and tiny self-made tokenizer/embedding models."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

for _variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_variable] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _interpret_triton_without_cuda() -> None:
    """Triton decides at a kernel's definition whether to interpret it: before any test imports smoothie_pl."""
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")


_interpret_triton_without_cuda()

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]"]

PAIRS = [
    ("the cat sat on the mat", "a cat was sitting on a mat"),
    ("thou shalt not kill", "you shall not murder"),
    ("and god said let there be light", "god said let there be light"),
    ("he went unto the city", "he went to the city"),
    ("blessed are the meek", "happy are the gentle"),
    ("the lord is my shepherd", "the lord is my shepherd"),
    ("ye are the salt of the earth", "you are the salt of the earth"),
    ("love thy neighbour", "love your neighbour"),
]


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """Call it for a TCP port on 127.0.0.1 that is free now (DDP rendezvous, test daemons)."""
    return _unused_port


def make_word_model(directory: Path, words: list[str], dim: int = 16, seed: int = 0) -> Path:
    """Save a BERT-style model whose tokenizer is word-level over ``words``; returns its path."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=dim,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * dim,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def pair_words() -> list[str]:
    return sorted({word for pair in PAIRS for text in pair for word in text.split()})


@pytest.fixture(scope="session")
def word_model(tmp_path_factory) -> str:
    """A tiny word-level model over the words of ``PAIRS`` (d = 16)."""
    return str(make_word_model(tmp_path_factory.mktemp("word_model"), pair_words()))


@pytest.fixture(scope="session")
def pairs_dir(tmp_path_factory) -> Path:
    """``train/validation/test.jsonl`` files, each holding the eight ``PAIRS``."""
    directory = tmp_path_factory.mktemp("pairs")
    for split in ("train", "validation", "test"):
        with (directory / f"{split}.jsonl").open("w") as out:
            for source, target in PAIRS:
                out.write(json.dumps({"src": source, "trg": target}) + "\n")
    return directory
