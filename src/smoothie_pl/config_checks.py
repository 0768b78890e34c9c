"""Start-up checks of a run's configuration, before any data is read or any model is built.

One table says, for every numeric or named option whose wrong values the
types cannot catch, what it allows; the option groups (``options.SamplingConfig``,
...) bring the rules their fields check themselves. ``config_errors`` lists
every violation with its key, its value and the allowed range. Options that
are absent (another data module) or ``None`` are not checked. The schedule is a dict option whose
parameters depend on its name, so it is checked by building it: each schedule
class states its own ranges.
"""

from __future__ import annotations

from typing import Any

from smoothie_pl.allowed import Allowed, above, at_least, fraction, local_or_hub_model, one_of, only_with
from smoothie_pl.arguments import unknown_keys, wrong_types
from smoothie_pl.callbacks.prediction_writer import IF_EXISTS
from smoothie_pl.diffusion import SPACES, build_schedule
from smoothie_pl.models import DenoiserConfig
from smoothie_pl.options import DTYPES, OPTION_GROUPS

RULES: dict[str, Allowed] = {
    "model.target_length": at_least(1),
    "model.source_length": at_least(1),
    "model.space": one_of(SPACES),
    "model.embedding": local_or_hub_model(),
    "model.source_embedding": local_or_hub_model(),
    "model.sampling.guidance_weight": only_with(
        "model.cfg_dropout", lambda p: p > 0, "> 0 (guidance needs a model trained with it)", 0
    ),
    "model.cfg_dropout": Allowed(
        "in [0, 1), and 0 when model.denoiser.source_encoder is 'none' (no source to drop)",
        lambda value, lookup: 0 <= value < 1 and (value == 0 or lookup("model.denoiser.source_encoder") != "none"),
    ),
    "model.token_head": only_with("model.space", lambda space: space == "simplex", "is 'simplex'", None),
    "model.train_embeddings": only_with("model.space", lambda space: space == "smoothie", "is 'smoothie'", False),
    "model.vocab_attention": Allowed(
        "one of ['fused', 'literal', 'streaming']; not 'streaming' only when model.space is 'smoothie'",
        lambda value, lookup: value in ("fused", "literal", "streaming")
        and (value == "streaming" or lookup("model.space") == "smoothie"),
    ),
    "model.vocab_chunk_size": at_least(1),
    "model.vocab_dtype": one_of(DTYPES),
    "model.decoding_loss_weight": at_least(0),
    "model.train_time_power": above(0),
    "model.length_from_source": Allowed(
        ">= 0, with a source (model.denoiser.source_encoder not 'none')",
        lambda value, lookup: value >= 0 and lookup("model.denoiser.source_encoder") != "none",
    ),
    **{f"model.{group.argument}.{key}": allowed for group in OPTION_GROUPS for key, allowed in group.rules().items()},
    "model.optim.decay_steps": Allowed(
        ">= 0, and 0 (no decay) or above model.optim.warmup_steps (the decay starts where the warm-up ends)",
        lambda value, lookup: value == 0 or value > lookup("model.optim.warmup_steps"),
    ),
    "model.denoiser.width": at_least(1),
    "model.denoiser.depth": Allowed("an even number >= 2", lambda value, _: value >= 2 and value % 2 == 0),
    "model.denoiser.heads": Allowed(
        "a divisor of model.denoiser.width",
        lambda value, lookup: value >= 1 and lookup("model.denoiser.width") % value == 0,
    ),
    "model.denoiser.mlp_ratio": above(0),
    "model.denoiser.dropout": fraction(),
    "model.denoiser.encoder_depth": at_least(0),
    "model.denoiser.self_conditioning_depth": at_least(1),
    "model.denoiser.source_encoder": one_of(("scratch", "pretrained", "none")),
    "data.init_args.batch_size": at_least(1),
    "data.init_args.eval_batch_size": at_least(1),
    "data.init_args.num_workers": at_least(0),
    "data.init_args.global_batch_size": Allowed(
        ">= 1, with trainer.accumulate_grad_batches left at 1 (the global batch sets the accumulation)",
        lambda value, lookup: value >= 1 and lookup("trainer.accumulate_grad_batches") in (1, None),
    ),
    "data.init_args.predict_split": one_of(("train", "validation", "test")),
    "data.init_args.validation_size": at_least(1),
    "data.init_args.test_size": at_least(1),
    "trainer.max_steps": at_least(-1),
    "trainer.max_epochs": at_least(-1),
    "trainer.accumulate_grad_batches": at_least(1),
    "trainer.gradient_clip_val": at_least(0),
    "trainer.check_val_every_n_epoch": at_least(1),
    "trainer.log_every_n_steps": at_least(1),
    "ema.decay": Allowed("in (0, 1)", lambda value, _: 0 < value < 1),
    "ema.update_every_n_steps": at_least(1),
    "prediction_writer.if_exists": one_of(IF_EXISTS),
}
# Options given as a dict of a dataclass's fields: a misspelt field is named with the closest real one.
DATACLASS_OPTIONS = {"model.denoiser": DenoiserConfig, **{f"model.{group.argument}": group for group in OPTION_GROUPS}}

MISSING = object()


def schedule_error(config) -> str | None:
    """Why ``model.schedule`` cannot be built (a name or parameter its class refuses), else ``None``."""
    try:
        schedule, space = config["model"]["schedule"], config["model"]["space"] or "smoothie"
    except (KeyError, TypeError):
        return None
    if space not in SPACES:  # reported by the model.space rule
        return None
    try:
        build_schedule(schedule, SPACES[space].default_schedule.name)
    except ValueError as error:
        return f"model.schedule = {schedule!r}: {error}"
    return None


def config_errors(config) -> list[str]:
    """``"key = value: allowed ..."`` for every option of ``config`` (a jsonargparse Namespace) that breaks a rule."""

    def lookup(key: str) -> Any:
        value = config
        for part in key.split("."):
            try:
                value = value[part]
            except (KeyError, TypeError):
                return MISSING
        return value

    errors = []
    for key, allowed in RULES.items():
        value = lookup(key)
        if value is MISSING or value is None:
            continue
        try:
            holds = allowed.holds(value, lookup)
        except TypeError:  # a value of another type (e.g. a string) or a missing other key: not this rule's business
            continue
        if not holds:
            errors.append(f"{key} = {value!r}: allowed {allowed.description}")
    for key, cls in DATACLASS_OPTIONS.items():
        value = lookup(key)
        if hasattr(value, "keys") and not isinstance(value, cls):
            errors += [f"{key}.{name}: not an option of {key}{hint}" for name, hint in unknown_keys(cls, value.keys())]
            errors += [f"{key}.{name} = {v!r}: expected {kind}" for name, v, kind in wrong_types(cls, value.items())]
    schedule = schedule_error(config)
    return errors if schedule is None else [*errors, schedule]
