"""SmoothieModule: wires the embedding matrix, the Smoothie space, the denoiser and the sampler."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from smoothie_pl.diffusion import ArctanSchedule, SmoothieSpace, build_sampler
from smoothie_pl.embeddings import load_embedding_matrix, load_tokenizer, resolve_embedding_source
from smoothie_pl.metrics import SacreBLEU, TextMetrics, mbr_select
from smoothie_pl.models import DenoiserConfig, PretrainedSourceEncoder, SourceEncoder, UShapedDenoiser
from smoothie_pl.text import ids_to_text, recase_from_source

T_TRAIN_MIN = 1e-5
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _as(cls, value):
    """Accept a config object or its plain-dict form (how hyperparameters come back from a checkpoint)."""
    return value if isinstance(value, cls) else cls(**value)


def seeded_generator(device: torch.device, *seeds: int) -> torch.Generator:
    """A generator on ``device`` whose stream depends on every seed given (e.g. seed, rank, index)."""
    value = 0
    for seed in seeds:
        value = (value * 1_000_003 + int(seed)) % (2**63 - 1)
    return torch.Generator(device=device).manual_seed(value)


class SmoothieModule(L.LightningModule):
    """Smoothie text diffusion (arXiv 2505.18853) as a LightningModule.

    Defaults are the paper's (METHOD sections 3, 6 and 7), so a config only
    states what differs.

    Args:
        embedding: Hugging Face name or local path of the model whose input
            embeddings are diffused over (frozen, standardised); ``None`` is the
            packaged offline MiniLM.
        vocabulary: token ids to diffuse over (``None``: all). Stored in the
            checkpoint as a buffer, not as a hyperparameter.
        denoiser: size and conditioning of the U-shaped transformer.
        schedule: the arctan noise schedule.
        target_length, source_length: ``L`` and the longest source ``Lc``.
        sampling_steps: steps of the re-noise sampler for test/predict/generate.
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
            start-up time, and its gain has not been measured here yet.
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
        per_feature_standardisation: bool = False,
        vocabulary: list[int] | None = None,
        denoiser: DenoiserConfig | dict = DenoiserConfig(),
        schedule: ArctanSchedule | dict = ArctanSchedule(),
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
        denoiser, schedule = _as(DenoiserConfig, denoiser), _as(ArctanSchedule, schedule)
        if target_length <= 0 or source_length <= 0:
            raise ValueError(f"target_length and source_length must be positive, got {target_length}, {source_length}")
        if mbr_candidates < 1:
            raise ValueError(f"mbr_candidates must be at least 1, got {mbr_candidates}")
        if vocab_dtype not in DTYPES:
            raise ValueError(f"vocab_dtype must be one of {sorted(DTYPES)}, got {vocab_dtype!r}")
        self.save_hyperparameters(ignore=["vocabulary", "denoiser", "schedule"])
        self.save_hyperparameters({"denoiser": asdict(denoiser), "schedule": asdict(schedule)})
        self.sampler = build_sampler(sampler, steps=sampling_steps, noise_scale=sampling_noise_scale)

        embedding_matrix = load_embedding_matrix(embedding, per_feature_standardisation)
        self.register_buffer("embedding_matrix", embedding_matrix)
        rows = torch.arange(embedding_matrix.shape[0]) if vocabulary is None else torch.tensor(sorted(vocabulary))
        self._build_space(rows)

        dim = embedding_matrix.shape[1]
        self.denoiser = UShapedDenoiser(dim, denoiser, target_length, source_length)
        if compile_denoiser:
            self.denoiser.compile()
        if denoiser.source_encoder == "scratch":
            self.source_encoder = SourceEncoder(dim, denoiser.width, denoiser, source_length)
        elif denoiser.source_encoder == "pretrained":
            self.source_encoder = PretrainedSourceEncoder(
                resolve_embedding_source(embedding), denoiser.width, freeze=denoiser.freeze_source_encoder
            )
        else:
            self.source_encoder = None
        self.test_metrics = TextMetrics(metric_set, **(metric_options or {}))
        self.test_copy_sacrebleu = SacreBLEU()
        self._train_generator: torch.Generator | None = None

    # ----------------------------------------------------------------- parts
    def _build_space(self, vocabulary: torch.Tensor) -> None:
        """(Re)build the space over the rows ``vocabulary`` of the embedding matrix."""
        if vocabulary.numel() and int(vocabulary.max()) >= self.embedding_matrix.shape[0]:
            raise ValueError(
                f"vocabulary holds token id {int(vocabulary.max())} but the embedding matrix of "
                f"{self.hparams.embedding or 'the packaged MiniLM'} has {self.embedding_matrix.shape[0]} rows"
            )
        self.register_buffer("vocabulary", vocabulary.to(self.embedding_matrix.device))
        self.space = SmoothieSpace(
            self.embedding_matrix[vocabulary],
            ArctanSchedule(**self.hparams.schedule),
            chunk_size=self.hparams.vocab_chunk_size,
            compute_dtype=DTYPES[self.hparams.vocab_dtype],
            vocab_attention=self.hparams.vocab_attention,
        )

    @property
    def tokenizer(self):
        return load_tokenizer(self.hparams.embedding)

    def encode_source(self, source_ids: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor | None:
        if self.source_encoder is None:
            return None
        if isinstance(self.source_encoder, PretrainedSourceEncoder):
            return self.source_encoder(source_ids, source_mask)
        return self.source_encoder(self.embedding_matrix[source_ids], source_mask)

    def diffusion_loss(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        """x0-prediction MSE over all positions and features, padding included (METHOD section 3)."""
        clean = self.embedding_matrix[batch["target_ids"]]
        t = torch.rand(clean.shape[0], device=self.device, generator=generator) * (1 - T_TRAIN_MIN) + T_TRAIN_MIN
        x_t = self.space.noised_input(clean, t, generator)
        source, source_mask = self.encode_source(batch["source_ids"], batch["source_mask"]), batch["source_mask"]
        previous = None
        if self.denoiser.config.self_conditioning and torch.rand(1, generator=generator, device=self.device) < 0.5:
            with torch.no_grad():
                previous = self.denoiser(x_t, t, source, source_mask).float()
        predicted = self.denoiser(x_t, t, source, source_mask, previous)
        return F.mse_loss(predicted.float(), clean)

    # ------------------------------------------------------------- generation
    @torch.no_grad()
    def sample_embeddings(
        self, source_ids: torch.Tensor, source_mask: torch.Tensor, generator: torch.Generator, steps: int | None = None
    ) -> torch.Tensor:
        """Predicted clean embeddings ``[B, L, d]`` for a batch of tokenised sources."""
        source = self.encode_source(source_ids, source_mask)
        sampler = self.sampler
        if steps is not None:
            sampler = build_sampler(self.hparams.sampler, steps=steps, noise_scale=self.hparams.sampling_noise_scale)

        previous = None

        def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            nonlocal previous
            previous = self.denoiser(x_t, t, source, source_mask, previous).float()
            return previous

        return sampler.sample(self.space, denoise, source_ids.shape[0], self.hparams.target_length, generator)

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
            samples.append(self.decode(self.sample_embeddings(source_ids, source_mask, generator, steps)))
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
    ) -> list[str]:
        """Generate one target per source string; the same seed gives the same texts.

        With ``candidates`` (default ``mbr_candidates``) above 1, that many samples
        are drawn per source and the MBR choice among them is returned.
        """
        if isinstance(sources, str):
            raise TypeError("generate expects a list of source strings, got a single string")
        was_training = self.training
        self.eval()
        seed = self.hparams.seed if seed is None else seed
        outputs = []
        for start in range(0, len(sources), batch_size):
            chunk = sources[start : start + batch_size]
            encoded = self.tokenizer(
                chunk,
                truncation=True,
                max_length=self.hparams.source_length,
                padding=True,
                return_tensors="pt",
            )
            ids, mask = encoded["input_ids"].to(self.device), encoded["attention_mask"].bool().to(self.device)
            outputs.extend(self.generate_candidates(ids, mask, seed, start, steps, candidates, chunk)[0])
        self.train(was_training)
        return outputs

    # ------------------------------------------------------------ Lightning
    def on_fit_start(self) -> None:
        self._train_generator = seeded_generator(self.device, self.hparams.seed, self.global_rank, self.global_step)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.diffusion_loss(batch, self._train_generator)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["target_ids"].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        generator = seeded_generator(self.device, self.hparams.seed, int(batch["index"][0]))
        loss = self.diffusion_loss(batch, generator)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=batch["target_ids"].shape[0])

    def test_step(self, batch: dict, batch_idx: int) -> None:
        predictions, _ = self._generate_batch(batch)
        self.test_metrics.update(sources=batch["source"], predictions=predictions, references=batch["reference"])
        self.test_copy_sacrebleu.update(batch["source"], batch["reference"])

    def on_test_epoch_start(self) -> None:
        self.test_metrics.reset()
        self.test_copy_sacrebleu.reset()

    def on_test_epoch_end(self) -> None:
        """Every metric of the configured set over the whole split (torchmetrics gathers DDP shards)."""
        for name, value in self.test_metrics.compute().items():
            self.log(f"test/{name}", value)
        self.log("test/copy_source_sacrebleu", self.test_copy_sacrebleu.compute())

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict[str, Any]]:
        predictions, candidates = self._generate_batch(batch)
        records = []
        for row, index in enumerate(batch["index"].tolist()):
            record = {
                "index": index,
                "source": batch["source"][row],
                "reference": batch["reference"][row],
                "prediction": predictions[row],
            }
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

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Take the checkpoint's vocabulary rows before its weights are loaded."""
        state = checkpoint["state_dict"]
        matrix = state.get("embedding_matrix")
        if matrix is not None and matrix.shape != self.embedding_matrix.shape:
            raise ValueError(
                f"checkpoint embedding matrix has shape {tuple(matrix.shape)} but this model's "
                f"({self.hparams.embedding or 'packaged MiniLM'}) has {tuple(self.embedding_matrix.shape)}"
            )
        if "vocabulary" in state and not torch.equal(state["vocabulary"].cpu(), self.vocabulary.cpu()):
            self._build_space(state["vocabulary"].to(self.embedding_matrix.device))
