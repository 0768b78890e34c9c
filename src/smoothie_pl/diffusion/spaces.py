"""Diffusion spaces: what is noised, what the model sees, and how to decode (METHOD section 5).

Every space works on predicted *embeddings*: the denoiser predicts the clean
embedding ``e0`` and the space turns it into its state, the next model input
or vocabulary rows. Rows index the space's own embedding matrix, which may be
a subset of the tokenizer's vocabulary (the module maps rows to token ids).

Two paths share one contract:

- streaming (training and the re-noise sampler): ``noised_input``,
  ``renoise_input`` and ``prior_input`` go straight to the model input; the
  Smoothie and simplex spaces never hold a ``[B, L, V]`` tensor on it.
  Each takes ``live [B, L]`` (True where the input is needed; ``None``: all
  positions): the other positions' input is zero, and the Smoothie and simplex
  spaces draw no noise and stream no vocabulary pass for them (a batch's pairs
  past their own length, with ``length_from_source``; the simplex still
  decodes every position before it re-noises).
- full state (DDIM, DDPM, SDE): ``prior_state``, ``clean_state`` and
  ``state_input``; the state is ``[B, L, V]`` for Smoothie and the simplex,
  which is fine for ablations at demo sizes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from smoothie_pl.diffusion.embedding_losses import position_mean
from smoothie_pl.diffusion.schedules import ArctanSchedule, Schedule, SdSchedule, TessSchedule
from smoothie_pl.diffusion.vocab_attention import (
    DEFAULT_CHUNK_SIZE,
    VOCAB_ATTENTIONS,
    half_squared_norms,
    nearest_rows,
    noisy_onehot_logit_chunks,
    softmax_readout,
)


def zero_outside(x: torch.Tensor, live: torch.Tensor | None) -> torch.Tensor:
    """``x [B, L, d]`` with the positions where ``live [B, L]`` is False set to zero (``live`` None: ``x``)."""
    return x if live is None else x.masked_fill(~live[..., None], 0.0)


def _select_live(live: torch.Tensor | None, *per_position: torch.Tensor) -> tuple[torch.Tensor | None, tuple]:
    """Flat indices ``[n]`` of the live positions of ``live [B, L]`` (``None`` for all) and each flat
    ``[B * L, ...]`` tensor of ``per_position`` cut to those rows."""
    if live is None:
        return None, per_position
    rows = live.reshape(-1).nonzero().squeeze(1)
    return rows, tuple(values[rows] for values in per_position)


def _at_rows(values: torch.Tensor, rows: torch.Tensor | None, total: int) -> torch.Tensor:
    """``values [n, d]`` placed at flat positions ``rows`` of ``total``, zeros elsewhere (``rows`` None: as given)."""
    return values if rows is None else values.new_zeros(total, values.shape[1]).index_copy_(0, rows, values)


class DiffusionSpace(nn.Module):
    """What every space shares: the embedding matrix ``E``, a schedule, nearest-row decoding."""

    default_schedule: type[Schedule]

    def __init__(
        self,
        embeddings: torch.Tensor,
        schedule: Schedule | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        compute_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.schedule = schedule or self.default_schedule()
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

    @property
    def state_width(self) -> int:
        """Last dimension of the full state: ``V`` for the vocabulary spaces."""
        return self.vocab_size

    def _coefficients(self, t: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``mu, std`` of times ``t [B]`` repeated for each of ``length`` positions, ``[B * length]``."""
        mu, std = self.schedule.marginal(t.float())
        return mu.repeat_interleave(length), std.repeat_interleave(length)

    def nearest(self, predicted: torch.Tensor, exact: bool = True) -> torch.Tensor:
        """Nearest vocabulary row (L2) of every embedding ``[..., d]`` (``[B, L, d]`` or ``[N, d]``), ``[...]``.

        ``exact=False`` scans the compute copy of ``E`` (bf16 where the space
        computes in bf16): a near-tie may go to the other row.
        """
        embeddings = self.embeddings if exact else self.compute_embeddings
        rows = nearest_rows(
            predicted.reshape(-1, predicted.shape[-1]), embeddings, chunk_size=self.chunk_size,
            half_sq_norms=self.half_sq_norms,
        )  # fmt: skip
        return rows.view(predicted.shape[:-1])

    def decode(self, predicted: torch.Tensor, exact: bool = True) -> torch.Tensor:
        """Vocabulary rows of predicted embeddings ``[..., d]``, ``[...]`` (``exact``: see ``nearest``)."""
        return self.nearest(predicted, exact)

    def noised_input(
        self,
        clean: torch.Tensor,
        t: torch.Tensor,
        generator: torch.Generator | None = None,
        noise_scale: float = 1.0,
        live: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Model input ``[B, L, d]`` at times ``t [B]`` for clean embeddings ``[B, L, d]`` (training)."""
        raise NotImplementedError

    def prior_input(
        self, batch: int, length: int, generator: torch.Generator | None = None, live: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Model input ``[B, L, d]`` of a prior sample."""
        raise NotImplementedError

    def clean_state(self, predicted: torch.Tensor) -> torch.Tensor:
        """The full clean state of predicted embeddings, ``[B, L, state_width]``."""
        raise NotImplementedError

    def renoise_input(
        self,
        predicted: torch.Tensor,
        t: torch.Tensor,
        generator: torch.Generator | None,
        noise_scale: float = 1.0,
        live: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The re-noise sampler's step: the model input at ``t`` drawn afresh around a prediction."""
        return self.noised_input(predicted, t, generator, noise_scale, live)

    def prior_state(self, batch: int, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A full-state sample at t = 1, ``N(0, prior_std^2)`` of shape ``[B, L, state_width]``."""
        shape = (batch, length, self.state_width)
        noise = torch.randn(shape, generator=generator, device=self.embeddings.device)
        return noise * self.schedule.prior_std

    def state_input(self, state: torch.Tensor) -> torch.Tensor:
        """Model input of a full state: ``softmax(state) E`` for the vocabulary spaces."""
        return torch.softmax(state.float(), dim=-1) @ self.embeddings.float()

    def token_loss(
        self, predicted: torch.Tensor, clean: torch.Tensor, counted: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """An extra training loss of the space over the ``counted`` positions (``None``: all); ``None``: none."""
        return None


class SmoothieSpace(DiffusionSpace):
    """Smoothie (METHOD section 3): Gaussian-kernel-smoothed distances to every vocabulary row.

    The state ``D_t = mu(t) D0 + std(t) eps`` is ``[L, V]`` per sequence but is
    never held on the streaming path: the model input ``softmax(D_t) E`` is
    streamed over vocabulary chunks, and so is decoding. ``vocab_attention="literal"``
    swaps in the reference code's materialised formulation (the benchmarks' baseline).
    """

    default_schedule = ArctanSchedule

    def __init__(self, *args, vocab_attention: str = "streaming", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if vocab_attention not in VOCAB_ATTENTIONS:
            raise ValueError(f"vocab_attention must be one of {sorted(VOCAB_ATTENTIONS)}, got {vocab_attention!r}")
        self.attention = VOCAB_ATTENTIONS[vocab_attention]

    @property
    def sigma0(self) -> float:
        """Kernel width of the clean distance vector: the schedule's ``sigma_min`` (1.5 in the paper)."""
        return getattr(self.schedule, "sigma_min", ArctanSchedule.sigma_min)

    def _attend(
        self,
        query: torch.Tensor,
        mu: torch.Tensor,
        std: torch.Tensor,
        generator: torch.Generator | None,
        live: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch, length, dim = query.shape
        rows, (query, mu, std) = _select_live(live, query.reshape(-1, dim), mu, std)
        out = self.attention(
            query,
            self.compute_embeddings,
            mu,
            std,
            sigma0=self.sigma0,
            generator=generator,
            chunk_size=self.chunk_size,
            compute_dtype=self.compute_dtype,
            half_sq_norms=self.half_sq_norms,
        )
        return _at_rows(out, rows, batch * length).view(batch, length, dim)

    def noised_input(
        self,
        clean: torch.Tensor,
        t: torch.Tensor,
        generator: torch.Generator | None = None,
        noise_scale: float = 1.0,
        live: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Model input at times ``t [B]`` for clean (or predicted) embeddings ``[B, L, d]``.

        ``noise_scale`` multiplies the noise std (1 is the forward process; samplers
        may inject less noise to trade diversity for fluency).
        """
        mu, std = self._coefficients(t, clean.shape[1])
        return self._attend(clean, mu, std * noise_scale, generator, live)

    def prior_input(
        self, batch: int, length: int, generator: torch.Generator | None = None, live: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Model input for a prior sample ``D_1 ~ N(0, prior_std^2)``: the query drops out."""
        device = self.embeddings.device
        query = torch.zeros(batch, length, self.embeddings.shape[1], device=device)
        mu = torch.zeros(batch * length, device=device)
        std = torch.full((batch * length,), self.schedule.prior_std, device=device)
        return self._attend(query, mu, std, generator, live)

    def clean_state(self, predicted: torch.Tensor) -> torch.Tensor:
        """``D0 = -|e - E_j|^2 / (2 sigma0^2)``, the full ``[B, L, V]`` distance state."""
        squared = (
            predicted.float().pow(2).sum(-1, keepdim=True)
            - 2 * predicted.float() @ self.embeddings.float().T
            + 2 * self.half_sq_norms
        )
        return -squared.clamp_min(0) / (2 * self.sigma0**2)


class GaussianEmbeddingSpace(DiffusionSpace):
    """Gaussian noise on the embeddings themselves: the state is the model input, ``[B, L, d]``."""

    default_schedule = SdSchedule

    @property
    def state_width(self) -> int:
        return self.embeddings.shape[1]

    def noised_input(
        self,
        clean: torch.Tensor,
        t: torch.Tensor,
        generator: torch.Generator | None = None,
        noise_scale: float = 1.0,
        live: torch.Tensor | None = None,
    ) -> torch.Tensor:
        mu, std = self.schedule.marginal(t.float())
        noise = torch.randn(clean.shape, generator=generator, device=clean.device)
        return zero_outside(mu.view(-1, 1, 1) * clean.float() + (std * noise_scale).view(-1, 1, 1) * noise, live)

    def prior_input(
        self, batch: int, length: int, generator: torch.Generator | None = None, live: torch.Tensor | None = None
    ) -> torch.Tensor:
        return zero_outside(self.prior_state(batch, length, generator), live)

    def clean_state(self, predicted: torch.Tensor) -> torch.Tensor:
        return predicted.float()

    def state_input(self, state: torch.Tensor) -> torch.Tensor:
        return state


class SimplexSpace(DiffusionSpace):
    """TESS's simplex: the state is ``K (2 onehot - 1)`` over the vocabulary, noised like Smoothie's.

    Simplex diffusion is Smoothie with a trivial metric: the model input is
    ``softmax(D_t) E``, streamed with the same online softmax, and the re-noise
    sampler re-noises from the one-hot of the decoded tokens. ``token_head``
    adds a token classifier on the predicted embedding, trained with
    cross-entropy and used for decoding: ``"linear"`` (a ``Linear(d, V)``) or
    ``"tied"`` (logits ``e0 . E_j``); ``None`` decodes by nearest embedding.
    The simplex value ``K`` is the TESS schedule's ``scale`` (5).
    """

    default_schedule = TessSchedule

    def __init__(
        self,
        embeddings: torch.Tensor,
        schedule: Schedule | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        compute_dtype: torch.dtype | None = None,
        token_head: str | None = None,
    ) -> None:
        super().__init__(embeddings, schedule, chunk_size, compute_dtype)
        if token_head not in (None, "linear", "tied"):
            raise ValueError(f"token_head must be null, 'linear' or 'tied', got {token_head!r}")
        self.token_head = token_head
        self.head = nn.Linear(embeddings.shape[1], embeddings.shape[0]) if token_head == "linear" else None

    @property
    def simplex_value(self) -> float:
        """``K``: the clean state is ``+K`` at the token and ``-K`` elsewhere; the prior std."""
        return self.schedule.prior_std

    def logits(self, predicted: torch.Tensor) -> torch.Tensor:
        """Token logits ``[B, L, V]`` of the head."""
        if self.head is not None:
            return self.head(predicted)
        return predicted @ self.embeddings.to(predicted.dtype).T

    def decode(self, predicted: torch.Tensor, exact: bool = True) -> torch.Tensor:
        if self.token_head is None:
            return self.nearest(predicted, exact)
        return self.logits(predicted).argmax(-1)

    def token_loss(self, predicted, clean, counted=None):
        if self.token_head is None:
            return None
        per_position = F.cross_entropy(self.logits(predicted).transpose(1, 2).float(), self.nearest(clean), reduction="none")
        return position_mean(per_position, counted)

    def _onehot_input(
        self,
        tokens: torch.Tensor,
        mu: torch.Tensor,
        std: torch.Tensor,
        generator: torch.Generator | None,
        live: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch, length = tokens.shape
        rows, (tokens, mu, std) = _select_live(live, tokens.flatten(), mu, std)
        chunks = noisy_onehot_logit_chunks(
            tokens,
            self.compute_embeddings,
            2 * self.simplex_value * mu,
            std,
            generator=generator,
            chunk_size=self.chunk_size,
            compute_dtype=self.compute_dtype,
        )
        return _at_rows(softmax_readout(chunks), rows, batch * length).view(batch, length, -1)

    def noised_input(
        self,
        clean: torch.Tensor,
        t: torch.Tensor,
        generator: torch.Generator | None = None,
        noise_scale: float = 1.0,
        live: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Model input at ``t`` for clean embeddings (rows of ``E``: their nearest row is their token)."""
        mu, std = self._coefficients(t, clean.shape[1])
        return self._onehot_input(self.nearest(clean), mu, std * noise_scale, generator, live)

    def renoise_input(
        self,
        predicted: torch.Tensor,
        t: torch.Tensor,
        generator: torch.Generator | None,
        noise_scale: float = 1.0,
        live: torch.Tensor | None = None,
    ) -> torch.Tensor:
        mu, std = self._coefficients(t, predicted.shape[1])
        return self._onehot_input(self.decode(predicted), mu, std * noise_scale, generator, live)

    def prior_input(
        self, batch: int, length: int, generator: torch.Generator | None = None, live: torch.Tensor | None = None
    ) -> torch.Tensor:
        device = self.embeddings.device
        tokens = torch.zeros(batch, length, dtype=torch.long, device=device)
        zeros = torch.zeros(batch * length, device=device)
        return self._onehot_input(tokens, zeros, zeros + self.schedule.prior_std, generator, live)

    def clean_state(self, predicted: torch.Tensor) -> torch.Tensor:
        """``K (2 onehot - 1)`` of the decoded tokens, ``[B, L, V]``."""
        onehot = F.one_hot(self.decode(predicted), self.vocab_size).float()
        return self.simplex_value * (2 * onehot - 1)


SPACES: dict[str, type[DiffusionSpace]] = {
    "smoothie": SmoothieSpace,
    "gaussian": GaussianEmbeddingSpace,
    "simplex": SimplexSpace,
}
