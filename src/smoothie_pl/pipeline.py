"""SmoothiePipeline: generation from a trained model, in plain PyTorch (no Lightning).

Test, predict, ``SmoothieModule.generate`` and the training-time generation
callbacks all go through it, so a sampling experiment (a guidance variant, a
new sampler, a per-step probe) changes this file or passes a callback, never
the LightningModule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial

import torch
from torch import nn

from smoothie_pl.diffusion import DiffusionSpace, Sampler, StepCallback
from smoothie_pl.diffusion.embedding_losses import vocabulary_rows
from smoothie_pl.metrics.mbr import mbr_select
from smoothie_pl.models import NullSource, PretrainedSourceEncoder, UShapedDenoiser
from smoothie_pl.models.denoiser import at_target_positions
from smoothie_pl.text import ids_to_text, recase
from smoothie_pl.trajectory import TrajectoryRecorder, chain


def combined_seed(*seeds: int) -> int:
    """One seed that depends on every seed given (e.g. seed, rank, index)."""
    value = 0
    for seed in seeds:
        value = (value * 1_000_003 + int(seed)) % (2**63 - 1)
    return value


def seeded_generator(device: torch.device, *seeds: int) -> torch.Generator:
    """A generator on ``device`` whose stream depends on every seed given (e.g. seed, rank, index)."""
    return torch.Generator(device=device).manual_seed(combined_seed(*seeds))


class SmoothiePipeline:
    """The parts of a trained model that generate: space, denoiser, source encoder, null source, tokenizers.

    Args:
        space: the diffusion space (holds ``E`` over the diffused vocabulary rows).
        denoiser: the U-shaped transformer.
        vocabulary: token id of every row of the space, ``[V]``.
        tokenizer, source_tokenizer: of the targets and of the sources.
        sampler: the sampler of ``sample`` (its steps unless ``steps`` is given).
        target_length, source_length: ``L`` and the longest source ``Lc``.
        source_encoder: ``None`` for an unconditional model.
        source_embeddings: the matrix a scratch source encoder reads token ids through.
        null_source: the learned null source of classifier-free guidance.
        guidance_weight: ``w`` in ``e0_c + w (e0_c - e0_u)``.
        clamp: snap each prediction to its nearest vocabulary row before re-noising and at the end.
        mbr_candidates, mbr_utility: samples per source and the utility of the MBR choice.
        recase: restore capitals (for uncased vocabularies) from the source, then from ``casing``.
        casing: usual spellings of words the training targets capitalise (``text.learn_casing``).
        collapse_repeats: one word of each run of equal words in the decoded text.
        length_from_source: ``m`` models only the first ``n + m`` target positions of a pair
            whose source has ``n`` tokens (specials not counted; at most ``target_length``),
            in training and sampling alike; ``None`` models all ``target_length``.
    """

    def __init__(
        self,
        space: DiffusionSpace,
        denoiser: UShapedDenoiser,
        vocabulary: torch.Tensor,
        tokenizer,
        source_tokenizer,
        sampler: Sampler,
        target_length: int,
        source_length: int,
        source_encoder: nn.Module | None = None,
        source_embeddings: torch.Tensor | None = None,
        null_source: NullSource | None = None,
        guidance_weight: float = 0.0,
        clamp: bool = False,
        mbr_candidates: int = 1,
        mbr_utility: str = "bleu",
        recase: bool = False,
        collapse_repeats: bool = False,
        length_from_source: int | None = None,
        casing: Mapping[str, str] | None = None,
    ) -> None:
        self.space, self.denoiser, self.vocabulary = space, denoiser, vocabulary
        self.tokenizer, self.source_tokenizer = tokenizer, source_tokenizer
        self.sampler = sampler
        self.target_length, self.source_length = target_length, source_length
        self.source_encoder, self.source_embeddings, self.null_source = source_encoder, source_embeddings, null_source
        self.guidance_weight, self.clamp = guidance_weight, clamp
        self.mbr_candidates, self.mbr_utility, self.recase = mbr_candidates, mbr_utility, recase
        self.collapse_repeats = collapse_repeats
        self.length_from_source = length_from_source
        self.casing = casing

    @property
    def device(self) -> torch.device:
        return self.vocabulary.device

    def encode_source(self, source_ids: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor | None:
        """The encoded sources ``[B, Lc, width]`` (``None`` for an unconditional model)."""
        if self.source_encoder is None:
            return None
        if isinstance(self.source_encoder, PretrainedSourceEncoder):
            return self.source_encoder(source_ids, source_mask)
        return self.source_encoder(self.source_embeddings[source_ids], source_mask)

    def target_window(self, source_mask: torch.Tensor) -> tuple[int, torch.Tensor | None]:
        """The target positions modelled for a batch: the batch's width and which are live, ``[B, width]``.

        Without ``length_from_source``: all ``target_length`` positions, no mask. With it,
        ``n + m`` positions for a source of ``n`` tokens, so short pairs cost little
        (with length-bucketed batches, ``data.length_buckets``); the mask is
        ``None`` when every position of the batch is live.
        """
        if self.length_from_source is None:
            return self.target_length, None
        specials = self.source_tokenizer.num_special_tokens_to_add(pair=False)
        tokens = source_mask.sum(dim=1) - specials
        windows = (tokens + self.length_from_source).clamp(1, self.target_length)
        width = int(windows.max())
        live = torch.arange(width, device=source_mask.device) < windows[:, None]
        return width, None if bool(live.all()) else live

    def source_copy(self, source_ids: torch.Tensor, length: int | None = None) -> torch.Tensor | None:
        """The source's token embeddings in the target's space, for the denoiser to copy from.

        ``source_pointer``: as the source has them, ``[B, Ls, d]``. ``source_skip``: source token
        ``i`` (after its leading specials) at target position ``i``, ``[B, L, d]``, the pad
        embedding past the source's end; ``length`` defaults to ``target_length``. Else ``None``.
        """
        config = self.denoiser.config
        if config.source_pointer:
            return self.source_embeddings[source_ids]
        if not config.source_skip:
            return None
        offset, pad = self.denoiser.leading_source_tokens, self.source_tokenizer.pad_token_id
        return self.source_embeddings[at_target_positions(source_ids, offset, length or self.target_length, pad)]

    def guided_prediction(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        source: torch.Tensor | None,
        source_mask: torch.Tensor | None,
        previous: torch.Tensor | None,
        source_copy: torch.Tensor | None = None,
        target_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``e0_c + w (e0_c - e0_u)`` (classifier-free guidance); with ``w = 0`` only the conditional pass runs.

        The unconditional pass has no source, so it copies nothing: a zero ``source_copy``,
        as a dropped source gets in training.
        """
        conditional = self.denoiser(x_t, t, source, source_mask, previous, source_copy, target_mask).float()
        if self.guidance_weight == 0:
            return conditional
        everything = torch.ones(x_t.shape[0], dtype=torch.bool, device=x_t.device)
        null, null_mask = self.null_source(source, source_mask, everything)
        no_copy = None if source_copy is None else torch.zeros_like(source_copy)
        unconditional = self.denoiser(x_t, t, null, null_mask, previous, no_copy, target_mask).float()
        return conditional + self.guidance_weight * (conditional - unconditional)

    def clamp_to_vocabulary(self, predicted: torch.Tensor) -> torch.Tensor:
        """The nearest vocabulary row of every predicted embedding (exact rows of the space's ``E``).

        Found in the space's compute dtype: in bf16 a clamped sampling step is 1.2x faster at batch 64, and the
        rows it picks differ from the fp32 scan's in 0.0-0.6 % of positions, all near-ties (at most 1.2 % farther).
        """
        return self.space.embeddings[self.space.decode(predicted, exact=False)]

    def sampler_with(self, steps: int | None) -> Sampler:
        """The configured sampler, or the same kind with ``steps`` steps."""
        if steps is None:
            return self.sampler
        sampler = self.sampler
        return type(sampler)(steps=steps, noise_scale=sampler.noise_scale, grid=sampler.grid)

    @torch.no_grad()
    def sample(
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
        sees every step (``e0`` as the sampler gets it, i.e. after clamping).
        With ``length_from_source`` the batch has its window's width, and positions
        past a pair's window hold the pad embedding; nothing is drawn, clamped or
        re-noised for them (in a batch of verses in file order, a third of the positions).
        """
        width, live = self.target_window(source_mask)
        source, source_copy = self.encode_source(source_ids, source_mask), self.source_copy(source_ids, width)
        pad = None if live is None else self.pad_embedding()
        previous = None

        def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            nonlocal previous
            previous = self.guided_prediction(x_t, t, source, source_mask, previous, source_copy, live)
            if live is None:
                return self.clamp_to_vocabulary(previous) if self.clamp else previous
            predicted = pad.to(previous.dtype).expand_as(previous).clone()
            predicted[live] = self.clamp_to_vocabulary(previous[live]) if self.clamp else previous[live]
            return predicted

        sampler = self.sampler_with(steps)
        return sampler.sample(self.space, denoise, source_ids.shape[0], width, generator, callback=callback, live=live)

    def pad_embedding(self) -> torch.Tensor:
        """The space's row of the pad token, ``[d]`` (what decodes as the end of a text)."""
        pad_id = self.tokenizer.pad_token_id
        rows, known = vocabulary_rows(self.vocabulary, torch.tensor([pad_id], device=self.device))
        if not bool(known.all()):
            raise ValueError(f"length_from_source needs the pad token (id {pad_id}) in the model's vocabulary")
        return self.space.embeddings[rows[0]]

    def decode(self, embeddings: torch.Tensor) -> list[str]:
        """Texts of predicted embeddings: nearest rows, cut at the end token, specials dropped."""
        token_ids = self.vocabulary[self.space.decode(embeddings)]
        return [ids_to_text(self.tokenizer, row, self.collapse_repeats) for row in token_ids.tolist()]

    def decode_recased(self, embeddings: torch.Tensor, sources: Sequence[str] | None) -> list[str]:
        """``decode``, then (with ``recase``) capitals restored from ``sources`` and ``casing`` (``text.recase``)."""
        texts = self.decode(embeddings)
        if not self.recase:
            return texts
        return [recase(text, source, self.casing) for text, source in zip(texts, sources)]

    def generate_candidates(
        self,
        source_ids: torch.Tensor,
        source_mask: torch.Tensor,
        seed: int,
        offset: int,
        steps: int | None = None,
        candidates: int | None = None,
        sources: Sequence[str] | None = None,
        callback: StepCallback | None = None,
    ) -> tuple[list[str], list[list[str]]]:
        """MBR-chosen texts and all ``candidates`` samples per source (``[B][k]``).

        Candidate ``c`` of the batch starting at dataset position ``offset`` draws
        its noise from ``(seed, offset, c)``, so results do not depend on the rank
        or on how many candidates were asked for before it. ``sources`` (the raw
        strings) are needed only when ``recase`` is on.
        """
        k = candidates or self.mbr_candidates
        samples = []
        for c in range(k):
            generator = seeded_generator(self.device, seed, offset, c)
            sampled = self.sample(source_ids, source_mask, generator, steps, callback)
            samples.append(self.decode_recased(sampled, sources))
        per_source = [list(texts) for texts in zip(*samples)]
        if k == 1:
            return [texts[0] for texts in per_source], per_source
        chosen = mbr_select(per_source, self.mbr_utility)
        return [texts[i] for texts, i in zip(per_source, chosen)], per_source

    def tokenize_sources(self, sources: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and mask ``[B, <=Lc]`` of source strings, padded to the longest, on the model's device."""
        encoded = self.source_tokenizer(
            list(sources), truncation=True, max_length=self.source_length, padding=True, return_tensors="pt"
        )
        return encoded["input_ids"].to(self.device), encoded["attention_mask"].bool().to(self.device)

    @torch.no_grad()
    def generate(
        self,
        sources: Sequence[str],
        seed: int,
        steps: int | None = None,
        batch_size: int = 64,
        candidates: int | None = None,
        first_index: int = 0,
        callback: StepCallback | None = None,
        trajectory: bool = False,
    ) -> list[str] | tuple[list[str], list[dict]]:
        """One target per source string; the same seed gives the same texts.

        Noise is seeded per batch from its position, counted from
        ``first_index``: a list cut at multiples of ``batch_size`` gives the
        same texts piece by piece. With ``trajectory`` the texts come with one
        record per source of the decoded text at every step. The caller sets eval mode.
        """
        if isinstance(sources, str):
            raise TypeError("generate expects a list of source strings, got a single string")
        outputs, trajectories = [], []
        for start in range(0, len(sources), batch_size):
            chunk = sources[start : start + batch_size]
            ids, mask = self.tokenize_sources(chunk)
            recorder = TrajectoryRecorder(partial(self.decode_recased, sources=chunk), chunk) if trajectory else None
            chosen, per_source = self.generate_candidates(
                ids, mask, seed, first_index + start, steps, candidates, chunk, chain(callback, recorder)
            )
            outputs.extend(chosen)
            if recorder is not None:
                trajectories.extend(recorder.records(chosen, per_source, first_index + start))
        return (outputs, trajectories) if trajectory else outputs
