"""Transformer building blocks: attention through PyTorch SDPA, post-LN and pre-RMSNorm blocks, time embedding."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

# On CPU the fused flash-attention backward is about 2x slower than the plain
# matmul path at the short lengths used here (measured: bf16, L = 64, 4 heads),
# while its forward alone is 3-4x faster (64 x 4 heads x 64 x 64, bf16 and fp32):
# the plain path where a backward may follow, flash where none can (sampling, validation).
# The plain path's bf16 kernel keeps the scores and softmax in fp32. Written out as three
# ops under bf16 autocast a demo step was 10-15 % faster, but its bf16 scores were 1.5-4.5x
# further from the float64 formula, and a long run so trained scored 42.5 validation
# SacreBLEU at 3,000 steps against 45.1 before (with weaker recasing then) at the same
# validation loss: not taken (experiments/bench/README.md).
CPU_TRAINING_ATTENTION = [SDPBackend.MATH]
CPU_INFERENCE_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]


def rotary_tables(length: int, half: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 cos and sin of position * frequency, ``[length, half]``."""
    frequencies = 10_000.0 ** (-torch.arange(half, device=device, dtype=torch.float32) / half)
    angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * frequencies
    return angles.cos(), angles.sin()


class RotaryTables:
    """One attention's rotary tables, built once and reused while they still fit.

    Kept per module rather than in a process-wide cache: a table built under
    ``torch.inference_mode()`` (``trainer.predict``, ``generate`` in a notebook)
    is an inference tensor that autograd refuses to save, so a training call
    rebuilds it instead of failing. Not a buffer: nothing to save, broadcast or cast.
    """

    def __init__(self) -> None:
        self.cos = self.sin = None

    def __call__(self, length: int, half: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if torch.compiler.is_compiling():  # traced and folded into constants instead
            return rotary_tables(length, half, device)
        cos = self.cos
        if (
            cos is None
            or cos.shape[0] < length
            or cos.shape[1] != half
            or cos.device != device
            or (cos.is_inference() and not torch.is_inference_mode_enabled())
        ):
            self.cos, self.sin = rotary_tables(length, half, device)
        return self.cos[:length], self.sin[:length]


def rotate(x: torch.Tensor, tables: RotaryTables | None = None) -> torch.Tensor:
    """Rotary position embedding of ``x [B, heads, length, head_dim]`` by position along ``length``."""
    half = x.shape[-1] // 2
    cos, sin = (tables or rotary_tables)(x.shape[-2], half, x.device)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    first, second = x[..., :half], x[..., half : 2 * half]
    rotated = torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)
    return torch.cat([rotated, x[..., 2 * half :]], dim=-1)


class Attention(nn.Module):
    """Multi-head attention; ``key_padding_mask`` is True where a key is real.

    With ``rope`` queries and keys are rotated by their own positions, so the
    scores can depend on the offset between a target and a source position:
    that makes position-aligned copying from the source easy to learn.
    """

    def __init__(self, width: int, heads: int, dropout: float, rope: bool = False) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} must be divisible by heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.rope = rope
        self.rotary_tables = RotaryTables() if rope else None
        self.query = nn.Linear(width, width)
        self.key_value = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        batch, length, width = x.shape
        q = self.query(x).view(batch, length, self.heads, -1).transpose(1, 2)
        k, v = self.key_value(context).view(batch, context.shape[1], 2, self.heads, -1).unbind(2)
        k, v = k.transpose(1, 2), v.transpose(1, 2)
        if self.rope:
            q, k = rotate(q, self.rotary_tables), rotate(k, self.rotary_tables)
        mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
        dropout = self.dropout if self.training else 0.0
        if x.device.type == "cpu":
            with sdpa_kernel(CPU_TRAINING_ATTENTION if torch.is_grad_enabled() else CPU_INFERENCE_ATTENTION):
                y = F.scaled_dot_product_attention(q, k, v, mask, dropout)
        else:
            y = F.scaled_dot_product_attention(q, k, v, mask, dropout)
        return self.out(y.transpose(1, 2).reshape(batch, length, width))


class Block(nn.Module):
    """BERT-like post-LN block: self-attention, optional cross-attention, MLP."""

    def __init__(
        self, width: int, heads: int, mlp_ratio: float, dropout: float, cross_attention: bool, rope: bool = False
    ) -> None:
        super().__init__()
        self.self_attention = Attention(width, heads, dropout, rope)
        self.self_norm = nn.LayerNorm(width)
        self.cross_attention = Attention(width, heads, dropout, rope) if cross_attention else None
        self.cross_norm = nn.LayerNorm(width) if cross_attention else None
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
        self.mlp_norm = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self.self_norm(x + self.drop(self.self_attention(x, x, padding_mask)))
        if self.cross_attention is not None:
            if context is None:
                raise ValueError("this block cross-attends to a source, but no source encoding was given")
            x = self.cross_norm(x + self.drop(self.cross_attention(x, context, context_mask)))
        return self.mlp_norm(x + self.drop(self.mlp(x)))


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))``; the hidden width is 2/3 of the plain MLP's, so both have the same size."""

    def __init__(self, width: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(2 * width * mlp_ratio / 3)
        self.gate_up = nn.Linear(width, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class PreNormBlock(nn.Module):
    """Pre-RMSNorm block with rotary positions and a SwiGLU MLP; cross-attends to the source like ``Block``.

    The stream is not normalised on the way out: follow a stack of these with
    ``final_norm("prenorm", width)``.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float, cross_attention: bool) -> None:
        super().__init__()
        self.self_norm = nn.RMSNorm(width)
        self.self_attention = Attention(width, heads, dropout, rope=True)
        self.cross_norm = nn.RMSNorm(width) if cross_attention else None
        self.cross_attention = Attention(width, heads, dropout, rope=True) if cross_attention else None
        self.mlp_norm = nn.RMSNorm(width)
        self.mlp = SwiGLU(width, mlp_ratio)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h = self.self_norm(x)
        x = x + self.drop(self.self_attention(h, h, padding_mask))
        if self.cross_attention is not None:
            if context is None:
                raise ValueError("this block cross-attends to a source, but no source encoding was given")
            x = x + self.drop(self.cross_attention(self.cross_norm(x), context, context_mask))
        return x + self.drop(self.mlp(self.mlp_norm(x)))


BLOCK_STYLES = ("postln", "prenorm")


def make_block(
    style: str, width: int, heads: int, mlp_ratio: float, dropout: float, cross_attention: bool, rope: bool
) -> nn.Module:
    """A block of ``style``: ``"postln"`` (BERT-like, RoPE if ``rope``) or ``"prenorm"`` (pre-RMSNorm, RoPE, SwiGLU)."""
    if style == "prenorm":
        return PreNormBlock(width, heads, mlp_ratio, dropout, cross_attention)
    if style == "postln":
        return Block(width, heads, mlp_ratio, dropout, cross_attention, rope)
    raise ValueError(f"block style must be one of {list(BLOCK_STYLES)}, got {style!r}")


def final_norm(style: str, width: int) -> nn.Module:
    """What a stack of ``style`` blocks needs after its last block: RMSNorm for pre-norm, nothing for post-LN."""
    return nn.RMSNorm(width) if style == "prenorm" else nn.Identity()


class TimeEmbedding(nn.Module):
    """Sinusoidal features of ``t`` in [0, 1] followed by Linear -> SiLU -> Linear."""

    def __init__(self, width: int, max_period: float = 10_000.0) -> None:
        super().__init__()
        self.width = width
        self.max_period = max_period
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.SiLU(), nn.Linear(2 * width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.width // 2
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, device=t.device) / half)
        angles = 1000.0 * t.float()[:, None] * freqs[None]
        features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
        if self.width % 2:
            features = F.pad(features, (0, 1))
        return self.mlp(features)
