"""The vocabulary operation as one Triton kernel: scores, Philox noise, online softmax and ``@ E`` in one pass.

The streaming PyTorch version reads and writes each ``[N, chunk]`` logit block
several times (matmul, shift, noise, max, exp, sum, cast, matmul). This
kernel keeps the block in registers: each program owns ``BLOCK_N`` query rows
and walks the vocabulary in ``BLOCK_V`` tiles, drawing the noise in-kernel
with Philox (``tl.randn(seed, row * V + column)``), so nothing of size
``[N, V]`` touches memory and no noise buffer is written.

The noise differs from the PyTorch generator's stream: the ``generator``
only supplies the Philox seed. :func:`philox_noise` materialises the very same
noise for tests. Triton is optional: importing this module works without it,
and calling the kernel without it raises a clear error.
"""

from __future__ import annotations

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
        BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        features = tl.arange(0, BLOCK_D)
        row_ok, feature_ok = rows < n, features < dim
        q = tl.load(
            query + rows[:, None] * stride_q + features[None, :], mask=row_ok[:, None] & feature_ok[None, :], other=0.0
        )
        scale = tl.load(logit_scale + rows, mask=row_ok, other=0.0)
        std = tl.load(noise_scale + rows, mask=row_ok, other=0.0)
        running_max = tl.full([BLOCK_N], float("-inf"), tl.float32)
        running_sum = tl.zeros([BLOCK_N], tl.float32)
        acc = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
        for start in range(0, vocab, BLOCK_V):
            columns = start + tl.arange(0, BLOCK_V)
            column_ok = columns < vocab
            e = tl.load(
                embeddings + columns[:, None] * stride_e + features[None, :],
                mask=column_ok[:, None] & feature_ok[None, :], other=0.0,
            )
            norms = tl.load(half_sq_norms + columns, mask=column_ok, other=0.0)
            logits = (tl.dot(q, tl.trans(e)) - norms[None, :]) * scale[:, None]
            logits += std[:, None] * tl.randn(seed, rows[:, None] * vocab + columns[None, :])
            logits = tl.where(column_ok[None, :], logits, float("-inf"))
            new_max = tl.maximum(running_max, tl.max(logits, 1))
            rescale = tl.exp(running_max - new_max)
            probs = tl.exp(logits - new_max[:, None])
            running_sum = running_sum * rescale + tl.sum(probs, 1)
            acc = acc * rescale[:, None] + tl.dot(probs.to(e.dtype), e)
            running_max = new_max
        tl.store(out + rows[:, None] * stride_o + features[None, :], acc / running_sum[:, None],
                 mask=row_ok[:, None] & feature_ok[None, :])

    @triton.jit
    def _philox_kernel(out, n, vocab, seed, BLOCK: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(out + offsets, tl.randn(seed, offsets), mask=offsets < n * vocab)


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
) -> torch.Tensor:
    """``softmax(mu * D0(query) + std * eps) @ embeddings`` with Philox noise, in one kernel.

    Same arguments as :func:`~smoothie_pl.diffusion.vocab_attention.noisy_vocab_attention`
    (``chunk_size`` is accepted for that common signature; the kernel tiles by
    ``block_n`` query rows and ``block_v`` vocabulary rows, powers of two of at
    least 16). ``seed`` (default: drawn from ``generator``) fixes the noise.
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
    block_d = max(16, triton.next_power_of_2(dim))
    _fused_kernel[(triton.cdiv(n, block_n),)](
        q, rows, norms, (mu.float() / sigma0**2).contiguous(), std.float().contiguous(), out, n, vocab, dim, seed,
        q.stride(0), rows.stride(0), out.stride(0), BLOCK_N=block_n, BLOCK_V=block_v, BLOCK_D=block_d,
    )
    return out


def philox_noise(n: int, vocab: int, seed: int, device: torch.device) -> torch.Tensor:
    """The ``[n, vocab]`` normals :func:`fused_vocab_attention` draws for ``seed`` (for tests and baselines)."""
    _require_triton(n, vocab)
    out = torch.empty(n, vocab, device=device)
    _philox_kernel[(triton.cdiv(n * vocab, 1024),)](out, n, vocab, seed, BLOCK=1024)
    return out
