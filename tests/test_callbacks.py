import contextlib
import io
import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger

from smoothie_pl.callbacks import LearningCurve, SmoothieEMA
from smoothie_pl.callbacks.diagnostics import Diagnostics, true_row_log_probs
from smoothie_pl.callbacks.generation_metrics import FIELDS, GenerationMetrics
from smoothie_pl.diffusion import ArctanSchedule, SmoothieSpace
from smoothie_pl.metrics import TextMetrics

from .test_module import pairs_data, tiny_module

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TIMES = (0.0, 0.5, 1.0)


class RecordingLogger(Logger):
    """Stands in for TensorBoard: its ``experiment`` records ``add_text``/``add_image`` calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    name, version = "recording", 0

    @property
    def experiment(self):
        return self

    def add_text(self, tag, text, step):
        self.calls.append(("text", tag, text, step))

    def add_image(self, tag, image, step, dataformats):
        self.calls.append(("image", tag, image.shape, step))

    def log_metrics(self, metrics, step=None):
        pass

    def log_hyperparams(self, params, *args, **kwargs):
        pass


class EMASpy(Callback):
    """Checks, at a validation batch end (where both callbacks run), that the EMA weights are in the model."""

    def __init__(self, ema: SmoothieEMA) -> None:
        self.ema = ema
        self.checks: list[bool] = []

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.average = next(self.ema._average_model.module.denoiser.parameters()).clone()
        self.current = next(pl_module.denoiser.parameters()).clone()

    def on_validation_batch_end(self, trainer, pl_module, *args) -> None:
        held = next(pl_module.denoiser.parameters())
        self.checks.append(torch.equal(held, self.average) and not torch.equal(held, self.current))


@pytest.fixture(scope="module")
def fitted(word_model, pairs_dir, tmp_path_factory):
    """Four steps, validation after steps 2 and 4.

    EMA is listed first: its swap back then precedes the other callbacks'
    ``on_validation_epoch_end``, so only a batch-end hook sees its weights.
    """
    root = tmp_path_factory.mktemp("fit")
    L.seed_everything(0)
    data = pairs_data(pairs_dir, word_model, batch_size=4)
    module = tiny_module(word_model)
    checkpoint = ModelCheckpoint(dirpath=root / "checkpoints", monitor="val/sacrebleu", mode="max")
    recorder = RecordingLogger()
    ema = SmoothieEMA(decay=0.9)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=4,
        val_check_interval=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=[CSVLogger(root), recorder],
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            ema,
            GenerationMetrics(num_examples=6, steps=3, show=2),
            Diagnostics(times=TIMES, every_n_steps=3, max_examples=8),
            EMASpy(ema),
            LearningCurve(),
            checkpoint,
        ],
        default_root_dir=root,
    )
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        trainer.fit(module, datamodule=data)
    return trainer, module, checkpoint, recorder, printed.getvalue()


def test_callbacks_see_the_ema_weights(fitted):
    trainer = fitted[0]
    (spy,) = [callback for callback in trainer.callbacks if isinstance(callback, EMASpy)]
    assert spy.checks == [True, True]


def test_generation_metrics_are_logged_with_the_example_table(fitted):
    trainer, _, _, recorder, printed = fitted
    for name in ("sacrebleu", "bleu", "rougeL", "div4"):
        assert math.isfinite(float(trainer.callback_metrics[f"val/{name}"]))
    # No metric set given: the model's ("demo"), whose tracked metric is also logged as val/tracked.
    assert float(trainer.callback_metrics["val/tracked"]) == float(trainer.callback_metrics["val/sacrebleu"])
    for step in (2, 4):
        lines = (Path(trainer.log_dir) / f"examples_step{step}.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines]
        assert [row["index"] for row in rows] == list(range(6))
        assert all(set(row) == set(FIELDS) and isinstance(row["prediction"], str) for row in rows)
    # Each run scores its own subset only: recomputing the last table gives the logged value.
    metrics = TextMetrics("demo")
    metrics.update(
        sources=[row["source"] for row in rows],
        predictions=[row["prediction"] for row in rows],
        references=[row["reference"] for row in rows],
    )
    for name, value in metrics.compute().items():
        assert float(trainer.callback_metrics[f"val/{name}"]) == pytest.approx(value)
    # The printed table's caption holds the step-4 scores, so a log without a progress bar keeps them.
    words = " ".join(printed.split())
    assert "validation examples, step 4" in words
    assert f"6 validation pairs: sacrebleu {float(trainer.callback_metrics['val/sacrebleu']):.4g}," in words
    texts = [call for call in recorder.calls if call[0] == "text"]
    assert [call[3] for call in texts] == [2, 4] and texts[0][2].count("\n") == 6 + 1


def test_learning_curve_records_every_step_and_validation_and_writes_a_png(fitted):
    trainer = fitted[0]
    (curve,) = [callback for callback in trainer.callbacks if isinstance(callback, LearningCurve)]
    assert [step for step, _ in curve.train] == [1, 2, 3, 4]
    assert all(math.isfinite(loss) and loss > 0 for _, loss in curve.train)
    assert [step for step, _ in curve.validation["val/tracked"]] == [2, 4]
    assert [step for step, _ in curve.validation["val/loss"]] == [2, 4]
    assert curve.validation["val/tracked"][-1][1] == pytest.approx(float(trainer.callback_metrics["val/tracked"]))
    assert (Path(trainer.default_root_dir) / "learning_curve.png").read_bytes()[:8] == PNG_MAGIC
    restored = LearningCurve()
    restored.load_state_dict(curve.state_dict())
    assert restored.train == curve.train and restored.validation == curve.validation


def test_model_checkpoint_monitors_a_generation_metric(fitted):
    checkpoint = fitted[2]
    assert checkpoint.best_model_score is not None and math.isfinite(float(checkpoint.best_model_score))
    assert Path(checkpoint.best_model_path).is_file()


def test_diagnostics_curves_plot_and_gating(fitted):
    trainer, module, _, recorder, _ = fitted
    metric = lambda name, t: float(trainer.callback_metrics[f"diag/{name}_t{t:.2f}"])  # noqa: E731
    values = {name: [metric(name, t) for t in TIMES] for name in ("mse", "acc", "p_true")}
    assert all(math.isfinite(v) for curve in values.values() for v in curve)
    assert all(0.0 <= v <= 1.0 for v in values["acc"] + values["p_true"])
    # Nothing of the answer is left at t = 1: the true row is one of V' exchangeable noisy logits.
    vocab = module.space.vocab_size
    assert 0.5 / vocab < values["p_true"][-1] < 2.0 / vocab
    assert values["p_true"][0] > 5 * values["p_true"][-1]
    # every_n_steps=3: the validation after step 4 is only 2 steps after the one at step 2.
    directory = Path(trainer.log_dir) / "diagnostics"
    assert (directory / "step2.png").read_bytes()[:8] == PNG_MAGIC
    assert not (directory / "step4.png").exists()
    images = [call for call in recorder.calls if call[0] == "image"]
    assert len(images) == 1 and images[0][2][2] == 3


def test_generation_metrics_needs_a_seq2seq_datamodule(word_model, pairs_dir, tmp_path):
    data = pairs_data(pairs_dir, word_model)
    data.setup("validate")
    trainer = L.Trainer(accelerator="cpu", logger=False, callbacks=[GenerationMetrics()], default_root_dir=tmp_path)
    with pytest.raises(ValueError, match="Seq2SeqDataModule"):
        trainer.validate(tiny_module(word_model), dataloaders=data.val_dataloader())


def naive_log_probs(query, embeddings, rows, mu, std, sigma0, seed, chunk_size):
    """Materialised ``log softmax(mu D0 + std eps)``, drawing ``eps`` in the streamed code's chunk order."""
    d0 = -((query[:, None, :] - embeddings[None]) ** 2).sum(-1) / (2 * sigma0**2)
    generator = torch.Generator().manual_seed(seed)
    size = embeddings.shape[0]
    noise = torch.cat(
        [
            torch.randn(query.shape[0], min(chunk_size, size - start), generator=generator)
            for start in range(0, size, chunk_size)
        ],
        dim=1,
    )
    logits = mu[:, None] * d0 + std[:, None] * noise
    return logits.log_softmax(-1), logits


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0])
def test_true_row_probability_matches_the_materialised_distribution(t):
    torch.manual_seed(0)
    vocab, dim, chunk, batch, length = 7, 8, 3, 50, 40
    # Rows far apart, as in a real high-dimensional embedding space.
    embeddings = 6 * torch.eye(dim)[:vocab] + 0.1 * torch.randn(vocab, dim)
    space = SmoothieSpace(embeddings, ArctanSchedule(), chunk_size=chunk)
    rows = torch.randint(vocab, (batch * length,))
    query = embeddings[rows]
    mu, std = space.schedule.marginal(torch.full((batch * length,), t))

    generator = torch.Generator().manual_seed(3)
    streamed = true_row_log_probs(
        query, embeddings, rows, mu, std, sigma0=space.sigma0, generator=generator, chunk_size=chunk
    )
    naive, logits = naive_log_probs(query, embeddings, rows, mu, std, space.sigma0, 3, chunk)
    torch.testing.assert_close(streamed, naive.gather(1, rows[:, None]).squeeze(1), atol=1e-4, rtol=1e-4)

    # Same seed, same noise: the scored distribution is the one whose read-out the model sees.
    generator = torch.Generator().manual_seed(3)
    read_out = space.noised_input(query.view(batch, length, dim), torch.full((batch,), t), generator)
    torch.testing.assert_close(read_out.view(-1, dim), logits.softmax(-1) @ embeddings, atol=1e-4, rtol=1e-4)

    p_true = streamed.exp().mean().item()
    if t == 0.0:
        assert p_true > 0.99
    if t == 1.0:
        assert p_true == pytest.approx(1 / vocab, rel=0.1)
