"""Every shipped yaml instantiates (model, data, trainer) without training, so no config can rot.

Full configs are the yaml files directly under ``lightning_configs/``. Any other yaml
(a shared fragment or an overlay under ``lightning_configs/*/`` or ``experiments/``)
must either be referenced by another yaml (``trainer: paper/trainer.yaml``) or say in
a comment the command that uses it (``smoothie fit --config A.yaml --config B.yaml``);
it is then instantiated with that command. The hub is never needed: the embedding is
replaced by the packaged MiniLM.
"""

import re
from pathlib import Path

import pytest

from smoothie_pl.cli import build_cli
from smoothie_pl.data import TaskDataModule
from smoothie_pl.options import OptimConfig

ROOT = Path(__file__).resolve().parents[1]
FULL = sorted((ROOT / "lightning_configs").glob("*.yaml"))
OTHERS = sorted([*(ROOT / "lightning_configs").glob("*/**/*.yaml"), *(ROOT / "experiments").glob("**/*.yaml")])
USAGE = re.compile(r"^#.*smoothie \w+((?: --config \S+\.yaml)+)", re.MULTILINE)
OFFLINE = ["--model.embedding", "null", "--trainer.logger", "false"]

# METHOD section 8: (L, Lc) and the metric set of each task.
PAPER_TASKS = {
    "qqp": (50, 50, "paraphrase"),
    "xsum": (64, 512, "summarization"),
    "newsela_auto": (64, 64, "simplification"),
    "quasar_t": (50, 100, "paraphrase"),
    "rocstories": (80, 2, "unconditional"),
    "paradetox": (40, 40, "detoxification"),
    "iwslt14_de_en": (100, 100, "translation"),
    "wmt14_de_en": (80, 80, "translation"),
}


def usage_configs(path: Path) -> list[str] | None:
    """The ``--config`` files of the command a yaml's comments give, relative to the repository root."""
    match = USAGE.search(path.read_text())
    return match.group(1).split()[1::2] if match else None


def referenced(path: Path) -> bool:
    """Whether another yaml names ``path`` as a value (a nested config file), relative to its own folder."""
    for other in [*FULL, *OTHERS]:
        for value in re.findall(r":\s*(\S+\.yaml)\s*$", other.read_text(), re.MULTILINE):
            if (other.parent / value).resolve() == path.resolve():
                return True
    return False


def write_named_data_files(configs: list[str], directory: Path) -> None:
    """Stand-in jsonl pairs for the data files a config names (made by a script, e.g. data/ylt_web), in ``directory``."""
    import json

    import yaml

    for config in configs:
        init_args = ((yaml.safe_load((ROOT / config).read_text()) or {}).get("data") or {}).get("init_args") or {}
        for key in ("train_file", "validation_file", "test_file"):
            if key in init_args:
                path = directory / init_args[key]
                path.parent.mkdir(parents=True, exist_ok=True)
                pairs = [{"src": f"and he said unto them {i}", "trg": f"he said to them {i}"} for i in range(4)]
                path.write_text("".join(json.dumps(pair) + "\n" for pair in pairs))


def instantiate(configs: list[str], tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_named_data_files(configs, tmp_path)
    args = [item for config in configs for item in ("--config", str(ROOT / config))]
    return build_cli([*args, *OFFLINE], run=False)


@pytest.mark.slow
@pytest.mark.parametrize("config", OTHERS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_fragment_or_overlay_is_used_and_instantiates(config, tmp_path, monkeypatch):
    configs = usage_configs(config)
    if configs is None:
        assert referenced(config), f"{config} is neither referenced by another yaml nor documents its command"
        return
    assert str(config.relative_to(ROOT)) in configs, f"{config}: its usage comment does not load it"
    instantiate(configs, tmp_path, monkeypatch)


def assert_papers_setup(config: Path, cli) -> None:
    task = config.stem
    target_length, source_length, metric_set = PAPER_TASKS[task]
    model, data, trainer = cli.model, cli.datamodule, cli.trainer
    assert isinstance(data, TaskDataModule)
    assert (model.hparams.target_length, model.hparams.source_length) == (target_length, source_length)
    assert (data.target_length, data.source_length) == (target_length, source_length) == data.lengths
    assert model.evaluation.metric_set == data.metric_set == metric_set
    # METHOD sections 6-7: the paper's model and training.
    assert "embedding: bert-base-cased" in config.read_text()  # replaced by MiniLM here (OFFLINE)
    denoiser = model.hparams.denoiser
    assert (denoiser["depth"], denoiser["width"], denoiser["heads"], denoiser["dropout"]) == (12, 768, 12, 0.1)
    assert denoiser["encoder_depth"] == 6
    assert denoiser["source_encoder"] == ("none" if task == "rocstories" else "scratch")
    assert model.optim == OptimConfig()  # the paper's AdamW and warm-up are the defaults
    assert data.batch_size == 256
    assert trainer.max_steps == 500_000 and trainer.gradient_clip_val == 1.0
    assert trainer.val_check_interval == 25_000 and trainer.precision == "bf16-mixed"
    (checkpoint,) = [c for c in trainer.callbacks if type(c).__name__ == "ModelCheckpoint"]
    assert (checkpoint.monitor, checkpoint.mode, checkpoint.save_top_k) == ("val/tracked", "max", 2)
    assert any(type(c).__name__ == "GenerationMetrics" for c in trainer.callbacks)
    (ema,) = [c for c in trainer.callbacks if type(c).__name__ == "SmoothieEMA"]
    assert ema.decay == 0.9999


@pytest.mark.slow  # a paper-size model takes about 6 s to build on 2 CPU cores
@pytest.mark.parametrize("config", FULL, ids=lambda path: path.name)
def test_every_full_config_instantiates(config, tmp_path, monkeypatch):
    cli = instantiate([str(config)], tmp_path, monkeypatch)
    assert cli.model.hparams.target_length == cli.datamodule.target_length
    assert cli.model.hparams.source_length == cli.datamodule.source_length
    if config.stem in PAPER_TASKS:
        assert_papers_setup(config, cli)


@pytest.mark.parametrize("config", FULL, ids=lambda path: path.name)
def test_every_config_names_its_metric_variants_and_the_papers_bleu_tokenisation(config):
    import yaml

    from smoothie_pl.metrics import METRIC_SETS

    text = config.read_text()
    comments = re.sub(r"\n\s*#\s*", " ", text)  # a comment's lines joined
    model = yaml.safe_load(text)["model"]
    evaluation = model.get("evaluation", {})
    names = METRIC_SETS[evaluation.get("metric_set", "demo")]
    assert "# Metrics" in text and "docs/evaluation.md" in comments
    if "bleu" in names:
        assert "BLEU is corpus BLEU-4" in comments
        if config.stem in PAPER_TASKS:  # METHOD section 8: the reference code's multilingual-BERT WordPiece
            assert evaluation["metric_options"]["bleu_tokenizer"] == "bert-base-multilingual-cased"


def test_every_paper_task_has_a_config():
    assert set(PAPER_TASKS) <= {path.stem for path in FULL}
