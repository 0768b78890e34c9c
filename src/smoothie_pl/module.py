"""SmoothieModule: training, validation loss and optimisation; generation goes through ``SmoothiePipeline``."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics import MeanMetric

from smoothie_pl.arguments import check_generate_arguments, warn_long_sources
from smoothie_pl.callbacks.prediction_writer import prediction_records
from smoothie_pl.checkpoint_io import load_verified
from smoothie_pl.compatibility import check_checkpoint_fits, check_embedding_fits, checkpoint_name
from smoothie_pl.compilation import compile_in_place
from smoothie_pl.diffusion import SPACES, Schedule, StepCallback, build_schedule
from smoothie_pl.diffusion.embedding_losses import embedding_losses, position_mean, prediction_decoding_loss
from smoothie_pl.embeddings import PACKAGED_MODEL, load_embedding_matrix, load_tokenizer, pretrained_encoder_origin
from smoothie_pl.export import CASING_KEY, add_loading_parts, load_pretrained
from smoothie_pl.fingerprint import CHECKPOINT_KEY, fingerprint, tensor_digest
from smoothie_pl.metrics import SacreBLEU, TextMetrics
from smoothie_pl.models import DenoiserConfig, NullSource, UShapedDenoiser, build_source_encoder
from smoothie_pl.optim import adamw_with_warmup
from smoothie_pl.options import EvalConfig, OptimConfig, SamplingConfig, check_model_options, option_groups
from smoothie_pl.pipeline import SmoothiePipeline, combined_seed, seeded_generator
from smoothie_pl.precision import compute_path, fastest_autocast, vocab_compute_dtype
from smoothie_pl.text import leading_special_tokens

T_TRAIN_MIN = 1e-5


class SmoothieModule(L.LightningModule):
    """Smoothie text diffusion (arXiv 2505.18853) as a LightningModule.

    Defaults are the paper's (METHOD sections 3, 6 and 7), so a config only states what
    differs; ``docs/options.md`` describes every option. The groups ``denoiser``, ``sampling``,
    ``optim`` and ``evaluation`` take their dataclass or its plain dict (how checkpoints keep them).
    """

    def __init__(
        self,
        embedding: str | None = None,
        source_embedding: str | None = None,
        per_feature_standardisation: bool = False,
        train_embeddings: bool = False,
        masked_loss: bool = False,
        decoding_loss_weight: float = 0.0,
        train_time_power: float = 1.0,
        length_from_source: int | None = None,
        cfg_dropout: float = 0.0,
        vocabulary: list[int] | None = None,
        denoiser: DenoiserConfig | dict = DenoiserConfig(),
        space: str = "smoothie",
        schedule: Schedule | dict | None = None,
        token_head: str | None = None,
        target_length: int = 64,
        source_length: int = 64,
        vocab_chunk_size: int = 1024,
        vocab_dtype: str = "auto",
        vocab_attention: str = "streaming",
        compile_denoiser: bool = False,
        sampling: SamplingConfig | dict = SamplingConfig(),
        optim: OptimConfig | dict = OptimConfig(),
        evaluation: EvalConfig | dict = EvalConfig(),
        seed: int = 0,
    ) -> None:
        super().__init__()
        groups = option_groups(denoiser=denoiser, sampling=sampling, optim=optim, evaluation=evaluation)
        denoiser, self.sampling, self.optim, self.evaluation = groups.values()
        check_model_options(
            space, token_head, vocab_attention, train_embeddings, target_length, source_length, vocab_dtype,
            cfg_dropout, self.sampling, denoiser, source_embedding, self.optim, length_from_source,
        )  # fmt: skip
        schedule = build_schedule(schedule, SPACES[space].default_schedule.name)
        self.save_hyperparameters(ignore=["vocabulary", "schedule", *groups])
        plain = {key: asdict(value) for key, value in groups.items()}  # what a checkpoint reloads without our classes
        self.save_hyperparameters({**plain, "schedule": schedule.to_dict()})
        self.sampler = self.sampling.build_sampler()

        embedding_matrix = load_embedding_matrix(embedding, per_feature_standardisation)
        self.pretrained_embedding_sha256 = tensor_digest(embedding_matrix)  # what a trained E is checked on
        if train_embeddings:
            self.embedding_matrix = torch.nn.Parameter(embedding_matrix)
        else:
            self.register_buffer("embedding_matrix", embedding_matrix)
        rows = torch.arange(embedding_matrix.shape[0]) if vocabulary is None else torch.tensor(sorted(vocabulary))
        self.vocabulary_requested = vocabulary is not None  # else a checkpoint's vocabulary is taken on loading
        self._build_space(rows)

        if source_embedding is not None and denoiser.source_encoder == "scratch":
            source_matrix = load_embedding_matrix(source_embedding, per_feature_standardisation)
            self.register_buffer("source_embedding_matrix", source_matrix)
        dim = embedding_matrix.shape[1]
        # Tokenizers by model name, filled when a saved model is loaded (``smoothie_pl.export``), else loaded by name.
        self.saved_tokenizers: dict[str | None, Any] = {}
        aligned = denoiser.aligned_source or denoiser.source_skip
        leading = leading_special_tokens(self.source_tokenizer) if aligned else 0
        self.denoiser = UShapedDenoiser(dim, denoiser, target_length, leading)
        self.denoiser_compiled = compile_denoiser and compile_in_place(self.denoiser)
        source_dim = self.source_embedding_matrix.shape[1] if hasattr(self, "source_embedding_matrix") else dim
        pretrained = pretrained_encoder_origin(source_embedding or embedding) if denoiser.source_encoder == "pretrained" else None
        self.source_encoder = build_source_encoder(denoiser, source_dim, source_length, pretrained)
        self.null_source = NullSource(denoiser.width) if cfg_dropout > 0 else None
        self.test_metrics = TextMetrics(self.evaluation.metric_set, **(self.evaluation.metric_options or {}))
        # Copying the source is the baseline a seq2seq model must beat; an unconditional one has none.
        self.test_copy_sacrebleu = SacreBLEU() if denoiser.source_encoder != "none" else None
        self.val_loss = MeanMetric()  # mean over every validation pair of every rank
        # How the training targets spell the words they capitalise (``text.learn_casing``), for recasing an
        # uncased vocabulary's output: from the data at fit, else from the checkpoint or exported model.
        self.casing: dict[str, str] | None = None

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs) -> "SmoothieModule":
        """Lightning's, from a file ``checkpoint_io.load_verified`` accepts, read without unpickling code."""
        load_verified(checkpoint_path)
        return super().load_from_checkpoint(checkpoint_path, *args, **{**kwargs, "weights_only": True})

    # ----------------------------------------------------------------- parts
    def _build_space(self, vocabulary: torch.Tensor) -> None:
        """(Re)build the space over the rows ``vocabulary`` of the embedding matrix."""
        if vocabulary.numel() and int(vocabulary.max()) >= self.embedding_matrix.shape[0]:
            raise ValueError(
                f"vocabulary holds token id {int(vocabulary.max())} but the embedding matrix of "
                f"{self.hparams.embedding or 'the packaged MiniLM'} has {self.embedding_matrix.shape[0]} rows"
            )
        self.register_buffer("vocabulary", vocabulary.to(self.embedding_matrix.device))
        hp = self.hparams
        options = {"vocab_attention": hp.vocab_attention} if hp.space == "smoothie" else {}
        options |= {"token_head": hp.token_head} if hp.token_head else {}
        schedule = build_schedule(hp.schedule, SPACES[hp.space].default_schedule.name)
        dtype = vocab_compute_dtype(hp.vocab_dtype, self._compute_device())
        rows = self.embedding_matrix.detach()[vocabulary]
        self.space = SPACES[hp.space](rows, schedule, chunk_size=hp.vocab_chunk_size, compute_dtype=dtype, **options)

    def _compute_device(self) -> torch.device:
        """Where the vocabulary matmuls will run: the trainer's device once attached (before the move), else ``E``'s."""
        try:
            return self.trainer.strategy.root_device
        except RuntimeError:  # not attached to a trainer
            return self.embedding_matrix.device

    @property
    def tokenizer(self):
        return self._tokenizer_of(self.hparams.embedding)

    @property
    def source_tokenizer(self):
        return self._tokenizer_of(self.hparams.source_embedding or self.hparams.embedding)

    def _tokenizer_of(self, name: str | None):
        return self.saved_tokenizers[name] if name in self.saved_tokenizers else load_tokenizer(name)

    @classmethod
    def from_pretrained(cls, path: str, **overrides: Any) -> "SmoothieModule":
        """A model from an exported folder or a checkpoint, offline (``smoothie_pl.export.load_pretrained``)."""
        return load_pretrained(cls, path, **overrides)

    @property
    def pipeline(self) -> SmoothiePipeline:
        """The generation pipeline over this module's current parts (and its current ``E``)."""
        hp = self.hparams
        if hp.train_embeddings:  # a trained E changes every step: rebuild the space (a detached copy) from it
            self._build_space(self.vocabulary)
        scratch_source = hp.source_embedding is not None and hp.denoiser["source_encoder"] == "scratch"
        return SmoothiePipeline(
            self.space, self.denoiser, self.vocabulary, self.tokenizer, self.source_tokenizer, self.sampler,
            hp.target_length, hp.source_length,
            source_encoder=self.source_encoder,
            source_embeddings=self.source_embedding_matrix if scratch_source else self.embedding_matrix,
            null_source=self.null_source,
            length_from_source=hp.length_from_source,
            casing=self.casing,
            **self.sampling.pipeline_options(),
        )  # fmt: skip

    def diffusion_loss(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        """x0-prediction MSE over all positions and features, padding included (METHOD section 3).

        ``t = u ** train_time_power`` (``u`` uniform; 1 is the paper's); ``masked_loss`` leaves padding out;
        ``length_from_source`` models only each pair's window (``SmoothiePipeline.target_window``);
        ``train_embeddings`` adds the two embedding losses; ``cfg_dropout`` replaces some sources by the null one.
        """
        pipeline = self.pipeline
        width, live = pipeline.target_window(batch["source_mask"])
        target_ids = batch["target_ids"][:, :width]
        clean = self.embedding_matrix[target_ids]
        u = torch.rand(clean.shape[0], device=self.device, generator=generator)
        t = u.pow(self.hparams.train_time_power) * (1 - T_TRAIN_MIN) + T_TRAIN_MIN
        x_t = self.space.noised_input(clean, t, generator)
        source, source_mask = pipeline.encode_source(batch["source_ids"], batch["source_mask"]), batch["source_mask"]
        source_copy = pipeline.source_copy(batch["source_ids"], width)
        if self.null_source is not None and self.training:
            drop = torch.rand(clean.shape[0], device=self.device, generator=generator) < self.hparams.cfg_dropout
            source, source_mask = self.null_source(source, source_mask, drop)
            if source_copy is not None:  # a dropped source is not copied either
                source_copy = source_copy * (~drop)[:, None, None].to(source_copy.dtype)
        previous = None
        if self.denoiser.config.self_conditioning and torch.rand(1, generator=generator, device=self.device) < 0.5:
            with torch.no_grad():
                previous = self.denoiser(x_t, t, source, source_mask, source_copy=source_copy, target_mask=live)
                previous = previous.float()
        predicted = self.denoiser(x_t, t, source, source_mask, previous, source_copy, live)
        counted = target_ids != self.tokenizer.pad_token_id if self.hparams.masked_loss else None
        if live is not None:
            counted = live if counted is None else counted & live
        loss = position_mean((predicted.float() - clean).pow(2).mean(-1), counted)
        if self.hparams.train_embeddings:
            loss = loss + embedding_losses(
                self.space, self.vocabulary, self.embedding_matrix, clean, target_ids, counted, generator,
                self.hparams.vocab_chunk_size,
            )  # fmt: skip
        if self.hparams.decoding_loss_weight:
            loss = loss + self.hparams.decoding_loss_weight * prediction_decoding_loss(
                self.space, self.vocabulary, predicted, target_ids, counted, self.hparams.vocab_chunk_size
            )
        token_loss = self.space.token_loss(predicted.float(), clean, counted)
        return loss if token_loss is None else loss + token_loss

    # ------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(
        self, sources: list[str], steps: int | None = None, seed: int | None = None, batch_size: int = 64,
        candidates: int | None = None, first_index: int = 0, callback: StepCallback | None = None, trajectory: bool = False,
    ) -> list[str] | tuple[list[str], list[dict]]:  # fmt: skip
        """``SmoothiePipeline.generate`` in eval mode, arguments checked first; ``seed`` defaults to the model's.

        ``candidates`` (default ``sampling.mbr_candidates``) above 1: the MBR choice among that many samples.
        """
        check_generate_arguments(sources, steps, seed, batch_size, candidates, first_index)
        warn_long_sources(self.source_tokenizer, sources, self.hparams.source_length)
        was_training, seed = self.training, self.hparams.seed if seed is None else seed
        try:
            with fastest_autocast(self.device):
                pipeline = self.eval().pipeline
                return pipeline.generate(sources, seed, steps, batch_size, candidates, first_index, callback, trajectory)
        finally:
            self.train(was_training)

    def _generate_batch(self, batch: dict) -> tuple[list[str], list[list[str]]]:
        with fastest_autocast(self.device):
            return self.pipeline.generate_candidates(
                batch["source_ids"], batch["source_mask"], self.hparams.seed, int(batch["index"][0]), sources=batch["source"]
            )

    # ------------------------------------------------------------ Lightning
    def setup(self, stage: str) -> None:
        """Choose the vocabulary dtype for the device the trainer runs on, and say which compute path runs;
        at ``fit``, learn the training targets' casing unless the module already has one."""
        device = self._compute_device()
        if vocab_compute_dtype(self.hparams.vocab_dtype, device) != self.space.compute_dtype:
            self._build_space(self.vocabulary)  # "auto" on another device than the one the module was built on
        precision, vocab = str(self.trainer.precision), (self.space.compute_dtype, self.hparams.vocab_dtype)
        rank_zero_info(compute_path(device, precision, *vocab, self.denoiser_compiled))
        target_casing = getattr(self.trainer.datamodule, "target_casing", None)
        if stage == "fit" and self.casing is None and target_casing is not None:
            self.casing = target_casing()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        # Noise and dropout masks come from (seed, rank, step, batch): each rank draws its own,
        # and a resumed run draws what the uninterrupted run drew, with no random state to save.
        stream = (self.hparams.seed, self.global_rank, self.global_step, batch_idx)
        cuda = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), fastest_autocast(self.device):
            torch.manual_seed(combined_seed(*stream))
            loss = self.diffusion_loss(batch, seeded_generator(self.device, *stream))
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["target_ids"].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        generator = seeded_generator(self.device, self.hparams.seed, int(batch["index"][0]))
        with fastest_autocast(self.device):
            loss = self.diffusion_loss(batch, generator)
        self.val_loss.update(loss, weight=batch["target_ids"].shape[0])
        self.log("val/loss", self.val_loss, prog_bar=True)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        predictions, _ = self._generate_batch(batch)
        self.test_metrics.update(sources=batch["source"], predictions=predictions, references=batch["reference"])
        if self.test_copy_sacrebleu is not None:
            self.test_copy_sacrebleu.update(batch["source"], batch["reference"])

    def on_test_epoch_start(self) -> None:
        self.test_metrics.reset()
        if self.test_copy_sacrebleu is not None:
            self.test_copy_sacrebleu.reset()

    def on_test_epoch_end(self) -> None:
        """Every metric of the configured set over the whole split (torchmetrics gathers DDP shards)."""
        for name, value in self.test_metrics.compute().items():
            self.log(f"test/{name}", value)
        if self.test_copy_sacrebleu is not None:
            self.log("test/copy_source_sacrebleu", self.test_copy_sacrebleu.compute())

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict[str, Any]]:
        predictions, candidates = self._generate_batch(batch)
        return prediction_records(batch, predictions, candidates if self.evaluation.predict_candidates else None)

    def configure_optimizers(self):
        fused = self.device.type in ("cpu", "cuda")  # the per-tensor loop is the default on CPU: 10 % of a step
        optimizer, scheduler = adamw_with_warmup(self.parameters(), self.optim, fused)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def fingerprint(self) -> dict[str, Any]:
        """What the weights depend on (``smoothie_pl.fingerprint``); saved in every checkpoint."""
        hp = self.hparams
        return fingerprint(
            hp.embedding or PACKAGED_MODEL, self.embedding_matrix, self.pretrained_embedding_sha256, hp.train_embeddings,
            self.tokenizer, self.vocabulary, type(self.space).__name__, hp.schedule, hp.target_length, hp.source_length,
        )  # fmt: skip

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = self.fingerprint()
        add_loading_parts(checkpoint, self)  # tokenizer files and encoder configs: the checkpoint loads offline

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse a checkpoint of another embedding, tokenizer or architecture; take its vocabulary unless the data
        gave one, and the casing it was trained with."""
        vocabulary = check_embedding_fits(self, checkpoint, checkpoint_name(self))
        if vocabulary is not None:  # vocabulary-shaped weights (a simplex model's token head) follow it
            self._build_space(vocabulary.to(self.embedding_matrix.device))
        check_checkpoint_fits(self, checkpoint, checkpoint_name(self))
        self.casing = checkpoint.get(CASING_KEY, self.casing)
