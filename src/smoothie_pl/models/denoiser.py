"""The U-shaped transformer denoiser of METHOD section 6 and its source encoder."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from smoothie_pl.models.layers import BLOCK_STYLES, TimeEmbedding, final_norm, make_block

CONDITIONING_MODES = ("cross_attention", "concat")


@dataclass
class DenoiserConfig:
    """Size of the denoiser; defaults are the paper's (12 blocks, width 768, 6-layer encoder).

    ``source_encoder`` is ``"scratch"`` (a transformer over the standardised
    embeddings, as in the paper), ``"pretrained"`` (the encoder of the model the
    embeddings come from) or ``"none"`` (unconditional); ``freeze_source_encoder``
    keeps the pretrained encoder's weights fixed (no backward pass through it).
    ``rope`` adds rotary position embeddings to every attention (self and
    cross), on top of the learned absolute positions. ``block`` is the block
    style of the denoiser and the scratch encoder: ``"postln"`` (BERT-like, the
    paper's) or ``"prenorm"`` (pre-RMSNorm with RoPE and SwiGLU; ``rope`` is then always on).
    ``conditioning`` is how the denoiser reads the encoded source:
    ``"cross_attention"`` (every block, the paper's) or ``"concat"`` (self-
    attention over ``[target; source]`` with segment embeddings, output read
    at the target positions). ``self_conditioning``
    gives the denoiser a projection of a previous prediction of ``e0`` as an
    extra input (zeros when there is none).
    """

    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    encoder_depth: int = 6
    source_encoder: str = "scratch"
    freeze_source_encoder: bool = False
    rope: bool = False
    self_conditioning: bool = False
    block: str = "postln"
    conditioning: str = "cross_attention"

    def __post_init__(self) -> None:
        for name in ("width", "depth", "heads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"denoiser.{name} must be positive, got {getattr(self, name)}")
        if self.depth % 2:
            raise ValueError(f"denoiser.depth must be even (U-shaped long skips pair blocks), got {self.depth}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"denoiser.dropout must be in [0, 1), got {self.dropout}")
        if self.source_encoder not in ("scratch", "pretrained", "none"):
            raise ValueError(
                f"denoiser.source_encoder must be 'scratch', 'pretrained' or 'none', got {self.source_encoder!r}"
            )
        if self.block not in BLOCK_STYLES:
            raise ValueError(f"denoiser.block must be one of {list(BLOCK_STYLES)}, got {self.block!r}")
        if self.conditioning not in CONDITIONING_MODES:
            raise ValueError(
                f"denoiser.conditioning must be one of {list(CONDITIONING_MODES)}, got {self.conditioning!r}"
            )

    def make_block(self, cross_attention: bool):
        return make_block(
            self.block, self.width, self.heads, self.mlp_ratio, self.dropout, cross_attention, rope=self.rope
        )


class SourceEncoder(nn.Module):
    """Encodes source embeddings (already looked up in ``E``) with positions and blocks of the configured style."""

    def __init__(self, embedding_dim: int, width: int, config: DenoiserConfig, max_length: int) -> None:
        super().__init__()
        self.input = nn.Linear(embedding_dim, width)
        self.positions = nn.Embedding(max_length, width)
        self.norm = nn.LayerNorm(width)
        self.blocks = nn.ModuleList(config.make_block(cross_attention=False) for _ in range(config.encoder_depth))
        self.final_norm = final_norm(config.block, width)

    def forward(self, source_embeddings: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(source_embeddings.shape[1], device=source_embeddings.device)
        h = self.norm(self.input(source_embeddings) + self.positions(positions))
        for block in self.blocks:
            h = block(h, source_mask)
        return self.final_norm(h)


class PretrainedSourceEncoder(nn.Module):
    """The encoder of a Hugging Face model (e.g. the one ``E`` comes from), projected to the denoiser width."""

    def __init__(self, name_or_path: str, width: int, freeze: bool = False) -> None:
        super().__init__()
        from transformers import AutoModel

        self.encoder = AutoModel.from_pretrained(name_or_path)
        self.frozen = freeze
        self.encoder.requires_grad_(not freeze)
        self.output = nn.Linear(self.encoder.config.hidden_size, width)

    def train(self, mode: bool = True) -> "PretrainedSourceEncoder":
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def forward(self, source_ids: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            hidden = self.encoder(input_ids=source_ids, attention_mask=source_mask.long()).last_hidden_state
        return self.output(hidden)


class UShapedDenoiser(nn.Module):
    """Predicts the clean embeddings ``e0`` from the model input ``x_t``, the time and the source.

    The first half of the blocks push their inputs on a stack; block ``half + i``
    adds the input of block ``half - 1 - i`` (long skips). Each block has its own
    projection of the time embedding, added to the stream before the block.
    The source is read by cross-attention in every block, or (``conditioning:
    concat``) joined to the target as ``[target; source]`` with segment
    embeddings; the target goes first so that its rotary positions do not
    depend on how far the batch's sources are padded.
    """

    def __init__(self, embedding_dim: int, config: DenoiserConfig, max_length: int, max_source_length: int) -> None:
        super().__init__()
        self.config = config
        width = config.width
        self.input = nn.Linear(embedding_dim, width)
        self.previous_input = nn.Linear(embedding_dim, width) if config.self_conditioning else None
        self.positions = nn.Embedding(max_length, width)
        self.time_embedding = TimeEmbedding(width)
        self.time_projections = nn.ModuleList(nn.Linear(width, width) for _ in range(config.depth))
        self.concat = self.conditional and config.conditioning == "concat"
        self.segments = nn.Embedding(2, width) if self.concat else None
        cross_attention = self.conditional and not self.concat
        self.blocks = nn.ModuleList(config.make_block(cross_attention) for _ in range(config.depth))
        self.final_norm = final_norm(config.block, width)
        self.output = nn.Linear(width, embedding_dim)

    @property
    def conditional(self) -> bool:
        return self.config.source_encoder != "none"

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        source: torch.Tensor | None = None,
        source_mask: torch.Tensor | None = None,
        previous: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x_t [B, L, d]``, ``t [B]``, encoded ``source [B, Ls, width]`` -> ``e0 [B, L, d]``.

        ``previous`` is the self-conditioning input (a detached earlier prediction of ``e0``).
        """
        if self.conditional and source is None:
            raise ValueError("this denoiser conditions on a source, but no source encoding was given")
        length = x_t.shape[1]
        h = self.input(x_t) + self.positions(torch.arange(length, device=x_t.device))
        if self.previous_input is not None:
            h = h + self.previous_input(torch.zeros_like(x_t) if previous is None else previous)
        padding_mask = None
        if self.concat:
            h, padding_mask = self._join_source(h, source, source_mask)
            source = source_mask = None
        time = self.time_embedding(t)
        half = len(self.blocks) // 2
        skips = []
        for i, (block, time_projection) in enumerate(zip(self.blocks, self.time_projections)):
            if i < half:
                skips.append(h)
            else:
                h = h + skips.pop()
            h = block(h + time_projection(time)[:, None], padding_mask, source, source_mask)
        return self.output(self.final_norm(h[:, :length]))

    def _join_source(
        self, target: torch.Tensor, source: torch.Tensor, source_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[target; source]`` with segment embeddings added, and its key mask (every target position is real)."""
        target_segment, source_segment = self.segments.weight
        joined = torch.cat([target + target_segment, source + source_segment], dim=1)
        target_mask = torch.ones(target.shape[:2], dtype=torch.bool, device=target.device)
        if source_mask is None:
            source_mask = torch.ones(source.shape[:2], dtype=torch.bool, device=source.device)
        return joined, torch.cat([target_mask, source_mask.bool()], dim=1)
