"""SmoothieModule's option groups (typed, each checking its own fields) and the checks that span several options.

A group's ranges are declared once, on its fields (``allowed.ranged``):
its ``__post_init__`` and the start-up checks (``config_checks.RULES``) both read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from smoothie_pl.allowed import OptionGroup, above, at_least, each, fraction, one_of, ranged
from smoothie_pl.arguments import options_of
from smoothie_pl.diffusion import SPACES, build_sampler
from smoothie_pl.diffusion.samplers import SAMPLERS, PowerGrid, Sampler
from smoothie_pl.metrics import METRIC_SETS
from smoothie_pl.models import DenoiserConfig
from smoothie_pl.precision import VOCAB_DTYPES

DTYPES = (*VOCAB_DTYPES, "auto")
"""The names ``vocab_dtype`` takes: a dtype, or ``"auto"`` for the fastest on the device."""


@dataclass(frozen=True)
class SamplingConfig(OptionGroup):
    """How targets are generated (``SmoothiePipeline``): the sampler and what is done around it.

    ``noise_scale`` multiplies the injected noise (< 1: less diverse, more
    fluent); ``grid_power`` bends the time grid, ``t_k = (1 - k / N) ** p``
    (1 is the paper's uniform grid; above 1 puts more steps at small t); ``guidance_weight`` needs a model trained with ``cfg_dropout``;
    ``clamp`` snaps predictions to vocabulary rows; ``mbr_candidates`` samples
    per source, chosen among by ``mbr_utility``; ``recase`` restores capitals
    (``text.recase``: from the source, then the training targets' casing);
    ``collapse_repeats`` keeps one word of each run of equal words in the decoded text.
    """

    argument = "sampling"
    sampler: str = ranged("renoise", one_of(SAMPLERS))
    steps: int = ranged(200, at_least(1))
    noise_scale: float = ranged(1.0, at_least(0))
    grid_power: float = ranged(1.0, above(0))
    guidance_weight: float = 0.0
    clamp: bool = False
    mbr_candidates: int = ranged(1, at_least(1))
    mbr_utility: str = ranged("bleu", one_of(("bleu", "rougeL")))
    recase: bool = False
    collapse_repeats: bool = False

    def build_sampler(self) -> Sampler:
        grid = "uniform" if self.grid_power == 1 else PowerGrid(self.grid_power)
        return build_sampler(self.sampler, steps=self.steps, noise_scale=self.noise_scale, grid=grid)

    def pipeline_options(self) -> dict[str, Any]:
        """The rest, as ``SmoothiePipeline`` takes them."""
        keys = ("guidance_weight", "clamp", "mbr_candidates", "mbr_utility", "recase", "collapse_repeats")
        return {key: getattr(self, key) for key in keys}


@dataclass(frozen=True)
class OptimConfig(OptionGroup):
    """AdamW, with a linear warm-up from ``warmup_start_lr`` to ``lr`` over ``warmup_steps`` (METHOD section 7).

    The paper then holds ``lr``; ``decay_steps > 0`` instead lowers it linearly
    from the end of the warm-up to ``final_lr`` at step ``decay_steps`` (and
    holds ``final_lr`` after): a short run ends on small steps, not mid-stride.
    """

    argument = "optim"
    lr: float = ranged(2e-4, above(0))
    betas: tuple[float, float] = ranged((0.9, 0.98), each(fraction()))
    eps: float = ranged(1e-6, above(0))
    weight_decay: float = ranged(0.01, at_least(0))
    warmup_steps: int = ranged(5000, at_least(0))
    warmup_start_lr: float = ranged(1e-8, at_least(0))
    decay_steps: int = ranged(0, at_least(0))
    final_lr: float = ranged(0.0, at_least(0))


@dataclass(frozen=True)
class EvalConfig(OptionGroup):
    """What ``smoothie test`` scores (a set of ``metrics.METRIC_SETS`` with its options) and ``predict`` writes."""

    argument = "evaluation"
    metric_set: str = ranged("demo", one_of(METRIC_SETS))
    metric_options: dict | None = None
    predict_candidates: bool = False


OPTION_GROUPS = (SamplingConfig, OptimConfig, EvalConfig)


def option_groups(**groups) -> dict[str, Any]:
    """Each group (``denoiser``, ``sampling``, ...) as its dataclass, given it or its plain dict (a checkpoint's)."""
    classes = {"denoiser": DenoiserConfig, **{group.argument: group for group in OPTION_GROUPS}}
    return {name: options_of(classes[name], value, name) for name, value in groups.items()}


def check_model_options(
    space: str,
    token_head: str | None,
    vocab_attention: str,
    train_embeddings: bool,
    target_length: int,
    source_length: int,
    vocab_dtype: str,
    cfg_dropout: float,
    sampling: SamplingConfig,
    denoiser: DenoiserConfig,
    source_embedding: str | None = None,
    optim: OptimConfig | None = None,
    length_from_source: int | None = None,
) -> None:
    """Raise ``ValueError`` naming the option when a combination cannot work."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {sorted(SPACES)}, got {space!r}")
    if token_head is not None and space != "simplex":
        raise ValueError(f"token_head is an option of the simplex space, got space={space!r}")
    if vocab_attention != "streaming" and space != "smoothie":
        raise ValueError(f"vocab_attention={vocab_attention!r} is an option of the smoothie space, got space={space!r}")
    if train_embeddings and space != "smoothie":
        # Its extra losses are written in Smoothie's distances (METHOD section 4).
        raise ValueError(f"train_embeddings needs space='smoothie', got space={space!r}")
    if target_length <= 0 or source_length <= 0:
        raise ValueError(f"target_length and source_length must be positive, got {target_length}, {source_length}")
    if vocab_dtype not in DTYPES:
        raise ValueError(f"vocab_dtype must be one of {sorted(DTYPES)}, got {vocab_dtype!r}")
    if not 0.0 <= cfg_dropout < 1.0:
        raise ValueError(f"cfg_dropout must be in [0, 1), got {cfg_dropout}")
    if cfg_dropout > 0 and denoiser.source_encoder == "none":
        raise ValueError("cfg_dropout drops the source, but denoiser.source_encoder is 'none' (unconditional)")
    copying = [name for name in ("source_skip", "source_pointer") if getattr(denoiser, name)]
    if copying and source_embedding is not None:
        raise ValueError(
            f"denoiser.{copying[0]} copies source tokens into the target's embedding, but source_embedding is "
            f"{source_embedding!r}: leave it unset"
        )
    if length_from_source is not None and (length_from_source < 0 or denoiser.source_encoder == "none"):
        raise ValueError(
            f"length_from_source must be >= 0 and needs a source (denoiser.source_encoder is "
            f"{denoiser.source_encoder!r}), got {length_from_source}"
        )
    if optim is not None and 0 < optim.decay_steps <= optim.warmup_steps:
        raise ValueError(
            f"optim.decay_steps {optim.decay_steps} must be 0 (no decay) or above "
            f"optim.warmup_steps {optim.warmup_steps}: the decay starts where the warm-up ends"
        )
    if sampling.guidance_weight != 0 and cfg_dropout == 0:
        raise ValueError(
            f"sampling.guidance_weight {sampling.guidance_weight} needs a model trained with cfg_dropout > 0: "
            "without it the model has no unconditional prediction to guide away from"
        )
