"""Errors about the user's input or run, whose message says everything: the CLI prints it without a traceback."""

from __future__ import annotations


class SmoothieError(Exception):
    """A problem the user can act on (bad data, config or checkpoint; a diverged run)."""


class DataError(SmoothieError, ValueError):
    """A data file is missing, empty or malformed; the message names the file, line and field."""


class DataFileNotFoundError(DataError, FileNotFoundError):
    """A split's data file does not exist."""


class ConfigError(SmoothieError, ValueError):
    """Configuration values that cannot work; the message names every key and its allowed range."""


class CheckpointError(SmoothieError, ValueError):
    """A checkpoint file is missing, unreadable or not a Lightning checkpoint."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint depends on an embedding, tokenizer, vocabulary or shape other than the current run's."""


class OutputExistsError(SmoothieError, FileExistsError):
    """An output file (e.g. predictions) exists and the run was not told to overwrite or resume it."""


class OutputMismatchError(SmoothieError, ValueError):
    """An existing output cannot be resumed: it is malformed or was made for other inputs."""


class NonFiniteLossError(SmoothieError, FloatingPointError):
    """Training produced a NaN or infinite loss or gradient."""


class CheckpointWriteError(SmoothieError, OSError):
    """A checkpoint could not be written (e.g. the disk is full); the previous file at its path is unchanged."""


class UsageError(SmoothieError):
    """The command line cannot be parsed (unknown or abbreviated key, wrong type); ``hint`` says where help is."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint
