"""Whether a checkpoint fits the ``SmoothieModule`` it is loaded into, with both sides named when it does not.

Run by ``on_load_checkpoint``: first what the weights were trained on (the
fingerprint, ``E`` and the vocabulary), then the weights' names and shapes
against the options that decide them.
"""

from __future__ import annotations

import torch

from smoothie_pl.errors import CheckpointMismatchError
from smoothie_pl.fingerprint import CHECKPOINT_KEY, check_compatible, check_weights_fit, vocabulary_mismatch

# Hyperparameters that decide which weights exist and their shapes: named when a checkpoint's weights do not fit.
ARCHITECTURE_OPTIONS = ("denoiser", "space", "token_head", "cfg_dropout", "source_embedding", "train_embeddings")
# State entries a loaded checkpoint is compared on by their own checks (fingerprint, vocabulary).
CHECKED_SEPARATELY = ("embedding_matrix", "vocabulary")


def checkpoint_name(module) -> str:
    """The path the trainer loads from, for messages (``load_from_checkpoint`` has no trainer)."""
    try:
        return module.trainer.ckpt_path or "being loaded"
    except RuntimeError:  # not attached to a trainer
        return "being loaded"


def check_embedding_fits(module, checkpoint: dict, name: str) -> torch.Tensor | None:
    """Refuse another embedding, tokenizer or requested vocabulary; the checkpoint's vocabulary if the module takes it."""
    state = checkpoint["state_dict"]
    matrix = state.get("embedding_matrix")
    check_compatible(checkpoint[CHECKPOINT_KEY], module.fingerprint(), name, matrix, module.embedding_matrix)
    if matrix is not None and matrix.shape != module.embedding_matrix.shape:
        raise CheckpointMismatchError(
            f"checkpoint embedding matrix has shape {tuple(matrix.shape)} but this model's "
            f"({module.hparams.embedding or 'packaged MiniLM'}) has {tuple(module.embedding_matrix.shape)}"
        )
    if "vocabulary" not in state or torch.equal(state["vocabulary"].cpu(), module.vocabulary.cpu()):
        return None
    if module.vocabulary_requested:
        raise vocabulary_mismatch(state["vocabulary"].cpu(), module.vocabulary.cpu(), module.tokenizer, name)
    return state["vocabulary"]


def check_checkpoint_fits(module, checkpoint: dict, name: str) -> None:
    """Refuse weights whose names or shapes differ from ``module``'s, naming the options that differ."""
    saved_options = checkpoint.get("hyper_parameters", {})
    check_weights_fit(
        checkpoint["state_dict"],
        module.state_dict(),
        {key: saved_options.get(key) for key in ARCHITECTURE_OPTIONS},
        {key: module.hparams.get(key) for key in ARCHITECTURE_OPTIONS},
        name,
        skip=CHECKED_SEPARATELY,
    )
