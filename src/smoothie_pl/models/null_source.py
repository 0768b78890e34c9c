"""The learned "no source" of classifier-free guidance."""

from __future__ import annotations

import torch
from torch import nn


class NullSource(nn.Module):
    """Replaces the encoded source of chosen rows by one learned vector, the only key left unmasked.

    Training drops sources with it (``cfg_dropout``), so the denoiser also
    learns the unconditional prediction that guidance steers away from. The
    replacement keeps the source's shape, so the denoiser sees the same
    sequence lengths (and rotary positions) with and without a source.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.vector = nn.Parameter(torch.zeros(width))

    def forward(
        self, source: torch.Tensor, source_mask: torch.Tensor, drop: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``source [B, Ls, width]``, ``source_mask [B, Ls]``, ``drop [B]`` (True: replace) -> both, replaced."""
        first_only = torch.arange(source.shape[1], device=source.device) == 0
        null = self.vector.to(source.dtype).expand_as(source)
        source = torch.where(drop[:, None, None], null, source)
        source_mask = torch.where(drop[:, None], first_only, source_mask.bool())
        return source, source_mask
