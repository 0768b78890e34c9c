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


def make_word_model(directory: Path, words: list[str], dim: int = 16, seed: int = 0, lowercase: bool = False) -> Path:
    """Save a BERT-style model whose tokenizer is word-level over ``words`` (lowercasing its input, as
    MiniLM's does, with ``lowercase``); returns its path."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if lowercase:
        backend.normalizer = normalizers.Lowercase()
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


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, pairs_dir) -> Path:
    """A 2-step run over ``PAIRS`` that logs to TensorBoard and saves ``checkpoints/last.ckpt``.

    Its embedding model is its own copy (``<run>/embedding``), which a test may hide to prove offline loading.
    """
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from smoothie_pl.callbacks import Diagnostics, GenerationMetrics, SmoothieEMA
    from smoothie_pl.data import JsonlDataModule
    from smoothie_pl.module import SmoothieModule

    root = tmp_path_factory.mktemp("trained_run")
    embedding = str(make_word_model(root / "embedding", pair_words()))
    files = {f"{split}_file": str(pairs_dir / f"{split}.jsonl") for split in ("train", "validation", "test")}
    data = JsonlDataModule(
        tokenizer=embedding, target_length=8, source_length=10, batch_size=4, restrict_vocabulary=True, **files
    )
    L.seed_everything(0)
    module = SmoothieModule(
        embedding=embedding,
        denoiser={"width": 32, "depth": 2, "heads": 2, "encoder_depth": 1, "dropout": 0.0},
        target_length=8,
        source_length=10,
        sampling={"steps": 3},
        optim={"warmup_steps": 2, "lr": 1e-2},
        vocabulary=data.vocabulary(),
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        val_check_interval=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        logger=TensorBoardLogger(root),
        callbacks=[
            ModelCheckpoint(dirpath=root / "checkpoints", save_last=True),
            SmoothieEMA(decay=0.9),
            GenerationMetrics(num_examples=4, batch_size=4, show=0),
            Diagnostics(times=(0.5, 1.0), max_examples=2),
        ],
    )
    trainer.fit(module, datamodule=data)
    return root
