"""The vocabulary operation, streamed over chunks of the vocabulary.

Smoothie's model input is ``softmax(mu * D0 + std * eps) @ E`` with
``D0[i, j] = -|q_i - E_j|^2 / (2 sigma0^2)``. Since ``|q_i|^2`` is constant over
``j`` it cancels in the softmax, leaving an attention read-out with query
``q_i``, keys and values ``E`` and per-logit Gaussian noise. Computing it chunk
by chunk with an online softmax, and drawing each chunk's noise on the fly,
means no ``[positions, V]`` tensor is ever held.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch

DEFAULT_CHUNK_SIZE = 4096


def half_squared_norms(embeddings: torch.Tensor) -> torch.Tensor:
    """``|E_j|^2 / 2`` in fp32: the part of the distance that depends on ``j`` only."""
    return embeddings.float().pow(2).sum(-1).mul_(0.5)


def _check_chunk_size(chunk_size: int) -> None:
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive number of vocabulary rows, got {chunk_size}")


def _add_noise_by_chunk(
    clean_logits: Callable[[int, torch.Tensor], torch.Tensor],
    embeddings: torch.Tensor,
    std: torch.Tensor,
    generator: torch.Generator | None,
    chunk_size: int,
    compute_dtype: torch.dtype,
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """``(start, rows, clean_logits(start, rows) + std * eps)`` chunk by chunk: the one place the noise is drawn.

    Chunk ``c`` takes ``[N, chunk]`` normals from ``generator`` in order, so every
    consumer (the model input, the diagnostics) sees the same noise for the same seed.
    """
    _check_chunk_size(chunk_size)
    noise_scale = std.float().unsqueeze(1)
    for start in range(0, embeddings.shape[0], chunk_size):
        rows = embeddings[start : start + chunk_size].to(compute_dtype)
        logits = clean_logits(start, rows)
        noise = torch.randn(logits.shape, generator=generator, device=logits.device)
        logits.add_(noise.mul_(noise_scale))
        yield start, rows, logits


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

    ``rows`` is the chunk of ``E`` in ``compute_dtype``; logits are fp32.
    """
    compute_dtype = compute_dtype or embeddings.dtype
    if half_sq_norms is None:
        half_sq_norms = half_squared_norms(embeddings)
    q = query.to(compute_dtype)
    logit_scale = (mu.float() / sigma0**2).unsqueeze(1)

    def distance_logits(start: int, rows: torch.Tensor) -> torch.Tensor:
        logits = (q @ rows.T).float()
        return logits.sub_(half_sq_norms[start : start + rows.shape[0]]).mul_(logit_scale)

    with torch.autocast(device_type=query.device.type, enabled=False):
        yield from _add_noise_by_chunk(distance_logits, embeddings, std, generator, chunk_size, compute_dtype)


def noisy_onehot_logit_chunks(
    tokens: torch.Tensor,
    embeddings: torch.Tensor,
    height: torch.Tensor,
    std: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    compute_dtype: torch.dtype | None = None,
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Like ``noisy_logit_chunks`` for a one-hot clean state: logit ``height`` at row ``tokens[n]``, 0 elsewhere.

    The simplex state ``mu (2K onehot - K) + std eps`` is this with ``height = 2K mu``
    up to a per-row shift, which the softmax ignores.
    """
    compute_dtype = compute_dtype or embeddings.dtype
    tokens = tokens.view(-1, 1)
    height = height.float().view(-1, 1)

    def onehot_logits(start: int, rows: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(tokens.shape[0], rows.shape[0], device=tokens.device)
        inside = (tokens >= start) & (tokens < start + rows.shape[0])
        column = (tokens - start).clamp(0, rows.shape[0] - 1)
        return logits.scatter_(1, column, height * inside)

    with torch.autocast(device_type=tokens.device.type, enabled=False):
        yield from _add_noise_by_chunk(onehot_logits, embeddings, std, generator, chunk_size, compute_dtype)


@torch.no_grad()
def softmax_readout(chunks: Iterable[tuple[int, torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """``softmax(logits) @ E`` from ``(start, rows, logits)`` chunks, by online softmax (fp32 statistics)."""
    running_max = running_sum = acc = None
    for _, rows, logits in chunks:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            if acc is None:
                running_max = torch.full((logits.shape[0], 1), float("-inf"), device=logits.device)
                running_sum = torch.zeros(logits.shape[0], 1, device=logits.device)
                acc = torch.zeros(logits.shape[0], rows.shape[1], device=logits.device)
            new_max = torch.maximum(running_max, logits.amax(dim=1, keepdim=True))
            rescale = torch.exp(running_max - new_max)
            probs = logits.sub_(new_max).exp_()
            running_sum.mul_(rescale).add_(probs.sum(dim=1, keepdim=True))
            acc.mul_(rescale).add_((probs.to(rows.dtype) @ rows).float())
            running_max = new_max
    return acc / running_sum


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
    return softmax_readout(
        noisy_logit_chunks(
            query, embeddings, mu, std, sigma0=sigma0, generator=generator, chunk_size=chunk_size,
            compute_dtype=compute_dtype, half_sq_norms=half_sq_norms,
        )
    )


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
