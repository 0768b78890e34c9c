"""The two extra losses that keep a trained embedding matrix ``E`` useful (METHOD section 4).

Trained only by the x0 objective, ``E`` would collapse: the nearer the
embeddings, the easier they are to predict. As in Diffusion-LM, two terms
anchor it: prior matching at t = 1 (the forward process must still end at
the prior) and a decoding cross-entropy at the smallest t (each embedding
must still decode to its own token). Both are per position, so the caller
chooses how to average them (e.g. over real tokens only). Neither holds a
``[positions, V]`` tensor.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

from smoothie_pl.diffusion.vocab_attention import distance_cross_entropy, logit_in_chunk


def prior_matching_loss(
    clean: torch.Tensor, embeddings: torch.Tensor, mu: float | torch.Tensor, sigma0: float, prior_std: float
) -> torch.Tensor:
    """``mean_j (mu D0[i, j])^2 / (2 prior_std^2)`` for every row ``i`` of ``clean [N, d]``, ``[N]``.

    That is ``KL(N(mu D0, s^2) || N(0, prior_std^2))`` per logit, less the
    terms that do not depend on ``E``. With ``a = |e|^2``, ``b_j = |E_j|^2``
    and ``c_j = e . E_j``, ``sum_j (a + b_j - 2 c_j)^2`` expands into
    ``V a^2 + sum b^2 + 2 a sum b + 4 e^T (E^T E) e - 4 a e . sum_j E_j - 4 e . sum_j b_j E_j``,
    which needs only ``d x d`` statistics of ``E`` instead of the distances.
    """
    with torch.autocast(device_type=clean.device.type, enabled=False):  # the expansion cancels large terms: fp32
        e, vocab = clean.float(), embeddings.float()
        a = e.pow(2).sum(-1)
        b = vocab.pow(2).sum(-1)
        gram = vocab.T @ vocab
        sum_of_squared_distances_squared = (
            vocab.shape[0] * a.pow(2)
            + b.pow(2).sum()
            + 2 * a * b.sum()
            + 4 * ((e @ gram) * e).sum(-1)
            - 4 * a * (e @ vocab.sum(0))
            - 4 * (e @ (b @ vocab))
        )
    mean_d0_squared = sum_of_squared_distances_squared / (vocab.shape[0] * 4 * sigma0**4)
    return mu**2 * mean_d0_squared / (2 * prior_std**2)


def decoding_cross_entropy(
    clean: torch.Tensor,
    rows: torch.Tensor,
    embeddings: torch.Tensor,
    mu: float,
    std: float,
    sigma0: float,
    seed: int,
    chunk_size: int = 4096,
) -> torch.Tensor:
    """``-log softmax(mu D0(e_i) + std eps)[rows_i]`` for every row of ``clean [N, d]``, ``[N]``.

    ``D0`` drops ``-|e_i|^2 / (2 sigma0^2)``, which is the same for every
    ``j`` and cancels. Each vocabulary chunk runs under activation
    checkpointing, so backward recomputes its logits instead of keeping them;
    the chunk starting at row ``start`` draws its noise from a generator
    seeded with ``seed + start``, so the recomputation sees the same noise.
    """
    e, vocab = clean.float(), embeddings.float()

    def chunk_terms(chunk: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-normaliser of the chunk's logits, and the true row's logit where it lies in the chunk (else 0)."""
        d0 = (e @ chunk.T - chunk.pow(2).sum(-1) / 2) / sigma0**2
        logits = mu * d0
        if std:
            generator = torch.Generator(device=e.device).manual_seed(seed + start)
            logits = logits + std * torch.randn(d0.shape, generator=generator, device=e.device)
        return logits.logsumexp(dim=1), logit_in_chunk(logits, rows, start)

    normalisers, true_logits = [], []
    with torch.autocast(device_type=clean.device.type, enabled=False):
        for start in range(0, vocab.shape[0], chunk_size):
            chunk = vocab[start : start + chunk_size]
            normaliser, true_logit = checkpoint(chunk_terms, chunk, start, use_reentrant=False)
            normalisers.append(normaliser)
            true_logits.append(true_logit)
    return torch.stack(normalisers).logsumexp(dim=0) - torch.stack(true_logits).sum(dim=0)


def position_mean(values: torch.Tensor, counted: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values [B, L]`` over all positions, or over the ``counted`` ones."""
    if counted is None:
        return values.mean()
    return (values * counted).sum() / counted.sum().clamp_min(1)


def vocabulary_rows(vocabulary: torch.Tensor, target_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of the sorted ``vocabulary`` for ``target_ids`` (flat), and which ids it holds at all (``target_ids``'s shape)."""
    flat_ids = target_ids.reshape(-1)
    rows = torch.searchsorted(vocabulary, flat_ids).clamp(max=len(vocabulary) - 1)
    return rows, (vocabulary[rows] == flat_ids).view(target_ids.shape)


class _PredictionCrossEntropy(torch.autograd.Function):
    """``distance_cross_entropy`` as an autograd function: the gradient comes from the forward pass."""

    @staticmethod
    def forward(ctx, predicted, rows, embeddings, half_sq_norms, sigma0, chunk_size):
        loss, gradient = distance_cross_entropy(
            predicted.float(), rows, embeddings, sigma0=sigma0, chunk_size=chunk_size, half_sq_norms=half_sq_norms
        )
        ctx.save_for_backward(gradient)
        ctx.input_dtype = predicted.dtype
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, loss_gradient):
        (gradient,) = ctx.saved_tensors
        return (loss_gradient[:, None] * gradient).to(ctx.input_dtype), None, None, None, None, None


def prediction_decoding_loss(
    space,
    vocabulary: torch.Tensor,
    predicted: torch.Tensor,
    target_ids: torch.Tensor,
    counted: torch.Tensor | None,
    chunk_size: int,
) -> torch.Tensor:
    """``-log softmax_j(D0(e0_hat)_j)[true token]``, averaged over the counted positions the vocabulary holds.

    It sharpens blurred predictions, which nearest-embedding decoding turns
    into the frequent short words nearest their centroid. The space's ``E`` is
    fixed here (a trained one is a detached copy), so the gradient is taken in
    the same pass as the loss (``distance_cross_entropy``).
    """
    rows, known = vocabulary_rows(vocabulary, target_ids)
    sigma0 = getattr(space, "sigma0", 1.0)
    flat = predicted.reshape(-1, predicted.shape[-1])
    per_position = _PredictionCrossEntropy.apply(flat, rows, space.embeddings, space.half_sq_norms, sigma0, chunk_size)
    return position_mean(per_position.view(target_ids.shape), known if counted is None else known & counted)


def embedding_losses(
    space,
    vocabulary: torch.Tensor,
    embedding_matrix: torch.Tensor,
    clean: torch.Tensor,
    target_ids: torch.Tensor,
    counted: torch.Tensor | None,
    generator: torch.Generator,
    chunk_size: int,
) -> torch.Tensor:
    """Prior matching at t = 1 plus decoding cross-entropy at the smallest t, for a Smoothie space.

    Both are averaged over the positions the x0 loss counts (``counted``);
    the decoding term skips target tokens outside the diffused ``vocabulary``
    (sorted token ids of the rows of ``embedding_matrix`` the space uses).
    """
    schedule, sigma0 = space.schedule, space.sigma0
    vocab = embedding_matrix[vocabulary]
    flat_clean = clean.reshape(-1, clean.shape[-1])
    mu_end, _ = schedule.marginal(torch.ones(1))
    prior = prior_matching_loss(flat_clean, vocab, mu_end.item(), sigma0, schedule.prior_std)

    rows, known = vocabulary_rows(vocabulary, target_ids)
    mu_start, std_start = schedule.marginal(torch.zeros(1))
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    decoding = decoding_cross_entropy(flat_clean, rows, vocab, mu_start.item(), std_start.item(), sigma0, seed, chunk_size)
    decoded = known if counted is None else known & counted
    return position_mean(prior.view(target_ids.shape), counted) + position_mean(decoding.view(target_ids.shape), decoded)
