"""Every preset combination docs/using-a-model.md shows instantiates, and the presets set what they say."""

import re
from pathlib import Path

import pytest

from .test_configs import instantiate

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "using-a-model.md"
COMMAND = re.compile(r"^smoothie fit((?: --config \S+\.yaml)+)$", re.MULTILINE)
SHOWN = [match.group(1).split()[1::2] for match in COMMAND.finditer(DOC.read_text())]
# The width, depth, heads and source-encoder layers each model preset documents.
SIZES = {"tiny": (64, 2, 2, 1), "small": (256, 6, 4, 3), "base": (512, 8, 8, 4), "paper": (768, 12, 12, 6)}


def preset_combinations() -> list:
    params = []
    for configs in SHOWN:
        if not any("/trainer/" in config or "/model/" in config for config in configs):
            continue
        small = any(config.endswith(("tiny.yaml", "small.yaml")) for config in configs)
        # A paper-size model takes seconds to build on 2 CPU cores.
        params.append(pytest.param(configs, id=" ".join(configs), marks=() if small else pytest.mark.slow))
    return params


def test_the_doc_shows_every_preset():
    shown = {config for configs in SHOWN for config in configs}
    presets = {str(path.relative_to(ROOT)) for path in (ROOT / "lightning_configs").glob("*/*.yaml")}
    # The paper configs' shared trainer and the GPU demo's layer are not presets.
    presets -= {"lightning_configs/paper/trainer.yaml", "lightning_configs/demo/gpu.yaml"}
    assert presets <= shown


@pytest.mark.parametrize("configs", preset_combinations())
def test_a_shown_combination_instantiates_with_the_presets_values(configs, tmp_path, monkeypatch):
    task = instantiate([configs[0]], tmp_path, monkeypatch)
    cli = instantiate(configs, tmp_path, monkeypatch)
    denoiser, trainer = cli.model.hparams.denoiser, cli.trainer
    for config in configs[1:]:
        name = Path(config).stem
        if "/model/" in config:
            assert (denoiser["width"], denoiser["depth"], denoiser["heads"], denoiser["encoder_depth"]) == SIZES[name]
        elif name == "cpu":
            assert type(trainer.accelerator).__name__ == "CPUAccelerator" and trainer.num_devices == 1
        elif name in ("ddp", "slurm"):
            assert type(trainer.strategy).__name__ == "DDPStrategy"
    # The task keeps its own lengths, conditioning and training budget.
    assert cli.model.hparams.target_length == task.model.hparams.target_length
    assert denoiser["source_encoder"] == task.model.hparams.denoiser["source_encoder"]
    assert trainer.max_steps == task.trainer.max_steps
