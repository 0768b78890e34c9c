"""SmoothieModule: wires the embedding matrix, the Smoothie space, the denoiser and the sampler."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import lightning as L
import torch
from torchmetrics import MeanMetric

from smoothie_pl.diffusion import SPACES, Schedule, build_sampler, build_schedule
from smoothie_pl.diffusion.embedding_losses import decoding_cross_entropy, prior_matching_loss
from smoothie_pl.diffusion.samplers import StepCallback
from smoothie_pl.embeddings import PACKAGED_MODEL, load_embedding_matrix, load_tokenizer, pretrained_encoder_origin
from smoothie_pl.errors import CheckpointMismatchError
from smoothie_pl.export import add_loading_parts
from smoothie_pl.fingerprint import (
    CHECKPOINT_KEY,
    check_compatible,
    check_weights_fit,
    fingerprint,
    vocabulary_mismatch,
)
from smoothie_pl.metrics import SacreBLEU, TextMetrics, mbr_select
from smoothie_pl.models import DenoiserConfig, NullSource, PretrainedSourceEncoder, SourceEncoder, UShapedDenoiser
from smoothie_pl.text import ids_to_text, recase_from_source
from smoothie_pl.trajectory import TrajectoryRecorder, chain

T_TRAIN_MIN = 1e-5
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Hyperparameters that decide which weights exist and their shapes: named when a checkpoint's weights do not fit.
ARCHITECTURE_OPTIONS = ("denoiser", "space", "token_head", "cfg_dropout", "source_embedding", "train_embeddings")
# State entries a loaded checkpoint is compared on by their own checks (fingerprint, vocabulary).
CHECKED_SEPARATELY = ("embedding_matrix", "vocabulary")


def _as(cls, value):
    """Accept a config object or its plain-dict form (how hyperparameters come back from a checkpoint)."""
    return value if isinstance(value, cls) else cls(**value)


def combined_seed(*seeds: int) -> int:
    """One seed that depends on every seed given (e.g. seed, rank, index)."""
    value = 0
    for seed in seeds:
        value = (value * 1_000_003 + int(seed)) % (2**63 - 1)
    return value


def seeded_generator(device: torch.device, *seeds: int) -> torch.Generator:
    """A generator on ``device`` whose stream depends on every seed given (e.g. seed, rank, index)."""
    return torch.Generator(device=device).manual_seed(combined_seed(*seeds))


def _check_guidance(cfg_dropout: float, guidance_weight: float, denoiser: DenoiserConfig) -> None:
    if not 0.0 <= cfg_dropout < 1.0:
        raise ValueError(f"cfg_dropout must be in [0, 1), got {cfg_dropout}")
    if cfg_dropout > 0 and denoiser.source_encoder == "none":
        raise ValueError("cfg_dropout drops the source, but denoiser.source_encoder is 'none' (unconditional)")
    if guidance_weight != 0 and cfg_dropout == 0:
        raise ValueError(
            f"guidance_weight {guidance_weight} needs a model trained with cfg_dropout > 0: "
            "without it the model has no unconditional prediction to guide away from"
        )


def _average(values: torch.Tensor, counted: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values [B, L]`` over all positions, or over the ``counted`` ones."""
    if counted is None:
        return values.mean()
    return (values * counted).sum() / counted.sum().clamp_min(1)


class SmoothieModule(L.LightningModule):
    """Smoothie text diffusion (arXiv 2505.18853) as a LightningModule.

    Defaults are the paper's (METHOD sections 3, 6 and 7), so a config only
    states what differs.

    Args:
        embedding: Hugging Face name or local path of the model whose input
            embeddings are diffused over (frozen, standardised); ``None`` is the
            packaged offline MiniLM.
        source_embedding: a different model whose embeddings (and tokenizer)
            the sources use, e.g. a German one for de->en; ``None``: ``embedding``.
        per_feature_standardisation: standardise ``E`` per column instead of with one scalar mean and std.
        train_embeddings: put ``E`` in the optimiser, with the prior-matching and
            decoding losses of METHOD section 4 added to the x0 loss (off: ``E`` is
            a frozen buffer).
        masked_loss: average the losses over real target tokens only, not padding.
        cfg_dropout: probability of replacing a training example's source by a
            learned null source (classifier-free guidance).
        guidance_weight: ``w`` in ``e0 = e0_c + w (e0_c - e0_u)`` at sampling; 0 is
            no guidance (needs ``cfg_dropout > 0`` otherwise).
        clamp: snap every predicted embedding to its nearest vocabulary row
            before re-noising.
        vocabulary: token ids to diffuse over (``None``: all). Stored in the
            checkpoint as a buffer, not as a hyperparameter; a module built
            with ``None`` takes a loaded checkpoint's, one built with other ids
            refuses it.
        denoiser: size and conditioning of the U-shaped transformer.
        space: the diffusion space (METHOD section 5): ``"smoothie"`` (the paper's),
            ``"gaussian"`` (Gaussian noise on embeddings) or ``"simplex"`` (TESS).
        schedule: the noise schedule by name with its parameters, e.g.
            ``{name: sd, k: 9}`` (``smoothie_pl.diffusion.SCHEDULES``: arctan, sd,
            tess, cosine, sqrt) or a ``class_path``; ``None`` or a dict without
            ``name`` is the space's own (arctan, sd, tess).
        token_head: simplex only: ``"linear"`` or ``"tied"`` token logits on the
            predicted embedding, trained with cross-entropy and used to decode.
        target_length, source_length: ``L`` and the longest source ``Lc``.
        sampler: ``"renoise"`` (the paper's), ``"ddim"``, ``"ddpm"`` or ``"sde"``; the
            last three hold the full ``[B, L, V]`` state (ablations).
        sampling_steps: steps of the sampler for test/predict/generate.
        sampling_noise_scale: multiplies the std of the noise the sampler injects
            (1 is the paper's sampler; lower is less diverse and, for
            undertrained models, less littered with frequent words).
        vocab_chunk_size, vocab_dtype: chunk of vocabulary rows per streaming
            step and the dtype of its matmuls (``"bfloat16"`` is 3-5x faster on
            CPUs with AMX/AVX512-BF16 and on GPUs).
        vocab_attention: ``"streaming"`` (never holds ``[B, L, V]``), ``"literal"``,
            the reference code's materialised formula (a baseline), or ``"fused"``,
            one Triton kernel with in-kernel Philox noise (CUDA, needs triton).
        compile_denoiser: ``torch.compile`` the denoiser in place (weights and
            checkpoint keys are unchanged). Off by default: compiling costs
            start-up time (80 s on 2 CPU cores) and a C++ compiler, for 1.3-1.4x
            faster training steps of the demo model on CPU.
        metric_set: metrics reported by ``test`` (``smoothie_pl.metrics.METRIC_SETS``:
            demo, paraphrase, summarization, simplification, translation,
            unconditional), tracked metric first; ``metric_options`` passes e.g.
            ``bertscore_model`` or ``bleu_tokenizer``.
        mbr_candidates, mbr_utility: samples per source and the utility ("bleu" or
            "rougeL") for Minimum Bayes Risk selection in test, predict and generate.
        predict_candidates: also write every MBR candidate in predictions.
        recase: restore capitals an uncased vocabulary (e.g. MiniLM's) loses,
            taking names' spelling from the source (``text.recase_from_source``).
        seed: seed of the diffusion noise; each rank and batch derives its own stream.
    """

    def __init__(
        self,
        embedding: str | None = None,
        source_embedding: str | None = None,
        per_feature_standardisation: bool = False,
        train_embeddings: bool = False,
        masked_loss: bool = False,
        cfg_dropout: float = 0.0,
        guidance_weight: float = 0.0,
        clamp: bool = False,
        vocabulary: list[int] | None = None,
        denoiser: DenoiserConfig | dict = DenoiserConfig(),
        space: str = "smoothie",
        schedule: Schedule | dict | None = None,
        token_head: str | None = None,
        target_length: int = 64,
        source_length: int = 64,
        sampler: str = "renoise",
        sampling_steps: int = 200,
        sampling_noise_scale: float = 1.0,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
        warmup_steps: int = 5000,
        warmup_start_lr: float = 1e-8,
        vocab_chunk_size: int = 1024,
        vocab_dtype: str = "float32",
        vocab_attention: str = "streaming",
        compile_denoiser: bool = False,
        metric_set: str = "demo",
        metric_options: dict | None = None,
        mbr_candidates: int = 1,
        mbr_utility: str = "bleu",
        predict_candidates: bool = False,
        recase: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        denoiser = _as(DenoiserConfig, denoiser)
        if space not in SPACES:
            raise ValueError(f"space must be one of {sorted(SPACES)}, got {space!r}")
        if token_head is not None and space != "simplex":
            raise ValueError(f"token_head is an option of the simplex space, got space={space!r}")
        if vocab_attention != "streaming" and space != "smoothie":
            raise ValueError(f"vocab_attention={vocab_attention!r} is an option of the smoothie space, got space={space!r}")
        if train_embeddings and space != "smoothie":
            # Its extra losses are written in Smoothie's distances (METHOD section 4).
            raise ValueError(f"train_embeddings needs space='smoothie', got space={space!r}")
        schedule = build_schedule(schedule, SPACES[space].default_schedule.name)
        if target_length <= 0 or source_length <= 0:
            raise ValueError(f"target_length and source_length must be positive, got {target_length}, {source_length}")
        if mbr_candidates < 1:
            raise ValueError(f"mbr_candidates must be at least 1, got {mbr_candidates}")
        if vocab_dtype not in DTYPES:
            raise ValueError(f"vocab_dtype must be one of {sorted(DTYPES)}, got {vocab_dtype!r}")
        _check_guidance(cfg_dropout, guidance_weight, denoiser)
        self.save_hyperparameters(ignore=["vocabulary", "denoiser", "schedule"])
        self.save_hyperparameters({"denoiser": asdict(denoiser), "schedule": schedule.to_dict()})
        self.sampler = build_sampler(sampler, steps=sampling_steps, noise_scale=sampling_noise_scale)

        embedding_matrix = load_embedding_matrix(embedding, per_feature_standardisation)
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
        self.denoiser = UShapedDenoiser(dim, denoiser, target_length, source_length)
        if compile_denoiser:
            self.denoiser.compile()
        if denoiser.source_encoder == "scratch":
            source_dim = self.source_embedding_matrix.shape[1] if source_embedding is not None else dim
            self.source_encoder = SourceEncoder(source_dim, denoiser.width, denoiser, source_length)
        elif denoiser.source_encoder == "pretrained":
            self.source_encoder = PretrainedSourceEncoder(
                pretrained_encoder_origin(source_embedding or embedding),
                denoiser.width,
                freeze=denoiser.freeze_source_encoder,
            )
        else:
            self.source_encoder = None
        self.null_source = NullSource(denoiser.width) if cfg_dropout > 0 else None
        self.test_metrics = TextMetrics(metric_set, **(metric_options or {}))
        # Copying the source is the baseline a seq2seq model must beat; an unconditional one has none.
        self.test_copy_sacrebleu = SacreBLEU() if denoiser.source_encoder != "none" else None
        self.val_loss = MeanMetric()  # mean over every validation pair of every rank
        # Tokenizers by model name, filled when a saved model is loaded (``smoothie_pl.export``), else loaded by name.
        self.saved_tokenizers: dict[str | None, Any] = {}

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
        space = hp.get("space", "smoothie")
        options = {"vocab_attention": hp.get("vocab_attention", "streaming")} if space == "smoothie" else {}
        if hp.get("token_head"):
            options["token_head"] = hp.token_head
        self.space = SPACES[space](
            self.embedding_matrix.detach()[vocabulary],
            build_schedule(hp.schedule, "arctan"),
            chunk_size=hp.vocab_chunk_size,
            compute_dtype=DTYPES[hp.vocab_dtype],
            **options,
        )

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
        from smoothie_pl.export import load_pretrained

        return load_pretrained(cls, path, **overrides)

    def encode_source(self, source_ids: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor | None:
        if self.source_encoder is None:
            return None
        if isinstance(self.source_encoder, PretrainedSourceEncoder):
            return self.source_encoder(source_ids, source_mask)
        if self.hparams.source_embedding is not None:
            return self.source_encoder(self.source_embedding_matrix[source_ids], source_mask)
        return self.source_encoder(self.embedding_matrix[source_ids], source_mask)

    def diffusion_loss(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        """x0-prediction MSE over all positions and features, padding included (METHOD section 3).

        ``masked_loss`` leaves padding out; ``train_embeddings`` adds the two
        embedding losses; ``cfg_dropout`` replaces some training sources by the null source.
        """
        self._follow_trained_embeddings()
        clean = self.embedding_matrix[batch["target_ids"]]
        t = torch.rand(clean.shape[0], device=self.device, generator=generator) * (1 - T_TRAIN_MIN) + T_TRAIN_MIN
        x_t = self.space.noised_input(clean, t, generator)
        source, source_mask = self.encode_source(batch["source_ids"], batch["source_mask"]), batch["source_mask"]
        if self.null_source is not None and self.training:
            drop = torch.rand(clean.shape[0], device=self.device, generator=generator) < self.hparams.cfg_dropout
            source, source_mask = self.null_source(source, source_mask, drop)
        previous = None
        if self.denoiser.config.self_conditioning and torch.rand(1, generator=generator, device=self.device) < 0.5:
            with torch.no_grad():
                previous = self.denoiser(x_t, t, source, source_mask).float()
        predicted = self.denoiser(x_t, t, source, source_mask, previous)
        counted = self._counted_positions(batch["target_ids"])
        loss = _average((predicted.float() - clean).pow(2).mean(-1), counted)
        if self.hparams.train_embeddings:
            loss = loss + self.embedding_losses(clean, batch["target_ids"], counted, generator)
        token_loss = self.space.token_loss(predicted.float(), clean)
        return loss if token_loss is None else loss + token_loss

    def _counted_positions(self, target_ids: torch.Tensor) -> torch.Tensor | None:
        """Target positions the loss averages over: all (``None``), or the real tokens with ``masked_loss``."""
        return target_ids != self.tokenizer.pad_token_id if self.hparams.masked_loss else None

    def embedding_losses(
        self, clean: torch.Tensor, target_ids: torch.Tensor, counted: torch.Tensor | None, generator: torch.Generator
    ) -> torch.Tensor:
        """Prior matching at t = 1 plus decoding cross-entropy at the smallest t (METHOD section 4).

        Both are averaged over the positions the x0 loss counts; the decoding
        term skips target tokens outside the diffused vocabulary.
        """
        schedule, sigma0 = self.space.schedule, self.space.sigma0
        vocab = self.embedding_matrix[self.vocabulary]
        flat_clean, flat_ids = clean.reshape(-1, clean.shape[-1]), target_ids.reshape(-1)
        mu_end, _ = schedule.marginal(torch.ones(1))
        prior = prior_matching_loss(flat_clean, vocab, mu_end.item(), sigma0, schedule.prior_std)

        rows = torch.searchsorted(self.vocabulary, flat_ids).clamp(max=len(self.vocabulary) - 1)
        known = (self.vocabulary[rows] == flat_ids).view(target_ids.shape)
        mu_start, std_start = schedule.marginal(torch.zeros(1))
        seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
        decoding = decoding_cross_entropy(
            flat_clean, rows, vocab, mu_start.item(), std_start.item(), sigma0, seed, self.hparams.vocab_chunk_size
        )
        decoded = known if counted is None else known & counted
        return _average(prior.view(target_ids.shape), counted) + _average(decoding.view(target_ids.shape), decoded)

    def _follow_trained_embeddings(self) -> None:
        """A trained ``E`` changes every step: rebuild the space (a detached copy) from the current one."""
        if self.hparams.train_embeddings:
            self._build_space(self.vocabulary)

    # ------------------------------------------------------------- generation
    def guided_prediction(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        source: torch.Tensor | None,
        source_mask: torch.Tensor | None,
        previous: torch.Tensor | None,
    ) -> torch.Tensor:
        """``e0_c + w (e0_c - e0_u)`` (classifier-free guidance); with ``w = 0`` only the conditional pass runs."""
        conditional = self.denoiser(x_t, t, source, source_mask, previous).float()
        weight = self.hparams.guidance_weight
        if weight == 0:
            return conditional
        everything = torch.ones(x_t.shape[0], dtype=torch.bool, device=x_t.device)
        null, null_mask = self.null_source(source, source_mask, everything)
        unconditional = self.denoiser(x_t, t, null, null_mask, previous).float()
        return conditional + weight * (conditional - unconditional)

    def clamp_to_vocabulary(self, predicted: torch.Tensor) -> torch.Tensor:
        """The nearest vocabulary row of every predicted embedding (exact rows of the space's ``E``)."""
        return self.space.embeddings[self.space.decode(predicted)]

    @torch.no_grad()
    def sample_embeddings(
        self,
        source_ids: torch.Tensor,
        source_mask: torch.Tensor,
        generator: torch.Generator,
        steps: int | None = None,
        callback: StepCallback | None = None,
    ) -> torch.Tensor:
        """Predicted clean embeddings ``[B, L, d]`` for a batch of tokenised sources.

        Self-conditioning feeds each step the previous step's (guided, unclamped)
        prediction, as training feeds the first pass's; ``clamp`` applies to
        what the sampler re-noises and to the output. ``callback(k, t, x, e0)``
        sees every step (``diffusion.samplers.StepCallback``).
        """
        self._follow_trained_embeddings()
        source = self.encode_source(source_ids, source_mask)
        sampler = self.sampler
        if steps is not None:
            sampler = build_sampler(self.hparams.sampler, steps=steps, noise_scale=self.hparams.sampling_noise_scale)

        previous = None

        def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            nonlocal previous
            previous = self.guided_prediction(x_t, t, source, source_mask, previous)
            return self.clamp_to_vocabulary(previous) if self.hparams.clamp else previous

        return sampler.sample(
            self.space, denoise, source_ids.shape[0], self.hparams.target_length, generator, callback=callback
        )

    def decode(self, embeddings: torch.Tensor) -> list[str]:
        token_ids = self.vocabulary[self.space.decode(embeddings)]
        return [ids_to_text(self.tokenizer, row) for row in token_ids.tolist()]

    def generate_candidates(
        self,
        source_ids: torch.Tensor,
        source_mask: torch.Tensor,
        seed: int,
        offset: int,
        steps: int | None = None,
        candidates: int | None = None,
        sources: list[str] | None = None,
        callback: StepCallback | None = None,
    ) -> tuple[list[str], list[list[str]]]:
        """MBR-chosen texts and all ``candidates`` samples per source (``[B][k]``).

        Candidate ``c`` of the batch starting at dataset position ``offset`` draws
        its noise from ``(seed, offset, c)``, so results do not depend on the rank
        or on how many candidates were asked for before it. ``sources`` (the raw
        strings) are needed only when ``recase`` is on.
        """
        k = candidates or self.hparams.mbr_candidates
        samples = []
        for c in range(k):
            generator = seeded_generator(self.device, seed, offset, c)
            samples.append(self.decode(self.sample_embeddings(source_ids, source_mask, generator, steps, callback)))
        per_source = [list(texts) for texts in zip(*samples)]
        if self.hparams.recase:
            per_source = [[recase_from_source(text, src) for text in texts] for texts, src in zip(per_source, sources)]
        if k == 1:
            return [texts[0] for texts in per_source], per_source
        chosen = mbr_select(per_source, self.hparams.mbr_utility)
        return [texts[i] for texts, i in zip(per_source, chosen)], per_source

    def _generate_batch(self, batch: dict) -> tuple[list[str], list[list[str]]]:
        return self.generate_candidates(
            batch["source_ids"], batch["source_mask"], self.hparams.seed, int(batch["index"][0]), sources=batch["source"]
        )

    @torch.no_grad()
    def generate(
        self,
        sources: list[str],
        steps: int | None = None,
        seed: int | None = None,
        batch_size: int = 64,
        candidates: int | None = None,
        first_index: int = 0,
        callback: StepCallback | None = None,
        trajectory: bool = False,
    ) -> list[str] | tuple[list[str], list[dict]]:
        """Generate one target per source string; the same seed gives the same texts.

        With ``candidates`` (default ``mbr_candidates``) above 1, that many samples
        are drawn per source and the MBR choice among them is returned. Noise is
        seeded per batch from its position, counted from ``first_index``: a list
        cut at multiples of ``batch_size`` gives the same texts piece by piece.

        ``callback(k, t, x, e0)`` is called after every model evaluation. With
        ``trajectory`` the texts come with one record per source holding the
        decoded text of every step (``smoothie_pl.trajectory``).
        """
        if isinstance(sources, str):
            raise TypeError("generate expects a list of source strings, got a single string")
        was_training = self.training
        self.eval()
        seed = self.hparams.seed if seed is None else seed
        outputs, trajectories = [], []
        for start in range(0, len(sources), batch_size):
            chunk = sources[start : start + batch_size]
            encoded = self.source_tokenizer(
                chunk,
                truncation=True,
                max_length=self.hparams.source_length,
                padding=True,
                return_tensors="pt",
            )
            ids, mask = encoded["input_ids"].to(self.device), encoded["attention_mask"].bool().to(self.device)
            recorder = TrajectoryRecorder(self.decode, chunk, self.hparams.recase) if trajectory else None
            chosen, per_source = self.generate_candidates(
                ids, mask, seed, first_index + start, steps, candidates, chunk, chain(callback, recorder)
            )
            outputs.extend(chosen)
            if recorder is not None:
                trajectories.extend(recorder.records(chosen, per_source, first_index + start))
        self.train(was_training)
        return (outputs, trajectories) if trajectory else outputs

    # ------------------------------------------------------------ Lightning
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        # Noise and dropout masks come from (seed, rank, step, batch): each rank draws its own,
        # and a resumed run draws what the uninterrupted run drew, with no random state to save.
        stream = (self.hparams.seed, self.global_rank, self.global_step, batch_idx)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(combined_seed(*stream))
            loss = self.diffusion_loss(batch, seeded_generator(self.device, *stream))
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["target_ids"].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        generator = seeded_generator(self.device, self.hparams.seed, int(batch["index"][0]))
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
        records = []
        for row, index in enumerate(batch["index"].tolist()):
            record = {"index": index, "source": batch["source"][row]}
            if batch["reference"][row] is not None:  # inference-only data has none
                record["reference"] = batch["reference"][row]
            record["prediction"] = predictions[row]
            if self.hparams.predict_candidates:
                record["candidates"] = candidates[row]
            records.append(record)
        return records

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(
            self.parameters(),
            lr=hp.lr,
            betas=tuple(hp.betas),
            eps=hp.eps,
            weight_decay=hp.weight_decay,
            fused=self.device.type in ("cpu", "cuda"),  # the per-tensor loop is the default on CPU: 10 % of a step
        )
        start = min(hp.warmup_start_lr / hp.lr, 1.0)

        def warmup_then_constant(step: int) -> float:
            if hp.warmup_steps <= 0 or step >= hp.warmup_steps:
                return 1.0
            return start + (1.0 - start) * step / hp.warmup_steps

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_constant)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def fingerprint(self) -> dict[str, Any]:
        """What the weights depend on (``smoothie_pl.fingerprint``); saved in every checkpoint."""
        hp = self.hparams
        return fingerprint(
            hp.embedding or PACKAGED_MODEL,
            self.embedding_matrix,
            self.tokenizer,
            self.vocabulary,
            type(self.space).__name__,
            hp.schedule,
            hp.target_length,
            hp.source_length,
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = self.fingerprint()
        add_loading_parts(checkpoint, self)  # tokenizer files and encoder configs: the checkpoint loads offline

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse a checkpoint of another embedding, tokenizer or architecture; take its vocabulary unless the data gave one."""
        state = checkpoint["state_dict"]
        matrix = state.get("embedding_matrix")
        name = getattr(self._trainer, "ckpt_path", None) or "being loaded"
        if CHECKPOINT_KEY in checkpoint:
            check_compatible(checkpoint[CHECKPOINT_KEY], self.fingerprint(), name, matrix, self.embedding_matrix)
        if matrix is not None and matrix.shape != self.embedding_matrix.shape:
            raise CheckpointMismatchError(
                f"checkpoint embedding matrix has shape {tuple(matrix.shape)} but this model's "
                f"({self.hparams.embedding or 'packaged MiniLM'}) has {tuple(self.embedding_matrix.shape)}"
            )
        saved_options = checkpoint.get("hyper_parameters", {})
        check_weights_fit(
            state,
            self.state_dict(),
            {key: saved_options.get(key) for key in ARCHITECTURE_OPTIONS},
            {key: self.hparams.get(key) for key in ARCHITECTURE_OPTIONS},
            name,
            skip=CHECKED_SEPARATELY,
        )
        if "vocabulary" in state and not torch.equal(state["vocabulary"].cpu(), self.vocabulary.cpu()):
            if self.vocabulary_requested:
                raise vocabulary_mismatch(state["vocabulary"].cpu(), self.vocabulary.cpu(), self.tokenizer, name)
            self._build_space(state["vocabulary"].to(self.embedding_matrix.device))
