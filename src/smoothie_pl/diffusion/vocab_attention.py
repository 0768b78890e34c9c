"""The vocabulary operation, streamed over chunks of the vocabulary.

Smoothie's model input is ``softmax(mu * D0 + std * eps) @ E`` with
``D0[i, j] = -|q_i - E_j|^2 / (2 sigma0^2)``. Since ``|q_i|^2`` is constant over
``j`` it cancels in the softmax, leaving an attention read-out with query
``q_i``, keys and values ``E`` and per-logit Gaussian noise. Computing it chunk
by chunk with an online softmax, and drawing each chunk's noise on the fly,
means no ``[positions, V]`` tensor is ever held.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

DEFAULT_CHUNK_SIZE = 4096


def half_squared_norms(embeddings: torch.Tensor) -> torch.Tensor:
    """``|E_j|^2 / 2`` in fp32: the part of the distance that depends on ``j`` only."""
    return embeddings.float().pow(2).sum(-1).mul_(0.5)


def _check_chunk_size(chunk_size: int) -> None:
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive number of vocabulary rows, got {chunk_size}")


def noisy_logit_chunks(
    query: torch.Tensor,
    embeddings: torch.Tensor,
    mu: torch.Tensor,
    std: torch.Tensor,
    *,
    sigma0: float,
    generator: torch.Generator | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    compute_dtype: torch.dtype | None = None,
    half_sq_norms: torch.Tensor | None = None,
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """``(start, rows, logits)`` for each vocabulary chunk, logits ``mu * D0 + std * eps`` up to a per-row shift.

    The one place the noise is drawn: chunk ``c`` takes ``[N, chunk]`` normals
    from ``generator`` in order, so every consumer of these chunks (the model
    input, the diagnostics) sees the same noise for the same seed. ``rows`` is
    the chunk of ``E`` in ``compute_dtype``; logits are fp32.
    """
    _check_chunk_size(chunk_size)
    compute_dtype = compute_dtype or embeddings.dtype
    if half_sq_norms is None:
        half_sq_norms = half_squared_norms(embeddings)
    q = query.to(compute_dtype)
    logit_scale = (mu.float() / sigma0**2).unsqueeze(1)
    noise_scale = std.float().unsqueeze(1)
    with torch.autocast(device_type=query.device.type, enabled=False):
        for start in range(0, embeddings.shape[0], chunk_size):
            rows = embeddings[start : start + chunk_size].to(compute_dtype)
            logits = (q @ rows.T).float()
            logits.sub_(half_sq_norms[start : start + chunk_size]).mul_(logit_scale)
            noise = torch.randn(logits.shape, generator=generator, device=logits.device)
            logits.add_(noise.mul_(noise_scale))
            yield start, rows, logits


@torch.no_grad()
def noisy_vocab_attention(
    query: torch.Tensor,
    embeddings: torch.Tensor,
    mu: torch.Tensor,
    std: torch.Tensor,
    *,
    sigma0: float,
    generator: torch.Generator | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    compute_dtype: torch.dtype | None = None,
    half_sq_norms: torch.Tensor | None = None,
) -> torch.Tensor:
    """``softmax(mu * D0(query) + std * eps) @ embeddings`` for every query row.

    Args:
        query: ``[N, d]`` embeddings whose distance vectors are noised.
        embeddings: ``[V, d]`` vocabulary embedding matrix ``E``.
        mu, std: ``[N]`` schedule coefficients of each query row.
        sigma0: kernel width of the clean distance vector.
        generator: source of the noise; chunk ``c`` draws ``[N, chunk]`` normals
            in order, so a fixed seed and chunk size give a fixed result.
        compute_dtype: dtype of the two matmuls (e.g. ``torch.bfloat16``); the
            softmax statistics and the accumulator stay in fp32.
        half_sq_norms: precomputed ``|E_j|^2 / 2`` (fp32, ``[V]``).

    Returns:
        ``[N, d]`` fp32 kernel-weighted average embeddings.
    """
    n, d = query.shape
    running_max = torch.full((n, 1), float("-inf"), device=query.device)
    running_sum = torch.zeros(n, 1, device=query.device)
    acc = torch.zeros(n, d, device=query.device)
    chunks = noisy_logit_chunks(
        query, embeddings, mu, std, sigma0=sigma0, generator=generator, chunk_size=chunk_size,
        compute_dtype=compute_dtype, half_sq_norms=half_sq_norms,
    )
    with torch.autocast(device_type=query.device.type, enabled=False):
        for _, rows, logits in chunks:
            new_max = torch.maximum(running_max, logits.amax(dim=1, keepdim=True))
            rescale = torch.exp(running_max - new_max)
            probs = logits.sub_(new_max).exp_()
            running_sum.mul_(rescale).add_(probs.sum(dim=1, keepdim=True))
            acc.mul_(rescale).add_((probs.to(rows.dtype) @ rows).float())
            running_max = new_max
    return acc / running_sum


@torch.no_grad()
def nearest_rows(
    query: torch.Tensor,
    embeddings: torch.Tensor,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    half_sq_norms: torch.Tensor | None = None,
) -> torch.Tensor:
    """Index of the nearest (L2) row of ``embeddings`` for every query row, ``[N]``.

    ``argmin_j |q - E_j|^2 = argmax_j (q . E_j - |E_j|^2 / 2)``, scanned chunk by chunk.
    """
    _check_chunk_size(chunk_size)
    if half_sq_norms is None:
        half_sq_norms = half_squared_norms(embeddings)
    q = query.float()
    best_score = torch.full((q.shape[0],), float("-inf"), device=q.device)
    best_index = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    with torch.autocast(device_type=query.device.type, enabled=False):
        for start in range(0, embeddings.shape[0], chunk_size):
            scores = q @ embeddings[start : start + chunk_size].float().T
            scores.sub_(half_sq_norms[start : start + chunk_size])
            chunk_best, chunk_index = scores.max(dim=1)
            better = chunk_best > best_score
            best_score = torch.where(better, chunk_best, best_score)
            best_index = torch.where(better, chunk_index + start, best_index)
    return best_index
