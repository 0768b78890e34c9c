"""Self-contained models: what a checkpoint stores to load offline, exported folders, and loading both.

A model's weights only make sense with the standardised ``E`` they were
trained on, the diffusion vocabulary and the tokenizer. The checkpoint's state
holds ``E`` and the vocabulary; ``add_loading_parts`` adds the tokenizer files
(and the config of a pretrained source encoder), what the model was trained on
and its scores when saved. ``load_pretrained`` rebuilds the module from these
alone, so neither the embedding model nor the training config is needed.

An exported folder holds the same in plain files::

    model.safetensors   every weight of the checkpoint's state (the EMA weights
                        when training used EMA), E and the vocabulary included
    config.json         every hyperparameter, the fingerprint, the training record,
                        the training targets' casing (for recasing an uncased vocabulary)
    tokenizer/          the target tokenizer (source_tokenizer/ when it differs)
    README.md           a model card
"""

from __future__ import annotations

import inspect
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase

from smoothie_pl.checkpoint_io import load_verified
from smoothie_pl.embeddings import SavedParts, saved_parts, use_saved_parts
from smoothie_pl.errors import CheckpointError, OutputExistsError
from smoothie_pl.fingerprint import CHECKPOINT_KEY, check_weights_fit

FORMAT = "smoothie-pl"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
TOKENIZERS_KEY = "smoothie_tokenizers"
ENCODER_CONFIG_KEY = "smoothie_source_encoder_config"
TRAINING_KEY = "smoothie_training"
CASING_KEY = "smoothie_casing"
# Tokenizer roles: the targets' (``model.embedding``) and, when it is another model, the sources'.
ROLE_FOLDERS = {"target": "tokenizer", "source": "source_tokenizer"}


# ------------------------------------------------------------------ saving
def tokenizer_files(tokenizer: PreTrainedTokenizerBase) -> dict[str, bytes]:
    """The files ``save_pretrained`` writes, by name."""
    with tempfile.TemporaryDirectory() as directory:
        tokenizer.save_pretrained(directory)
        return {path.name: path.read_bytes() for path in Path(directory).iterdir() if path.is_file()}


def tokenizer_from_files(files: dict[str, bytes]) -> PreTrainedTokenizerBase:
    with tempfile.TemporaryDirectory() as directory:
        for name, content in files.items():
            (Path(directory) / name).write_bytes(content)
        return AutoTokenizer.from_pretrained(directory)


def tokenizer_roles(hparams) -> dict[str, str | None]:
    """Model name of each tokenizer a model uses, by role."""
    roles = {"target": hparams["embedding"]}
    if hparams.get("source_embedding") is not None:
        roles["source"] = hparams["source_embedding"]
    return roles


def add_loading_parts(checkpoint: dict, module) -> None:
    """Store in ``checkpoint`` what loading it offline needs beyond its state, and what it was trained on."""
    from smoothie_pl.models import PretrainedSourceEncoder

    tokenizers = {"target": module.tokenizer, "source": module.source_tokenizer}
    checkpoint[TOKENIZERS_KEY] = {role: tokenizer_files(tokenizers[role]) for role in tokenizer_roles(module.hparams)}
    if isinstance(module.source_encoder, PretrainedSourceEncoder):
        checkpoint[ENCODER_CONFIG_KEY] = module.source_encoder.encoder.config.to_dict()
    if module.casing is not None:
        checkpoint[CASING_KEY] = module.casing
    try:
        trainer = module.trainer
    except RuntimeError:  # saved outside a Trainer
        return
    checkpoint[TRAINING_KEY] = {"data": describe_data(trainer.datamodule), "scores": scores(trainer.callback_metrics)}


def describe_data(datamodule) -> dict[str, Any]:
    """The data module's class, files and training-set size, as far as it has them."""
    if datamodule is None:
        return {}
    description: dict[str, Any] = {"datamodule": f"{type(datamodule).__module__}.{type(datamodule).__qualname__}"}
    files = getattr(datamodule, "files", None)
    if isinstance(files, dict):
        description["files"] = {split: str(path) for split, path in files.items() if path is not None}
    train = getattr(datamodule, "datasets", {}).get("train")
    if train is not None:
        description["train_pairs"] = len(train)
    return description


def scores(metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    """The validation and test numbers among a trainer's ``callback_metrics``."""
    return {
        name: float(value)
        for name, value in sorted(metrics.items())
        if name.startswith(("val/", "test/")) and torch.as_tensor(value).numel() == 1
    }


# ----------------------------------------------------------------- reading
@dataclass
class SavedModel:
    """A model as saved, in plain parts: hyperparameters, the state, tokenizers and records."""

    hyper_parameters: dict[str, Any]
    state: dict[str, torch.Tensor]
    tokenizers: dict[str, PreTrainedTokenizerBase]
    encoder_config: dict[str, Any] | None = None
    fingerprint: dict[str, Any] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    tokenizer_files: dict[str, dict[str, bytes]] = field(default_factory=dict)
    casing: dict[str, str] | None = None


def read_saved(path: str | Path) -> SavedModel:
    """An exported folder or a Lightning checkpoint file."""
    path = Path(path).expanduser()
    if path.is_dir():
        return read_exported(path)
    return read_checkpoint(path)


def read_checkpoint(path: Path) -> SavedModel:
    checkpoint = load_verified(path)  # safe unpickling, every tensor's digest, finite weights
    if "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (it has no 'state_dict')")
    hyper_parameters = dict(checkpoint.get("hyper_parameters") or {})
    files = checkpoint.get(TOKENIZERS_KEY)
    if files is None:
        raise CheckpointError(
            f"checkpoint {path} holds no tokenizer files (it was saved by an older smoothie-pl); "
            "load it with SmoothieModule.load_from_checkpoint, which needs the embedding model"
        )
    return SavedModel(
        hyper_parameters=hyper_parameters,
        state=checkpoint["state_dict"],
        tokenizers={role: tokenizer_from_files(content) for role, content in files.items()},
        encoder_config=checkpoint.get(ENCODER_CONFIG_KEY),
        fingerprint=checkpoint.get(CHECKPOINT_KEY),
        training={
            "global_step": checkpoint.get("global_step"),
            "epoch": checkpoint.get("epoch"),
            **checkpoint.get(TRAINING_KEY, {}),
        },
        tokenizer_files=files,
        casing=checkpoint.get(CASING_KEY),
    )


def read_exported(directory: Path) -> SavedModel:
    from safetensors.torch import load_file

    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for needed in (config_path, weights_path):
        if not needed.is_file():
            raise CheckpointError(f"{directory} is not an exported smoothie-pl model: it has no {needed.name}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{config_path}: malformed JSON ({err.msg} at line {err.lineno})") from None
    if config.get("format") != FORMAT:
        raise CheckpointError(f"{config_path} does not describe a smoothie-pl model (no \"format\": \"{FORMAT}\")")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{config_path} has format_version {config['format_version']}; "
            f"this smoothie-pl reads up to {FORMAT_VERSION}"
        )
    roles = {role: directory / folder for role, folder in ROLE_FOLDERS.items() if (directory / folder).is_dir()}
    if "target" not in roles:
        raise CheckpointError(f"{directory} has no {ROLE_FOLDERS['target']}/ folder with the tokenizer files")
    return SavedModel(
        hyper_parameters=config["hyper_parameters"],
        state=load_file(str(weights_path)),
        tokenizers={role: AutoTokenizer.from_pretrained(str(folder)) for role, folder in roles.items()},
        encoder_config=config.get("source_encoder_config"),
        fingerprint=config.get("fingerprint"),
        training=config.get("training", {}),
        casing=config.get("casing"),
    )


# ----------------------------------------------------------------- loading
def init_options(cls, hyper_parameters: dict[str, Any]) -> dict[str, Any]:
    """The saved hyperparameters that are arguments of ``cls`` (Lightning adds bookkeeping keys)."""
    accepted = inspect.signature(cls.__init__).parameters
    return {key: value for key, value in hyper_parameters.items() if key in accepted}


def parts_of(saved: SavedModel, options: dict[str, Any]) -> SavedParts:
    """What ``saved`` holds of the models its ``options`` name: ``E``, encoder configs and tokenizers, by name."""
    state = saved.state
    matrices = {}
    if "source_embedding_matrix" in state:
        matrices[options.get("source_embedding")] = state["source_embedding_matrix"]
    matrices[options.get("embedding")] = state["embedding_matrix"]  # after the source's: the one a shared name gets
    encoder_configs = {}
    if saved.encoder_config is not None:
        config = dict(saved.encoder_config)
        encoder_name = options.get("source_embedding") or options.get("embedding")
        encoder_configs[encoder_name] = AutoConfig.for_model(config.pop("model_type"), **config)
    names = tokenizer_roles(options)
    tokenizers = {names[role]: tokenizer for role, tokenizer in saved.tokenizers.items() if role in names}
    return SavedParts(matrices, encoder_configs, tokenizers)


def use_checkpoint_parts(path: str | Path) -> None:
    """Build this command's model and data from the ``E`` and tokenizers ``path`` holds, not the models it names."""
    saved = read_checkpoint(Path(path).expanduser())
    use_saved_parts(parts_of(saved, saved.hyper_parameters))


def build_module(cls, saved: SavedModel, **overrides: Any):
    """The module of ``saved`` with its weights, without the models it was built from.

    A dict override of a dict option (an option group) replaces only the keys it names.
    """
    options = init_options(cls, saved.hyper_parameters)
    overrides = {
        key: {**options[key], **value} if isinstance(value, dict) and isinstance(options.get(key), dict) else value
        for key, value in overrides.items()
    }
    options = {**options, **overrides}
    state, parts = saved.state, parts_of(saved, options)
    with saved_parts(parts):
        module = cls(**options, vocabulary=state["vocabulary"].tolist())
    module.saved_tokenizers = dict(parts.tokenizers)
    module.casing = saved.casing
    saved_values = {key: saved.hyper_parameters.get(key) for key in overrides}
    check_weights_fit(state, module.state_dict(), saved_values, overrides, "being loaded")
    module.load_state_dict(state)
    return module.eval()


def load_pretrained(cls, path: str | Path, **overrides: Any):
    """``cls`` (a ``SmoothieModule``) from an exported folder or a checkpoint, offline.

    ``overrides`` replace saved hyperparameters, e.g. ``sampling={"steps": 20,
    "mbr_candidates": 4}``; options that change the weights' shapes are refused.
    """
    return build_module(cls, read_saved(path), **overrides)


# --------------------------------------------------------------- exporting
def export_checkpoint(checkpoint: str | Path, output: str | Path, overwrite: bool = False) -> Path:
    """Write the exported folder of ``checkpoint`` to ``output`` (refused when it holds files, unless ``overwrite``)."""
    from safetensors.torch import save_file

    from smoothie_pl.model_card import model_card

    checkpoint, output = Path(checkpoint).expanduser(), Path(output).expanduser()
    if output.exists() and not output.is_dir():
        raise OutputExistsError(f"export output {output} exists and is not a folder")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise OutputExistsError(f"export output {output} already holds files; pass --overwrite to replace them")
    saved = read_checkpoint(checkpoint)
    output.mkdir(parents=True, exist_ok=True)
    # Clones: tensors sharing storage (tied weights) cannot be saved as separate safetensors entries.
    save_file({key: value.detach().clone().contiguous() for key, value in saved.state.items()}, output / WEIGHTS_FILE)
    for role, files in saved.tokenizer_files.items():
        folder = output / ROLE_FOLDERS[role]
        folder.mkdir(exist_ok=True)
        for name, content in files.items():
            (folder / name).write_bytes(content)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "hyper_parameters": plain_hyperparameters(saved.hyper_parameters),
        "fingerprint": saved.fingerprint,
        "source_encoder_config": saved.encoder_config,
        "training": {**saved.training, "checkpoint": str(checkpoint.resolve())},
        "casing": saved.casing,
    }
    (output / CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (output / CARD_FILE).write_text(model_card(saved, checkpoint), encoding="utf-8")
    return output


def plain_hyperparameters(hyper_parameters: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters without Lightning's bookkeeping keys (``_instantiator``, ...)."""
    return {key: value for key, value in hyper_parameters.items() if not key.startswith("_")}
