"""The vocabulary operation as one Triton kernel: scores, Philox noise, online softmax and ``@ E`` in one pass.

The streaming PyTorch version reads and writes each ``[N, chunk]`` logit block
several times (matmul, shift, noise, max, exp, sum, cast, matmul). This
kernel keeps the block in registers: each program owns ``BLOCK_N`` query rows
and ``BLOCK_D`` output features and walks the vocabulary in ``BLOCK_V`` tiles,
summing the scores over d in ``BLOCK_K`` slices (so tiles fit shared memory at
d = 384 or 768) and drawing the noise in-kernel with Philox
(``tl.randn(seed, row * V + column)``), so nothing of size ``[N, V]`` touches
memory and no noise buffer is written.

The noise differs from the PyTorch generator's stream: the ``generator``
only supplies the Philox seed. :func:`philox_noise` materialises the very same
noise for tests. Triton is optional: importing this module works without it,
and calling the kernel without it raises a clear error.
"""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the streaming PyTorch operation is used
    triton = None

MAX_ELEMENTS = 2**31  # Philox offsets are row * V + column in int32


if triton is not None:

    @triton.jit
    def _fused_kernel(
        query, embeddings, half_sq_norms, logit_scale, noise_scale, out, n, vocab, dim, seed,
        stride_q, stride_e, stride_o,
        BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
        UPCAST: tl.constexpr,
    ):
        # Program (i, j) owns query rows block i and output features block j. The scores are
        # summed over d in BLOCK_K slices, so no tile spans the whole of d; programs of the same
        # rows recompute the same scores and (Philox by offset) the same noise.
        rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        out_features = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        row_ok, out_ok = rows < n, out_features < dim
        scale = tl.load(logit_scale + rows, mask=row_ok, other=0.0)
        std = tl.load(noise_scale + rows, mask=row_ok, other=0.0)
        running_max = tl.full([BLOCK_N], float("-inf"), tl.float32)
        running_sum = tl.zeros([BLOCK_N], tl.float32)
        acc = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
        for start in range(0, vocab, BLOCK_V):
            columns = start + tl.arange(0, BLOCK_V)
            column_ok = columns < vocab
            scores = tl.zeros([BLOCK_N, BLOCK_V], tl.float32)
            for k in range(0, dim, BLOCK_K):
                features = k + tl.arange(0, BLOCK_K)
                feature_ok = features < dim
                q = tl.load(query + rows[:, None] * stride_q + features[None, :],
                            mask=row_ok[:, None] & feature_ok[None, :], other=0.0)
                e = tl.load(embeddings + columns[:, None] * stride_e + features[None, :],
                            mask=column_ok[:, None] & feature_ok[None, :], other=0.0)
                if UPCAST:
                    q, e = q.to(tl.float32), e.to(tl.float32)
                scores += tl.dot(q, tl.trans(e), input_precision="ieee")
            norms = tl.load(half_sq_norms + columns, mask=column_ok, other=0.0)
            logits = (scores - norms[None, :]) * scale[:, None]
            logits += std[:, None] * tl.randn(seed, rows[:, None] * vocab + columns[None, :])
            logits = tl.where(column_ok[None, :], logits, float("-inf"))
            new_max = tl.maximum(running_max, tl.max(logits, 1))
            rescale = tl.exp(running_max - new_max)
            probs = tl.exp(logits - new_max[:, None])
            running_sum = running_sum * rescale + tl.sum(probs, 1)
            values = tl.load(embeddings + columns[:, None] * stride_e + out_features[None, :],
                             mask=column_ok[:, None] & out_ok[None, :], other=0.0)
            weights = probs.to(values.dtype)
            if UPCAST:
                weights, values = weights.to(tl.float32), values.to(tl.float32)
            acc = acc * rescale[:, None] + tl.dot(weights, values, input_precision="ieee")
            running_max = new_max
        tl.store(out + rows[:, None] * stride_o + out_features[None, :], acc / running_sum[:, None],
                 mask=row_ok[:, None] & out_ok[None, :])

    @triton.jit
    def _philox_kernel(out, n, vocab, seed, BLOCK: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(out + offsets, tl.randn(seed, offsets), mask=offsets < n * vocab)


def interpreted() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``).

    The interpreter (3.9.0) holds bf16 tiles as their 16-bit patterns in numpy
    ``uint16`` arrays (numpy has no bf16) and its ``tl.dot`` multiplies those
    patterns as integers: results come out around 1e8-1e10. The kernel then
    widens bf16 tiles to fp32 before each dot, which gives what a GPU's bf16
    dot with fp32 accumulation gives.
    """
    return os.environ.get("TRITON_INTERPRET") == "1"


def _require_triton(n: int, vocab: int) -> None:
    if triton is None:
        raise RuntimeError("the fused vocabulary operation needs triton (pip install triton); use 'streaming'")
    if n * vocab >= MAX_ELEMENTS:
        raise ValueError(f"fused vocabulary operation: {n} positions x {vocab} rows exceeds the 2^31 Philox offsets")


def philox_seed(generator: torch.Generator | None, device: torch.device) -> int:
    """The kernel's Philox seed, drawn from ``generator`` so a seeded run stays reproducible."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=device))


@torch.no_grad()
def fused_vocab_attention(
    query: torch.Tensor,
    embeddings: torch.Tensor,
    mu: torch.Tensor,
    std: torch.Tensor,
    *,
    sigma0: float,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    compute_dtype: torch.dtype | None = None,
    half_sq_norms: torch.Tensor | None = None,
    seed: int | None = None,
    block_n: int = 32,
    block_v: int = 64,
    block_k: int = 64,
    block_d: int = 128,
) -> torch.Tensor:
    """``softmax(mu * D0(query) + std * eps) @ embeddings`` with Philox noise, in one kernel.

    Same arguments as :func:`~smoothie_pl.diffusion.vocab_attention.noisy_vocab_attention`
    (``chunk_size`` is accepted for that common signature; the kernel tiles by
    ``block_n`` query rows, ``block_v`` vocabulary rows, ``block_k`` features
    of the scores and ``block_d`` output features, powers of two of at least
    16, so its tiles do not grow with d: at the defaults a vocabulary tile
    takes 48 KiB of shared memory in fp32 at any d). ``seed`` (default: drawn
    from ``generator``) fixes the noise.
    """
    from smoothie_pl.diffusion.vocab_attention import half_squared_norms

    n, dim = query.shape
    vocab = embeddings.shape[0]
    _require_triton(n, vocab)
    compute_dtype = compute_dtype or embeddings.dtype
    rows = embeddings.to(compute_dtype).contiguous()
    norms = (half_sq_norms if half_sq_norms is not None else half_squared_norms(embeddings)).float().contiguous()
    q = query.to(compute_dtype).contiguous()
    out = torch.empty(n, dim, device=query.device, dtype=torch.float32)
    seed = philox_seed(generator, query.device) if seed is None else seed
    block_k, block_d = (max(16, min(block, triton.next_power_of_2(dim))) for block in (block_k, block_d))
    _fused_kernel[(triton.cdiv(n, block_n), triton.cdiv(dim, block_d))](
        q, rows, norms, (mu.float() / sigma0**2).contiguous(), std.float().contiguous(), out, n, vocab, dim, seed,
        q.stride(0), rows.stride(0), out.stride(0), BLOCK_N=block_n, BLOCK_V=block_v, BLOCK_K=block_k,
        BLOCK_D=block_d, UPCAST=interpreted() and compute_dtype == torch.bfloat16,
    )
    return out


def philox_noise(n: int, vocab: int, seed: int, device: torch.device) -> torch.Tensor:
    """The ``[n, vocab]`` normals :func:`fused_vocab_attention` draws for ``seed`` (for tests and baselines)."""
    _require_triton(n, vocab)
    out = torch.empty(n, vocab, device=device)
    _philox_kernel[(triton.cdiv(n * vocab, 1024),)](out, n, vocab, seed, BLOCK=1024)
    return out
