"""What a checkpoint depends on besides its weights, and the check that a loading run depends on the same.

A checkpoint's weights only make sense with the embedding matrix, tokenizer,
diffusion vocabulary, space, schedule and lengths they were trained with. The
fingerprint records them (digests for the large parts) so that loading into a
run that differs fails with both sides named instead of decoding nonsense.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Container, Mapping
from typing import Any

import torch

from smoothie_pl.errors import CheckpointMismatchError

CHECKPOINT_KEY = "smoothie_fingerprint"
DIGEST_CHARS = 16
SHOWN_TOKENS = 5
SHOWN_KEYS = 5


def tensor_digest(tensor: torch.Tensor) -> str:
    """Short SHA-256 of a tensor's values (dtype and shape included)."""
    header = f"{tensor.dtype}{tuple(tensor.shape)}".encode()
    values = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)  # reshape: 0-d tensors too
    digest = hashlib.sha256(header)
    digest.update(values.numpy())  # hashed in place: no copy of the bytes
    return digest.hexdigest()[:DIGEST_CHARS]


def tokenizer_digest(tokenizer) -> str:
    """Short SHA-256 of the tokenizer's token -> id table."""
    table = json.dumps(sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]), ensure_ascii=False)
    return hashlib.sha256(table.encode()).hexdigest()[:DIGEST_CHARS]


def fingerprint(
    embedding: str,
    embedding_matrix: torch.Tensor,
    pretrained_embedding_sha256: str,
    embedding_trained: bool,
    tokenizer,
    vocabulary: torch.Tensor,
    space: str,
    schedule: dict[str, float],
    target_length: int,
    source_length: int,
) -> dict[str, Any]:
    """Plain (yaml/json-friendly) description of everything the weights depend on.

    ``pretrained_embedding_sha256`` is the digest of ``E`` as the run loaded it;
    with ``embedding_trained`` the checkpoint's ``E`` (``embedding_sha256``) has
    moved away from it, so a loading run is compared on the pretrained one.
    """
    return {
        "embedding": embedding,
        "embedding_shape": list(embedding_matrix.shape),
        "embedding_sha256": tensor_digest(embedding_matrix),
        "pretrained_embedding_sha256": pretrained_embedding_sha256,
        "embedding_trained": embedding_trained,
        "tokenizer_size": len(tokenizer),
        "tokenizer_sha256": tokenizer_digest(tokenizer),
        "vocabulary_size": int(vocabulary.numel()),
        "vocabulary_sha256": tensor_digest(vocabulary.long()),
        "space": space,
        "schedule": dict(schedule),
        "target_length": target_length,
        "source_length": source_length,
    }


# Groups of fingerprint entries compared together, by what a mismatch means.
# The diffusion vocabulary is compared by the module: a run that did not ask
# for a vocabulary takes the checkpoint's.
COMPARED = {
    "tokenizer": ("embedding", "tokenizer_size", "tokenizer_sha256"),
    "embedding matrix": ("embedding", "embedding_shape", "pretrained_embedding_sha256"),
    "diffusion space": ("space",),
    "schedule": ("schedule",),
    "lengths": ("target_length", "source_length"),
}


def _describe(record: dict[str, Any], keys: tuple[str, ...]) -> str:
    return ", ".join(f"{key}={record.get(key)!r}" for key in keys)


def check_compatible(
    saved: dict[str, Any],
    current: dict[str, Any],
    checkpoint: str,
    saved_matrix: torch.Tensor | None = None,
    current_matrix: torch.Tensor | None = None,
) -> None:
    """Raise ``CheckpointMismatchError`` naming both sides of every group that differs.

    The embedding matrix is compared on the pretrained ``E`` each run started
    from, so a run that trained ``E`` still fits its own checkpoint. Digests
    can differ by float rounding of the standardisation on other hardware, so
    when the checkpoint's ``E`` is the frozen pretrained one and both matrices
    are given, they are compared with a tolerance instead.
    """
    if "pretrained_embedding_sha256" not in saved:  # written before training E was told apart: E was frozen
        saved = {**saved, "pretrained_embedding_sha256": saved.get("embedding_sha256"), "embedding_trained": False}
    problems = []
    for group, keys in COMPARED.items():
        differs = [key for key in keys if key != "embedding" and saved.get(key) != current.get(key)]
        frozen = not saved["embedding_trained"] and saved_matrix is not None
        if group == "embedding matrix" and differs == ["pretrained_embedding_sha256"] and frozen:
            if torch.allclose(saved_matrix.float().cpu(), current_matrix.float().cpu(), rtol=1e-4, atol=1e-5):
                differs = []
        if differs:
            problems.append(
                f"{group}: the checkpoint has {_describe(saved, keys)}; this run has {_describe(current, keys)}"
            )
    if problems:
        raise CheckpointMismatchError(
            f"checkpoint {checkpoint} does not fit this run:\n  " + "\n  ".join(problems)
        )


def _listed(keys: list[str]) -> str:
    return ", ".join(keys[:SHOWN_KEYS]) + (f", ... ({len(keys)} in all)" if len(keys) > SHOWN_KEYS else "")


def check_weights_fit(
    saved_state: Mapping[str, torch.Tensor],
    current_state: Mapping[str, torch.Tensor],
    saved_options: Mapping[str, Any],
    current_options: Mapping[str, Any],
    checkpoint: str,
    skip: Container[str] = (),
) -> None:
    """Raise ``CheckpointMismatchError`` unless ``saved_state`` loads strictly into ``current_state``.

    A config changed between a run and its resume (another denoiser size, self-
    conditioning switched on) otherwise ends in torch's strict-load traceback. The
    message lists the keys that do not fit and the architecture options
    (``model.denoiser.*``, ``model.space``, ...) on both sides. ``skip``: keys another
    check owns (the embedding matrix, the diffusion vocabulary).
    """
    missing = [key for key in current_state if key not in saved_state and key not in skip]
    unexpected = [key for key in saved_state if key not in current_state and key not in skip]
    reshaped = [
        f"{key} {tuple(saved_state[key].shape)} vs {tuple(current_state[key].shape)}"
        for key in current_state
        if key in saved_state and key not in skip and saved_state[key].shape != current_state[key].shape
    ]
    problems = [
        f"{what}: {_listed(keys)}"
        for what, keys in (
            ("weights this model has and the checkpoint lacks", missing),
            ("weights the checkpoint has and this model lacks", unexpected),
            ("weights of another shape (checkpoint vs this model)", reshaped),
        )
        if keys
    ]
    if not problems:
        return
    differences = [
        f"model.{key}: checkpoint {saved!r}, this run {current!r}"
        for key, saved, current in _option_differences(saved_options, current_options)
    ]
    problems.append(
        "options that differ: " + "; ".join(differences) if differences else "no recorded architecture option differs"
    )
    raise CheckpointMismatchError(
        f"checkpoint {checkpoint} was trained with another architecture (use its options, or a new run directory):"
        + "".join(f"\n  {problem}" for problem in problems)
    )


def _option_differences(saved: Mapping[str, Any], current: Mapping[str, Any], prefix: str = ""):
    """``(dotted key, saved, current)`` for each option that differs, nested mappings flattened."""
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key), current.get(key)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            yield from _option_differences(old, new, f"{prefix}{key}.")
        elif old != new:
            yield f"{prefix}{key}", old, new


def vocabulary_mismatch(
    saved: torch.Tensor, current: torch.Tensor, tokenizer, checkpoint: str
) -> CheckpointMismatchError:
    """The error for a run whose data gives a diffusion vocabulary other than the checkpoint's."""
    saved_ids, current_ids = set(saved.tolist()), set(current.tolist())

    def examples(ids: set[int]) -> str:
        tokens = tokenizer.convert_ids_to_tokens(sorted(ids)[:SHOWN_TOKENS])
        return ", ".join(repr(token) for token in tokens) + (", ..." if len(ids) > SHOWN_TOKENS else "")

    only_saved, only_current = saved_ids - current_ids, current_ids - saved_ids
    return CheckpointMismatchError(
        f"checkpoint {checkpoint} diffuses over {len(saved_ids)} token ids (sha256 {tensor_digest(saved.long())}) "
        f"but this run's data gives a vocabulary of {len(current_ids)} (sha256 {tensor_digest(current.long())}): "
        f"{len(only_saved)} only in the checkpoint ({examples(only_saved)}), "
        f"{len(only_current)} only in the data ({examples(only_current)}). Use the data files the checkpoint was "
        "trained on, or set data.init_args.restrict_vocabulary false to diffuse over the checkpoint's vocabulary."
    )
