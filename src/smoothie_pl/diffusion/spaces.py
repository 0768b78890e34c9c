"""Diffusion spaces: what is noised, what the model sees, and how to decode.

Every space works on predicted *embeddings*: the denoiser predicts the clean
embedding ``e0`` and the space turns it into the next model input or into
vocabulary rows. Rows index the space's own embedding matrix, which may be a
subset of the tokenizer's vocabulary (the module maps rows to token ids).
"""

from __future__ import annotations

import torch
from torch import nn

from smoothie_pl.diffusion.schedules import ArctanSchedule
from smoothie_pl.diffusion.vocab_attention import (
    DEFAULT_CHUNK_SIZE,
    VOCAB_ATTENTIONS,
    half_squared_norms,
    nearest_rows,
)


class SmoothieSpace(nn.Module):
    """Smoothie (METHOD section 3): Gaussian-kernel-smoothed distances to every vocabulary row.

    The state ``D_t = mu(t) D0 + std(t) eps`` is ``[L, V]`` per sequence but is
    never held: the model input ``softmax(D_t) E`` is streamed over vocabulary
    chunks, and so is decoding. ``vocab_attention="literal"`` swaps in the
    reference code's materialised formulation (a baseline for benchmarks).
    """

    def __init__(
        self,
        embeddings: torch.Tensor,
        schedule: ArctanSchedule | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        compute_dtype: torch.dtype | None = None,
        vocab_attention: str = "streaming",
    ) -> None:
        super().__init__()
        if vocab_attention not in VOCAB_ATTENTIONS:
            raise ValueError(f"vocab_attention must be one of {sorted(VOCAB_ATTENTIONS)}, got {vocab_attention!r}")
        self.attention = VOCAB_ATTENTIONS[vocab_attention]
        self.schedule = schedule or ArctanSchedule()
        self.sigma0 = self.schedule.sigma_min
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be a positive number of vocabulary rows, got {chunk_size}")
        self.chunk_size = chunk_size
        self.compute_dtype = compute_dtype
        self.register_buffer("embeddings", embeddings, persistent=False)
        # The matmul copy of E, cast once rather than every step.
        self.register_buffer("compute_embeddings", embeddings.to(compute_dtype or embeddings.dtype), persistent=False)
        self.register_buffer("half_sq_norms", half_squared_norms(embeddings), persistent=False)

    @property
    def vocab_size(self) -> int:
        return self.embeddings.shape[0]

    def _attend(
        self, query: torch.Tensor, mu: torch.Tensor, std: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        batch, length, dim = query.shape
        out = self.attention(
            query.reshape(-1, dim),
            self.compute_embeddings,
            mu.repeat_interleave(length),
            std.repeat_interleave(length),
            sigma0=self.sigma0,
            generator=generator,
            chunk_size=self.chunk_size,
            compute_dtype=self.compute_dtype,
            half_sq_norms=self.half_sq_norms,
        )
        return out.view(batch, length, dim)

    def noised_input(
        self,
        clean: torch.Tensor,
        t: torch.Tensor,
        generator: torch.Generator | None = None,
        noise_scale: float = 1.0,
    ) -> torch.Tensor:
        """Model input at times ``t [B]`` for clean (or predicted) embeddings ``[B, L, d]``.

        ``noise_scale`` multiplies the noise std (1 is the forward process; samplers
        may inject less noise to trade diversity for fluency).
        """
        mu, std = self.schedule.marginal(t.float())
        return self._attend(clean, mu, std * noise_scale, generator)

    def prior_input(
        self, batch: int, length: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Model input for a prior sample ``D_1 ~ N(0, prior_std^2)``: the query drops out."""
        device = self.embeddings.device
        query = torch.zeros(batch, length, self.embeddings.shape[1], device=device)
        mu = torch.zeros(batch, device=device)
        std = torch.full((batch,), self.schedule.prior_std, device=device)
        return self._attend(query, mu, std, generator)

    def decode(self, predicted: torch.Tensor) -> torch.Tensor:
        """Nearest vocabulary row (L2) of every predicted embedding, ``[B, L]``."""
        batch, length, dim = predicted.shape
        rows = nearest_rows(
            predicted.reshape(-1, dim), self.embeddings, chunk_size=self.chunk_size, half_sq_norms=self.half_sq_norms
        )
        return rows.view(batch, length)
