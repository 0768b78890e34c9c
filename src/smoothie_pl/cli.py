"""``smoothie fit|validate|test|predict --config ...``: LightningCLI with Smoothie's links and defaults.

``smoothie generate`` and ``smoothie export`` work on a trained model without a
config; they have their own modules (``generate_command``, ``export_command``).
"""

from __future__ import annotations

import contextvars
import os
import re
import sys
import traceback
from pathlib import Path

import torch
import yaml

from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from smoothie_pl.arguments import closest
from smoothie_pl.callbacks import JsonlPredictionWriter, NonFiniteGuard, SmoothieEMA, VerifiedCheckpointIO
from smoothie_pl.checkpoint_io import newest_intact, read_checkpoint, remove_temporary_files
from smoothie_pl.config_checks import config_errors
from smoothie_pl.data import Seq2SeqDataModule
from smoothie_pl.data.batching import split_global_batch
from smoothie_pl.export import use_checkpoint_parts
from smoothie_pl.errors import CheckpointError, ConfigError, SmoothieError, UsageError
from smoothie_pl.fingerprint import CHECKPOINT_KEY
from smoothie_pl.module import SmoothieModule
from smoothie_pl.precision import default_precision


# Settings of sampling and evaluation: at test/predict time they come from the
# current config and command line, while everything else (the architecture)
# comes from the checkpoint given by --ckpt_path.
GENERATION_OPTIONS = ("sampling", "evaluation", "seed")
# ``--ckpt_path`` values Lightning resolves itself.
CHECKPOINT_ALIASES = ("best", "last", "hpc", "registry")
# What a checkpoint needs to resume a run of this CLI from: other files in the run folder are skipped.
RESUMABLE_ENTRIES = ("state_dict", "loops", CHECKPOINT_KEY)


def data_vocabulary(data: Seq2SeqDataModule) -> list[int] | None:
    return data.vocabulary()


class SmoothieArgumentParser(LightningArgumentParser):
    """Raises ``UsageError`` (one line, the closest real key to an unknown one) instead of printing the usage."""

    def error(self, message: str, ex: Exception | None = None):
        parser = getattr(ex, "subcommand_parser", None) or self
        line = " ".join(message.split())
        unknown = re.findall(r"(--[\w.]+)", line) if line.lower().startswith("unrecognized arguments") else []
        keys = option_keys(parser.get_defaults()) if unknown else []
        # Dotted keys share long prefixes, so only a near-identical key is suggested.
        suggestions = [f"{option}{closest(option, keys, 0.85)}" for option in unknown if closest(option, keys, 0.85)]
        if suggestions:
            line += "; " + "; ".join(suggestions)
        command = " ".join(["smoothie", *parser.prog.replace(" [options]", "").split()[1:]])  # not python's argv[0]
        raise UsageError(line, f"run `{command} --help` for the accepted options") from ex


def option_keys(defaults) -> list[str]:
    """Every ``--key`` of the parser's defaults, and a dataclass option's fields also without ``init_args``."""
    keys = {f"--{key}" for key in defaults.keys()}
    return sorted(keys | {key.replace(".init_args.", ".") for key in keys})


class SmoothieCLI(LightningCLI):
    """Links the data's tokenizer and lengths to the model, and adds the callbacks every run needs."""

    def init_parser(self, **kwargs) -> LightningArgumentParser:
        """Command-line keys must be given in full: a prefix of a real key is an error, not that key."""
        return super().init_parser(**{**kwargs, "allow_abbrev": False})

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(SmoothieEMA, "ema")
        parser.add_lightning_class_args(JsonlPredictionWriter, "prediction_writer")
        parser.add_lightning_class_args(NonFiniteGuard, "nonfinite_guard")
        parser.link_arguments("model.embedding", "data.init_args.tokenizer")
        parser.link_arguments("model.source_embedding", "data.init_args.source_tokenizer")
        parser.link_arguments("model.target_length", "data.init_args.target_length")
        parser.link_arguments("model.source_length", "data.init_args.source_length")
        parser.link_arguments("data", "model.vocabulary", compute_fn=data_vocabulary, apply_on="instantiate")

    def parse_arguments(self, parser, args) -> None:
        """Parse, then note the generation options asked for now (and check ``--ckpt_path`` names a checkpoint).

        Lightning then replaces the model's arguments with the checkpoint's;
        ``before_instantiate_classes`` puts the noted options back.
        """
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        self.requested_generation_options = {}
        if subcommand:
            check_checkpoint_file(self.config[subcommand].get("ckpt_path"))
            keys = [f"{subcommand}.model.{option}" for option in GENERATION_OPTIONS]
            self.requested_generation_options = {key: self.config[key] for key in keys}

    def before_instantiate_classes(self) -> None:
        """Restore the generation options asked for, refuse impossible values before any data is read, then
        fill in what other options decide (precision, gradient accumulation)."""
        for key, value in self.requested_generation_options.items():
            self.config[key] = value
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        checkpoint = config.get("ckpt_path")
        if subcommand in ("validate", "test", "predict") and checkpoint and Path(checkpoint).is_file():
            use_checkpoint_parts(checkpoint)  # E and the tokenizers from the checkpoint, never re-read or downloaded
        errors = config_errors(config)
        if errors:
            raise ConfigError("impossible configuration values:\n  " + "\n  ".join(errors))
        choose_precision(config)
        derive_accumulation(config)

    def instantiate_trainer(self, **kwargs):
        """Use a Rich progress bar unless the config disables progress bars or brings its own, and
        ``VerifiedCheckpointIO`` unless the config brings another checkpoint plugin."""
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer_config = config.get("trainer", {})
        callbacks = list(trainer_config.get("callbacks") or [])
        wants_bar = trainer_config.get("enable_progress_bar") is not False
        if wants_bar and not any(isinstance(callback, ProgressBar) for callback in callbacks):
            trainer_config["callbacks"] = [*callbacks, RichProgressBar()]
        plugins = trainer_config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
            trainer_config["plugins"] = [*plugins, VerifiedCheckpointIO()]
        trainer = super().instantiate_trainer(**kwargs)
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                # Not under a new lightning_logs/version_N per run: a rerun must find its last.ckpt.
                callback.dirpath = os.path.realpath(os.path.join(trainer.default_root_dir, "checkpoints"))
        return trainer

    def before_fit(self) -> None:
        """Resume from the run's newest intact checkpoint unless a ckpt_path is given."""
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") is None:
            resume = newest_checkpoint(self.trainer)
            if resume is not None:
                rank_zero_info(f"resuming from {resume}")
                config["ckpt_path"] = str(resume)


def choose_precision(config) -> None:
    """Fill in ``trainer.precision`` when the config leaves it out: bf16-mixed only where bf16 is fast.

    A bf16 precision asked for on a CPU without bf16 units is kept; the module
    then computes in fp32 there (``precision.fastest_autocast``) and says so.
    """
    if config.get("trainer.precision") is not None:
        return
    accelerator = str(config.get("trainer.accelerator") or "auto")
    device = {"auto": "cuda" if torch.cuda.is_available() else "cpu", "gpu": "cuda"}.get(accelerator, accelerator)
    config["trainer.precision"] = default_precision(device) if device in ("cpu", "cuda") else "32-true"
    rank_zero_info(f"precision {config['trainer.precision']}, chosen for this {device}")


def planned_world_size(config) -> int | None:
    """How many processes the configured trainer will run (``None`` for an accelerator this cannot tell)."""
    accelerator = str(config.get("trainer.accelerator") or "auto")
    if accelerator == "auto":
        accelerator = "cuda" if CUDAAccelerator.is_available() else "cpu"
    kind = {"cpu": CPUAccelerator, "cuda": CUDAAccelerator, "gpu": CUDAAccelerator}.get(accelerator)
    if kind is None:
        return None
    devices = config.get("trainer.devices") or "auto"
    devices = kind.auto_device_count() if devices == "auto" else devices
    return len(kind.get_parallel_devices(kind.parse_devices(devices))) * int(config.get("trainer.num_nodes") or 1)


def derive_accumulation(config) -> None:
    """Set ``trainer.accumulate_grad_batches`` from ``data.init_args.global_batch_size`` (``split_global_batch``).

    The DataModule takes the per-device batch itself at ``fit`` and refuses a
    trainer that accumulates another count (as when this cannot tell the world size).
    """
    global_batch = config.get("data.init_args.global_batch_size")
    world_size = None if global_batch is None else planned_world_size(config)
    if world_size is None:
        return
    try:
        _, accumulation = split_global_batch(global_batch, world_size, config["data.init_args.batch_size"])
    except ValueError as error:
        raise ConfigError(str(error)) from error
    config["trainer.accumulate_grad_batches"] = accumulation


def run_checkpoints(trainer) -> list[Path]:
    """Every checkpoint file of the run: those of its checkpoint callbacks' folders and Lightning's requeue ones.

    Absolute, so that the path logged and restored does not depend on the working directory.
    """
    candidates = list(Path(trainer.default_root_dir).resolve().glob("hpc_ckpt_*.ckpt"))
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath is not None:
            candidates += Path(callback.dirpath).resolve().glob(f"*{callback.FILE_EXTENSION}")
    return candidates


def newest_checkpoint(trainer) -> Path | None:
    """The newest intact checkpoint of the run (``checkpoint_io.newest_intact``), after removing killed saves' leftovers.

    Any of the run's checkpoints counts, not only ``last.ckpt``: a run killed while writing its
    first ``last.ckpt``, or one configured without ``save_last``, resumes from the others.
    """
    folders = {Path(trainer.default_root_dir)} | {
        Path(callback.dirpath) for callback in trainer.checkpoint_callbacks
        if isinstance(callback, ModelCheckpoint) and callback.dirpath is not None
    }
    if trainer.is_global_zero:
        for folder in folders:
            for leftover in remove_temporary_files(folder):
                rank_zero_info(f"removed {leftover}, left by a checkpoint write that did not finish")
    return newest_intact(run_checkpoints(trainer), required=RESUMABLE_ENTRIES)


def check_checkpoint_file(path: str | None) -> None:
    """Raise ``CheckpointError`` unless ``path`` is empty, an alias or a readable Lightning checkpoint.

    Only its structure is read here (memory-mapped); loading it verifies every tensor.
    """
    if not path or path in CHECKPOINT_ALIASES:
        return
    if "state_dict" not in read_checkpoint(path):
        raise CheckpointError(f"{path} is not a Lightning checkpoint (it has no 'state_dict')")


def build_cli(args: list[str] | None = None, run: bool = True) -> SmoothieCLI:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # A context of its own: the checkpoint's E and tokenizers a test or predict run takes
    # (``use_checkpoint_parts``) do not outlive it in a process that runs several commands.
    return contextvars.copy_context().run(
        SmoothieCLI,
        SmoothieModule,
        Seq2SeqDataModule,
        subclass_mode_data=True,
        parser_class=SmoothieArgumentParser,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def smoothie_cause(error: BaseException | None) -> SmoothieError | None:
    """The ``SmoothieError`` that ``error`` is or wraps (``raise ... from``), if any; jsonargparse wraps link errors."""
    while error is not None and not isinstance(error, SmoothieError):
        error = error.__cause__
    return error


def yaml_syntax_error(args: list[str]) -> str | None:
    """``file:line:column: problem`` for the first ``--config`` file that is not valid yaml (the parser names neither)."""
    for flag, value in zip(args, args[1:]):
        if flag in ("--config", "-c") and Path(value).is_file():
            try:
                yaml.safe_load(Path(value).read_text(encoding="utf-8", errors="replace"))
            except yaml.MarkedYAMLError as error:
                mark = error.problem_mark or error.context_mark
                where = f"{value}:{mark.line + 1}:{mark.column + 1}" if mark else value
                return f"{where}: invalid yaml: {error.problem or error.context}"
    return None


def model_commands() -> dict:
    """Subcommands that take a trained model instead of a config, by name."""
    from smoothie_pl import export_command, generate_command

    return {"export": export_command.main, "generate": generate_command.main}


def run(args: list[str] | None = None) -> int:
    """Run the CLI and return its exit status.

    Every error is one line on stderr (``smoothie: error: ...``), a usage error with a
    hint, never a traceback, unless ``--debug`` is given or ``SMOOTHIE_DEBUG=1`` is set.
    """
    args = list(sys.argv[1:] if args is None else args)
    debug = "--debug" in args or os.environ.get("SMOOTHIE_DEBUG", "") not in ("", "0")
    args = [arg for arg in args if arg != "--debug"]
    problem = yaml_syntax_error(args)
    if problem:
        print(f"smoothie: error: {problem}", file=sys.stderr)
        return 2
    try:
        commands = model_commands()
        if args and args[0] in commands:
            return commands[args[0]](args[1:])
        build_cli(args)
    except SystemExit as exit:  # --help, and errors Lightning reports by exiting
        if exit.code is None or isinstance(exit.code, int):
            return exit.code or 0
        print(exit.code, file=sys.stderr)
        return 1
    except Exception as error:
        if debug:
            traceback.print_exc()
        cause = smoothie_cause(error)
        if isinstance(cause, UsageError):
            print(f"smoothie: error: {cause}\nhint: {cause.hint}", file=sys.stderr)
            return 2
        if cause is not None:
            print(f"smoothie: error: {cause}", file=sys.stderr)
        else:
            message = " ".join(str(error).split()) or "(no message)"
            print(
                f"smoothie: error: unexpected {type(error).__name__}: {message} "
                "(run again with --debug for the traceback)",
                file=sys.stderr,
            )
        return 1
    return 0


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())


if __name__ == "__main__":
    main()
