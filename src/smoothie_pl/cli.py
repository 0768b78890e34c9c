"""``smoothie fit|validate|test|predict --config ...``: LightningCLI with Smoothie's links and defaults.

``smoothie generate`` and ``smoothie export`` work on a trained model without a
config; they have their own modules (``generate_command``, ``export_command``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from smoothie_pl.callbacks import JsonlPredictionWriter, NonFiniteGuard, SmoothieEMA
from smoothie_pl.config_checks import config_errors
from smoothie_pl.data import Seq2SeqDataModule
from smoothie_pl.errors import ConfigError, SmoothieError
from smoothie_pl.fingerprint import check_checkpoint_file
from smoothie_pl.module import SmoothieModule


# Settings of sampling and evaluation: at test/predict time they come from the
# current config and command line, while everything else (the architecture)
# comes from the checkpoint given by --ckpt_path.
GENERATION_OPTIONS = (
    "sampler",
    "sampling_steps",
    "sampling_noise_scale",
    "guidance_weight",
    "clamp",
    "metric_set",
    "metric_options",
    "mbr_candidates",
    "mbr_utility",
    "predict_candidates",
    "recase",
    "seed",
)


def data_vocabulary(data: Seq2SeqDataModule) -> list[int] | None:
    return data.vocabulary()


class SmoothieCLI(LightningCLI):
    """Links the data's tokenizer and lengths to the model, and adds the callbacks every run needs."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(SmoothieEMA, "ema")
        parser.add_lightning_class_args(JsonlPredictionWriter, "prediction_writer")
        parser.add_lightning_class_args(NonFiniteGuard, "nonfinite_guard")
        parser.link_arguments("model.embedding", "data.init_args.tokenizer")
        parser.link_arguments("model.source_embedding", "data.init_args.source_tokenizer")
        parser.link_arguments("model.target_length", "data.init_args.target_length")
        parser.link_arguments("model.source_length", "data.init_args.source_length")
        parser.link_arguments("data", "model.vocabulary", compute_fn=data_vocabulary, apply_on="instantiate")

    def _parse_ckpt_path(self) -> None:
        """Lightning replaces the model's arguments with the checkpoint's; keep the generation options asked for now."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return super()._parse_ckpt_path()
        check_checkpoint_file(self.config[subcommand].get("ckpt_path"))
        keys = [f"{subcommand}.model.{option}" for option in GENERATION_OPTIONS]
        requested = {key: self.config[key] for key in keys}
        super()._parse_ckpt_path()
        for key, value in requested.items():
            self.config[key] = value

    def before_instantiate_classes(self) -> None:
        """Refuse impossible values (``config_checks``) before any data is read or model built."""
        subcommand = self.config.get("subcommand")
        errors = config_errors(self.config[subcommand] if subcommand else self.config)
        if errors:
            raise ConfigError("impossible configuration values:\n  " + "\n  ".join(errors))

    def instantiate_trainer(self, **kwargs):
        """Use a Rich progress bar unless the config disables progress bars or brings its own."""
        trainer_config = self._get(self.config_init, "trainer", default={})
        callbacks = list(trainer_config.get("callbacks") or [])
        wants_bar = trainer_config.get("enable_progress_bar") is not False
        if wants_bar and not any(isinstance(callback, ProgressBar) for callback in callbacks):
            trainer_config["callbacks"] = [*callbacks, RichProgressBar()]
        trainer = super().instantiate_trainer(**kwargs)
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                # Not under a new lightning_logs/version_N per run: a rerun must find its last.ckpt.
                callback.dirpath = os.path.realpath(os.path.join(trainer.default_root_dir, "checkpoints"))
        return trainer

    def before_fit(self) -> None:
        """Resume from the run's newest ``last*.ckpt`` (or SLURM requeue checkpoint) unless a ckpt_path is given."""
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") is None:
            resume = newest_checkpoint(self.trainer)
            if resume is not None:
                rank_zero_info(f"resuming from {resume}")
                config["ckpt_path"] = str(resume)


def newest_checkpoint(trainer) -> Path | None:
    """The newest of the run's ``last*.ckpt`` files and the ``hpc_ckpt_*.ckpt`` Lightning saves before a requeue.

    Absolute, so that the path logged and restored does not depend on the working directory.
    """
    candidates = list(Path(trainer.default_root_dir).resolve().glob("hpc_ckpt_*.ckpt"))
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath is not None:
            candidates += Path(callback.dirpath).resolve().glob(f"{callback.CHECKPOINT_NAME_LAST}*{callback.FILE_EXTENSION}")
    return max(candidates, key=lambda path: path.stat().st_mtime, default=None)


def build_cli(args: list[str] | None = None, run: bool = True) -> SmoothieCLI:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return SmoothieCLI(
        SmoothieModule,
        Seq2SeqDataModule,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def smoothie_cause(error: BaseException | None) -> SmoothieError | None:
    """The ``SmoothieError`` that ``error`` is or wraps (``raise ... from``), if any; jsonargparse wraps link errors."""
    while error is not None and not isinstance(error, SmoothieError):
        error = error.__cause__
    return error


def model_commands() -> dict:
    """Subcommands that take a trained model instead of a config, by name."""
    from smoothie_pl import export_command, generate_command

    return {"export": export_command.main, "generate": generate_command.main}


def run(args: list[str] | None = None) -> int:
    """Run the CLI and return its exit status; a ``SmoothieError`` is one message on stderr, not a traceback."""
    words = sys.argv[1:] if args is None else args
    try:
        commands = model_commands()
        if words and words[0] in commands:
            return commands[words[0]](words[1:])
        build_cli(args)  # None: LightningCLI reads sys.argv itself
    except SystemExit as exit:  # the parser's errors (unknown keys, wrong types) and --help
        if exit.code is None or isinstance(exit.code, int):
            return exit.code or 0
        print(exit.code, file=sys.stderr)
        return 1
    except Exception as error:
        cause = smoothie_cause(error)
        if cause is None:
            raise
        print(f"smoothie: error: {cause}", file=sys.stderr)
        return 1
    return 0


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())


if __name__ == "__main__":
    main()
