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

from smoothie_pl.diffusion.fused_vocab_attention import fused_vocab_attention

DEFAULT_CHUNK_SIZE = 1024
"""Vocabulary rows per step. Small ``[N, chunk]`` buffers stay in cache: on this project's
2-core CPU, chunks of 256 to 1024 rows were fastest at 2,048 and 8,192 positions, and 1024
was 1.5x faster than 4096 at 2,048 positions."""
MIN_REPEATS = 0.25
"""Share the distance matmul among equal query rows only where at least this fraction repeat:
finding them costs about 1/40 of the matmul it saves at 4,500 rows."""
LOG_PROB_FLOOR = -80.0
"""Shifted logits are clamped here before ``exp``: ``e^-80 < 2e-35`` is nothing next to
the row's largest term (``e^0``), and CPU ``exp`` is ~50x slower on inputs that underflow,
which at small ``t`` is nearly every vocabulary entry."""


def half_squared_norms(embeddings: torch.Tensor) -> torch.Tensor:
    """``|E_j|^2 / 2`` in fp32: the part of the distance that depends on ``j`` only."""
    return embeddings.float().pow(2).sum(-1).mul_(0.5)


def logit_in_chunk(logits: torch.Tensor, rows: torch.Tensor, start: int) -> torch.Tensor:
    """``logits[i, rows[i] - start]`` where row ``rows[i]`` lies in the chunk starting at ``start``, else 0; ``[N]``."""
    inside = (rows >= start) & (rows < start + logits.shape[1])
    local = (rows - start).clamp(0, logits.shape[1] - 1)
    return torch.where(inside, logits.gather(1, local[:, None]).squeeze(1), 0.0)


def _check_chunk_size(chunk_size: int) -> None:
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive number of vocabulary rows, got {chunk_size}")


def _chunk_view(buffer: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    """A contiguous ``[rows, columns]`` view of the front of a flat buffer (the last, narrower chunk too)."""
    return buffer[: rows * columns].view(rows, columns)


def _product_buffer(q: torch.Tensor, width: int) -> torch.Tensor | None:
    """A flat buffer for ``q @ rows.T`` in ``q``'s dtype, or ``None`` for fp32 ``q`` (the product is the scores)."""
    return None if q.dtype == torch.float32 else torch.empty(q.shape[0] * width, dtype=q.dtype, device=q.device)


def _fill_scores(
    q: torch.Tensor, rows: torch.Tensor, half_sq_norms: torch.Tensor, out: torch.Tensor, product: torch.Tensor | None
) -> None:
    """``out[i, j] = q_i . E_j - |E_j|^2 / 2`` for a chunk of rows, in fp32; the product in ``q``'s dtype."""
    if product is None:
        torch.mm(q, rows.T, out=out)
    else:
        out.copy_(torch.mm(q, rows.T, out=_chunk_view(product, *out.shape)))
    out.sub_(half_sq_norms)


def _noisy_chunks(
    fill_clean_logits: Callable[[int, torch.Tensor, torch.Tensor], None],
    n: int,
    embeddings: torch.Tensor,
    std: torch.Tensor | None,
    generator: torch.Generator | None,
    chunk_size: int,
    compute_dtype: torch.dtype,
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """``(start, rows, clean + std * eps)`` chunk by chunk: the one place the noise is drawn (none if ``std`` is ``None``).

    ``fill_clean_logits(start, rows, out)`` writes a chunk's clean logits into
    ``out`` (fp32 ``[n, chunk]``). Chunk ``c`` takes ``[n, chunk]`` normals from
    ``generator`` in order, so every consumer (the model input, the
    diagnostics) sees the same noise for the same seed, and
    :func:`chunked_noise` materialises the same draws for the literal formula.
    The logits live in one buffer reused for every chunk (a fresh ``[n, chunk]``
    tensor per chunk is allocator churn: page faults and system time), so
    consume each chunk before asking for the next.
    """
    _check_chunk_size(chunk_size)
    device = embeddings.device
    width = min(chunk_size, embeddings.shape[0])
    logits_buffer = torch.empty(n * width, device=device)
    if std is not None:
        noise_scale = std.float().unsqueeze(1)
        noise_buffer = torch.empty(n * width, device=device)
    with torch.autocast(device_type=device.type, enabled=False):
        for start in range(0, embeddings.shape[0], chunk_size):
            rows = embeddings[start : start + chunk_size].to(compute_dtype)
            logits = _chunk_view(logits_buffer, n, rows.shape[0])
            fill_clean_logits(start, rows, logits)
            if std is not None:
                noise = _chunk_view(noise_buffer, n, rows.shape[0]).normal_(generator=generator)
                logits.addcmul_(noise, noise_scale)
            yield start, rows, logits


def distinct_rows(query: torch.Tensor, repeats: float = MIN_REPEATS) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The distinct rows of ``query [N, d]`` and the index of each row among them, or ``(query, None)``.

    ``None`` unless at least a fraction ``repeats`` of the rows repeat an earlier
    one. Rows are grouped by their projection onto one direction (a sort of
    ``N`` numbers) and the grouping is checked exactly; only when two different
    rows share a projection does the row-wise ``unique`` run, which on CPU
    copies every row on its own (a quarter of a clamped sampling step at 4,096 rows).
    """
    n = query.shape[0]
    direction = torch.linspace(1.0, 2.0, query.shape[1], device=query.device, dtype=query.dtype)
    with torch.autocast(device_type=query.device.type, enabled=False):  # bf16 projections would collide
        keys, row_of = torch.unique(query @ direction, return_inverse=True)
    if keys.numel() > (1 - repeats) * n:
        return query, None
    first = torch.full_like(keys, n, dtype=torch.long).scatter_reduce_(
        0, row_of, torch.arange(n, device=query.device), "amin"
    )
    distinct = query[first]
    if torch.equal(distinct[row_of], query):
        return distinct, row_of
    distinct, row_of = torch.unique(query, dim=0, return_inverse=True)
    return (query, None) if distinct.shape[0] > (1 - repeats) * n else (distinct, row_of)


def noisy_logit_chunks(
    query: torch.Tensor,
    embeddings: torch.Tensor,
    mu: torch.Tensor,
    std: torch.Tensor | None,
    *,
    sigma0: float,
    generator: torch.Generator | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    compute_dtype: torch.dtype | None = None,
    half_sq_norms: torch.Tensor | None = None,
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """``(start, rows, logits)`` for each vocabulary chunk, logits ``mu * D0 + std * eps`` up to a per-row shift.

    ``rows`` is the chunk of ``E`` in ``compute_dtype``; logits are fp32 and
    reuse one buffer (see :func:`_noisy_chunks`); ``std=None`` draws no noise.
    Repeated query rows (clean targets in training, clamped predictions in
    sampling: a few hundred distinct tokens in a batch of thousands) share one
    row of the distance matmul (:func:`distinct_rows`); the noise stays per row.
    """
    compute_dtype = compute_dtype or embeddings.dtype
    if half_sq_norms is None:
        half_sq_norms = half_squared_norms(embeddings)
    n = query.shape[0]
    distinct, row_of = distinct_rows(query)
    q = distinct.to(compute_dtype)
    logit_scale = (mu.float() / sigma0**2).unsqueeze(1)
    width = min(chunk_size, embeddings.shape[0])
    product_buffer = _product_buffer(q, width)
    distinct_buffer = None if row_of is None else torch.empty(q.shape[0] * width, device=q.device)

    def distance_logits(start: int, rows: torch.Tensor, out: torch.Tensor) -> None:
        target = out if row_of is None else _chunk_view(distinct_buffer, q.shape[0], rows.shape[0])
        _fill_scores(q, rows, half_sq_norms[start : start + rows.shape[0]], target, product_buffer)
        if row_of is not None:
            torch.index_select(target, 0, row_of, out=out)
        out.mul_(logit_scale)

    return _noisy_chunks(distance_logits, n, embeddings, std, generator, chunk_size, compute_dtype)


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
    """Like :func:`noisy_logit_chunks` for a one-hot clean state: logit ``height`` at row ``tokens[n]``, 0 elsewhere.

    The simplex state ``mu (2K onehot - K) + std eps`` is this with ``height = 2K mu``
    up to a per-row shift, which the softmax ignores.
    """
    tokens = tokens.view(-1, 1)
    height = height.float().view(-1, 1)

    def onehot_logits(start: int, rows: torch.Tensor, out: torch.Tensor) -> None:
        inside = (tokens >= start) & (tokens < start + rows.shape[0])
        column = (tokens - start).clamp(0, rows.shape[0] - 1)
        out.zero_().scatter_(1, column, height * inside)

    return _noisy_chunks(
        onehot_logits, tokens.shape[0], embeddings, std, generator, chunk_size, compute_dtype or embeddings.dtype
    )


@torch.no_grad()
def softmax_readout(chunks: Iterable[tuple[int, torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """``softmax(logits) @ E`` from ``(start, rows, logits)`` chunks, by online softmax (fp32 statistics).

    Consumes (overwrites) each chunk's logits.
    """
    _, running_sum, acc = _online_softmax(chunks)
    return acc.div_(running_sum)


def _online_softmax(
    chunks: Iterable[tuple[int, torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Over all chunks: the logits' max ``m``, ``sum_j exp(l_j - m)`` and ``sum_j exp(l_j - m) E_j`` (fp32)."""
    running_max = running_sum = acc = probs_buffer = None
    for _, rows, logits in chunks:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            if acc is None:
                running_max = torch.full((logits.shape[0], 1), float("-inf"), device=logits.device)
                running_sum = torch.zeros(logits.shape[0], 1, device=logits.device)
                acc = torch.zeros(logits.shape[0], rows.shape[1], device=logits.device)
            new_max = torch.maximum(running_max, logits.amax(dim=1, keepdim=True))
            rescale = torch.exp(running_max - new_max)
            probs = logits.sub_(new_max).clamp_min_(LOG_PROB_FLOOR).exp_()
            running_sum.mul_(rescale).add_(probs.sum(dim=1, keepdim=True))
            acc.mul_(rescale)
            if rows.dtype == torch.float32:
                acc.addmm_(probs, rows)
            else:
                if probs_buffer is None:
                    probs_buffer = torch.empty(logits.numel(), dtype=rows.dtype, device=logits.device)
                acc.add_(_chunk_view(probs_buffer, *probs.shape).copy_(probs) @ rows)
            running_max = new_max
    return running_max, running_sum, acc


@torch.no_grad()
def distance_cross_entropy(
    query: torch.Tensor,
    targets: torch.Tensor,
    embeddings: torch.Tensor,
    *,
    sigma0: float,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    half_sq_norms: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``-log softmax_j(D0(q)_j)[target]`` for every query row, ``[N]``, and its gradient in the query, ``[N, d]``.

    With logits ``l_j = (q . E_j - |E_j|^2 / 2) / sigma0^2`` the gradient is
    ``(sum_j p_j E_j - E_target) / sigma0^2``: the softmax read-out of the
    model input, so one pass over ``E`` (two matmuls per chunk) gives both,
    and backward needs neither the ``[N, V]`` logits nor their recomputation.
    """
    true_logits = torch.zeros(query.shape[0], device=query.device)

    def recording_true_logits(chunks):
        for start, rows, logits in chunks:
            true_logits.add_(logit_in_chunk(logits, targets, start))
            yield start, rows, logits

    ones = torch.ones(query.shape[0], device=query.device)
    chunks = noisy_logit_chunks(
        query, embeddings, ones, None, sigma0=sigma0, chunk_size=chunk_size, half_sq_norms=half_sq_norms
    )
    running_max, running_sum, acc = _online_softmax(recording_true_logits(chunks))
    loss = (running_max + running_sum.log()).squeeze(1) - true_logits
    gradient = (acc.div_(running_sum) - embeddings[targets].float()).div_(sigma0**2)
    return loss, gradient


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


def chunked_noise(
    rows: int, vocab_size: int, *, generator: torch.Generator | None, chunk_size: int, device: torch.device
) -> torch.Tensor:
    """The ``[rows, V]`` noise :func:`noisy_logit_chunks` draws, materialised (chunk by chunk, in its order)."""
    _check_chunk_size(chunk_size)
    noise = torch.empty(rows, vocab_size, device=device)
    for start in range(0, vocab_size, chunk_size):
        width = min(chunk_size, vocab_size - start)
        noise[:, start : start + width] = torch.randn(rows, width, generator=generator, device=device)
    return noise


@torch.no_grad()
def literal_vocab_attention(
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
    """The paper code's formulation: materialise ``D [N, V]``, add the noise, softmax, multiply by ``E``.

    A drop-in twin of :func:`noisy_vocab_attention` (same arguments, same noise
    for the same generator and chunk size) kept as the baseline the benchmarks
    and tests measure the streaming operation against. It holds several
    ``[N, V]`` fp32 tensors, as the reference code does.
    """
    compute_dtype = compute_dtype or embeddings.dtype
    if half_sq_norms is None:
        half_sq_norms = half_squared_norms(embeddings)
    rows = embeddings.to(compute_dtype)
    with torch.autocast(device_type=query.device.type, enabled=False):
        products = (query.to(compute_dtype) @ rows.T).float()
        distances = (products - half_sq_norms - query.float().pow(2).sum(1, keepdim=True) / 2) / sigma0**2
        noise = chunked_noise(
            query.shape[0], embeddings.shape[0], generator=generator, chunk_size=chunk_size, device=query.device
        )
        logits = mu.float().unsqueeze(1) * distances + std.float().unsqueeze(1) * noise
        probs = torch.softmax(logits, dim=1)
        return (probs.to(compute_dtype) @ rows).float()


VOCAB_ATTENTIONS = {
    "streaming": noisy_vocab_attention,
    "literal": literal_vocab_attention,
    "fused": fused_vocab_attention,
}
"""The vocabulary operation by name: the library's streaming one, the literal baseline, and
the fused Triton kernel (CUDA; opt-in until it has been checked on a GPU)."""


@torch.no_grad()
def nearest_rows(
    query: torch.Tensor,
    embeddings: torch.Tensor,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    half_sq_norms: torch.Tensor | None = None,
) -> torch.Tensor:
    """Index of the nearest (L2) row of ``embeddings`` for every query row, ``[N]``.

    ``argmin_j |q - E_j|^2 = argmax_j (q . E_j - |E_j|^2 / 2)``, scanned chunk by
    chunk. The products take ``embeddings``' dtype (a bf16 copy of ``E``: 3.6x
    faster on a CPU with bf16 units, and near-ties within about 1 % of the
    distance may then go either way); the scores and ``half_sq_norms`` are fp32.
    """
    _check_chunk_size(chunk_size)
    if half_sq_norms is None:
        half_sq_norms = half_squared_norms(embeddings)
    q = query.to(embeddings.dtype)
    n, width = q.shape[0], min(chunk_size, embeddings.shape[0])
    best_score = torch.full((n,), float("-inf"), device=q.device)
    best_index = torch.zeros(n, dtype=torch.long, device=q.device)
    scores_buffer, product_buffer = torch.empty(n * width, device=q.device), _product_buffer(q, width)
    with torch.autocast(device_type=query.device.type, enabled=False):
        for start in range(0, embeddings.shape[0], chunk_size):
            rows = embeddings[start : start + chunk_size]
            scores = _chunk_view(scores_buffer, n, rows.shape[0])
            _fill_scores(q, rows, half_sq_norms[start : start + chunk_size], scores, product_buffer)
            chunk_best, chunk_index = scores.max(dim=1)
            better = chunk_best > best_score
            best_score = torch.where(better, chunk_best, best_score)
            best_index = torch.where(better, chunk_index + start, best_index)
    return best_index
