"""The shared seq2seq DataModule: tokenisation, padding and batching (METHOD section 8).

Targets are tokenised without special tokens and padded to ``target_length``
with the pad token (padding is how the model learns length); sources keep the
tokenizer's special tokens and are padded to the longest in the batch, at most
``source_length``. Raw strings travel with every batch so that metrics are
computed against the untouched references.
"""

from __future__ import annotations

import math
import os
from collections.abc import Set
from dataclasses import dataclass
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from smoothie_pl.data.batching import split_global_batch
from smoothie_pl.data.samplers import BatchShardSampler, ResumableLoader, ResumableShuffleSampler
from smoothie_pl.embeddings import load_tokenizer
from smoothie_pl.errors import DataError
from smoothie_pl.text import learn_casing, lowercases

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Pair:
    """A source and its target; the target is ``None`` in inference-only data (predict without references)."""

    source: str
    target: str | None


def tokenize_truncating(tokenizer, texts: list[str], max_length: int, add_special_tokens: bool) -> tuple[list, int]:
    """Token ids of ``texts``, each cut to ``max_length`` ids, and how many had to be cut."""
    if not texts:
        return [], 0
    ids = tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]
    overlong = [i for i, row in enumerate(ids) if len(row) > max_length]
    if overlong:
        cut = tokenizer(
            [texts[i] for i in overlong], add_special_tokens=add_special_tokens, truncation=True, max_length=max_length
        )["input_ids"]
        for i, row in zip(overlong, cut):
            ids[i] = row
    return ids, len(overlong)


def mostly_unknown(tokenizer, ids: list[list[int]]) -> int:
    """How many token sequences are over half unknown-token (special tokens such as [CLS] not counted)."""
    unknown, special = tokenizer.unk_token_id, set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}
    if unknown is None:
        return 0
    counted = ([token for token in row if token not in special] for row in ids)
    return sum(1 for row in counted if row and 2 * row.count(unknown) > len(row))


class TokenizedPairs(Dataset):
    """Pairs with their token ids; item ``i`` remembers its index for prediction writing.

    ``truncated_sources`` and ``truncated_targets`` count the texts cut to the lengths,
    ``unknown_sources`` and ``unknown_targets`` those whose tokens are mostly unknown to the tokenizer;
    ``source_tokenizer`` (default: ``tokenizer``) tokenises the sources, e.g. German ones.
    """

    def __init__(
        self, pairs: list[Pair], tokenizer, target_length: int, source_length: int, source_tokenizer=None
    ) -> None:
        self.pairs = pairs
        sources = [pair.source for pair in pairs]
        targets = [pair.target or "" for pair in pairs]
        source_tokenizer = source_tokenizer or tokenizer
        self.source_ids, self.truncated_sources = tokenize_truncating(source_tokenizer, sources, source_length, True)
        self.target_ids, self.truncated_targets = tokenize_truncating(tokenizer, targets, target_length, False)
        self.unknown_sources = mostly_unknown(source_tokenizer, self.source_ids)
        self.unknown_targets = mostly_unknown(tokenizer, self.target_ids)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        return {
            "index": index,
            "source_ids": self.source_ids[index],
            "target_ids": self.target_ids[index],
            "source": self.pairs[index].source,
            "reference": self.pairs[index].target,
        }


class PairCollator:
    """Pads targets to the fixed length and sources to the longest source of the batch."""

    def __init__(self, pad_id: int, target_length: int, source_pad_id: int | None = None) -> None:
        self.pad_id = pad_id
        self.target_length = target_length
        self.source_pad_id = pad_id if source_pad_id is None else source_pad_id

    def __call__(self, items: list[dict]) -> dict:
        batch = len(items)
        targets = torch.full((batch, self.target_length), self.pad_id, dtype=torch.long)
        source_width = max(1, max(len(item["source_ids"]) for item in items))
        sources = torch.full((batch, source_width), self.source_pad_id, dtype=torch.long)
        source_mask = torch.zeros(batch, source_width, dtype=torch.bool)
        for row, item in enumerate(items):
            targets[row, : len(item["target_ids"])] = torch.tensor(item["target_ids"], dtype=torch.long)
            sources[row, : len(item["source_ids"])] = torch.tensor(item["source_ids"], dtype=torch.long)
            source_mask[row, : len(item["source_ids"])] = True
        return {
            "index": torch.tensor([item["index"] for item in items]),
            "target_ids": targets,
            "source_ids": sources,
            "source_mask": source_mask,
            "source": [item["source"] for item in items],
            "reference": [item["reference"] for item in items],
        }


class Seq2SeqDataModule(L.LightningDataModule):
    """Base of every task: subclasses only say how to read a split into ``Pair`` objects.

    Args:
        tokenizer: Hugging Face name or local path (linked to ``model.embedding``
            by the CLI); ``None`` is the packaged offline MiniLM.
        source_tokenizer: a different tokenizer for the sources (linked to
            ``model.source_embedding``); ``None`` uses ``tokenizer``.
        target_length, source_length: ``L`` and ``Lc`` (linked from the model).
        restrict_vocabulary: diffuse only over the tokens of the training split
            (plus special tokens); ``"targets"``: of its targets only; see ``vocabulary``.
        predict_split: the split that ``predict`` generates for.
        global_batch_size: pairs per optimizer step over all devices; the
            per-device batch (at most ``batch_size``) is derived from it at
            ``fit``, and the trainer's ``accumulate_grad_batches`` must be the
            matching one (``batching.split_global_batch``; the ``smoothie`` CLI
            sets it), so a config trains the same on any number of devices.
        length_buckets: training batches of sources of similar length (``samplers.length_bucketed``),
            and test and predict batches in order of source length: with ``model.length_from_source``
            each batch is only as wide as its longest pair needs.
    """

    def __init__(
        self,
        tokenizer: str | None = None,
        target_length: int = 64,
        source_length: int = 64,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        restrict_vocabulary: bool | Literal["targets"] = False,
        predict_split: str = "test",
        source_tokenizer: str | None = None,
        global_batch_size: int | None = None,
        length_buckets: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("target_length", target_length), ("source_length", source_length), ("batch_size", batch_size)):
            if value <= 0:
                raise ValueError(f"data.{name} must be a positive integer, got {value}")
        if predict_split not in SPLITS:
            raise ValueError(f"data.predict_split must be one of {SPLITS}, got {predict_split!r}")
        self.tokenizer_name = tokenizer
        self.source_tokenizer_name = source_tokenizer
        self.target_length = target_length
        self.source_length = source_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.restrict_vocabulary = restrict_vocabulary
        self.predict_split = predict_split
        self.global_batch_size = global_batch_size
        self.length_buckets = length_buckets
        self.device_batch_size = batch_size  # training batch of one device (set from global_batch_size at fit)
        self.datasets: dict[str, TokenizedPairs] = {}
        self.predict_skip: Set[int] = frozenset()  # indices already predicted (set by the prediction writer)

    def read_split(self, split: str) -> list[Pair]:
        """Every pair of ``split`` (one of ``SPLITS``)."""
        raise NotImplementedError

    @property
    def tokenizer(self):
        return load_tokenizer(self.tokenizer_name)

    @property
    def source_tokenizer(self):
        return load_tokenizer(self.source_tokenizer_name) if self.source_tokenizer_name else self.tokenizer

    def dataset(self, split: str) -> TokenizedPairs:
        if split not in self.datasets:
            pairs = self.read_split(split)
            if not pairs:
                raise DataError(f"the {split} split of {type(self).__name__} is empty")
            dataset = self.tokenize(split, pairs)
            if dataset.truncated_sources or dataset.truncated_targets:
                rank_zero_warn(
                    f"{split} split: truncated {dataset.truncated_sources} of {len(pairs)} sources to "
                    f"source_length={self.source_length} tokens and {dataset.truncated_targets} targets to "
                    f"target_length={self.target_length}"
                )
            if dataset.unknown_sources or dataset.unknown_targets:
                rank_zero_warn(
                    f"{split} split: {dataset.unknown_sources} of {len(pairs)} sources and {dataset.unknown_targets} "
                    "targets are mostly [UNK] (over half of their tokens unknown to the tokenizer): is the text in "
                    "the language and script the embedding model (model.embedding) was trained on?"
                )
            self.datasets[split] = dataset
        return self.datasets[split]

    def tokenize(self, split: str, pairs: list[Pair]) -> TokenizedPairs:
        """The dataset of ``split``; a task overrides it to change how items are drawn (e.g. QQP's swap)."""
        return TokenizedPairs(pairs, self.tokenizer, self.target_length, self.source_length, self.source_tokenizer)

    def vocabulary(self) -> list[int] | None:
        """Token ids the diffusion runs over: ``None`` (all) unless ``restrict_vocabulary``.

        The restricted set is every token of the training split's sources and
        targets plus the special tokens; decoding stays exact over these rows.
        Sources count only when they share the targets' tokenizer, and not with
        ``"targets"``: then no output can hold a word only the sources use (the
        KJV's "thou" for a modern-English target); sources are encoded through
        the whole embedding matrix either way.
        """
        if not self.restrict_vocabulary:
            return None
        self.prepare_data()
        train = self.dataset("train")
        ids = set(self.tokenizer.all_special_ids)
        shared = self.source_tokenizer_name is None and self.restrict_vocabulary != "targets"
        sources = train.source_ids if shared else []
        for sequence in (*sources, *train.target_ids):
            ids.update(sequence)
        return sorted(ids)

    def target_casing(self) -> dict[str, str] | None:
        """How the training targets spell the words they capitalise (``text.learn_casing``), when the
        tokenizer lowercases: what recasing the model's output needs beyond the source. Else ``None``."""
        if not lowercases(self.tokenizer):
            return None
        self.prepare_data()
        return learn_casing(pair.target for pair in self.dataset("train").pairs if pair.target)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.global_batch_size is not None and self.trainer is not None:
            self._split_global_batch()
        needed = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",)}
        for split in needed.get(stage, (self.predict_split,)):
            dataset = self.dataset(split)
            unreferenced = sum(pair.target is None for pair in dataset.pairs)
            if unreferenced and stage != "predict":
                raise DataError(
                    f"{stage} needs a target for every pair, but {unreferenced} of the {split} split's "
                    f"{len(dataset)} have none (sources-only data is for predict)"
                )
            if unreferenced:
                rank_zero_info(
                    f"{split} split: {unreferenced} of {len(dataset)} sources have no reference; "
                    "their predictions are written without one and metrics are skipped"
                )

    def _split_global_batch(self) -> None:
        """The device batch of the global one; the trainer must accumulate the rest, not another count."""
        trainer = self.trainer
        self.device_batch_size, accumulation = split_global_batch(
            self.global_batch_size, trainer.world_size, self.batch_size
        )
        if trainer.accumulate_grad_batches != accumulation:
            raise ValueError(
                f"data.global_batch_size={self.global_batch_size} over {trainer.world_size} device(s) in batches of "
                f"at most {self.batch_size} needs trainer.accumulate_grad_batches={accumulation}, got "
                f"{trainer.accumulate_grad_batches}: set data.global_batch_size or trainer.accumulate_grad_batches, "
                "not both (the smoothie CLI derives the accumulation)"
            )

    def _loader(self, split: str, shuffle: bool, skip: Set[int] = frozenset(), by_length: bool = False) -> DataLoader:
        """Shuffled training batches, or evaluation batches dealt whole to the ranks (``data.samplers``).

        ``by_length``: evaluation batches in order of source length (with ``length_buckets``).
        """
        dataset = self.dataset(split)
        ranks = {"num_replicas": self.trainer.world_size, "rank": self.trainer.global_rank} if self.trainer else {}
        batch_size = self.device_batch_size if shuffle else self.eval_batch_size
        collate = PairCollator(self.tokenizer.pad_token_id, self.target_length, self.source_tokenizer.pad_token_id)
        if shuffle:
            if self.length_buckets:
                ranks |= {"lengths": [len(ids) for ids in dataset.source_ids], "batch_size": batch_size}
            sampler = ResumableShuffleSampler(dataset, seed=int(os.environ.get("PL_GLOBAL_SEED", 0)), **ranks)
            return ResumableLoader(dataset, sampler, batch_size, num_workers=self.num_workers, collate_fn=collate)
        order = None
        if by_length and self.length_buckets:
            order = sorted(range(len(dataset)), key=lambda index: len(dataset.source_ids[index]))
        sampler = BatchShardSampler(dataset, batch_size, skip=skip, order=order, **ranks)
        return DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, num_workers=self.num_workers, collate_fn=collate
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._metric_loader("validation")  # in file order: limit_val_batches may take only its first batches

    def test_dataloader(self) -> DataLoader:
        return self._metric_loader("test", by_length=True)

    def _metric_loader(self, split: str, by_length: bool = False) -> DataLoader:
        """Evaluation batches where every rank must take part (its metric states are gathered at the end)."""
        world = self.trainer.world_size if self.trainer else 1
        batches = math.ceil(len(self.dataset(split)) / self.eval_batch_size)
        if batches < world:
            raise ValueError(
                f"the {split} split has {len(self.dataset(split))} pairs, {batches} batch(es) of data.eval_batch_size="
                f"{self.eval_batch_size}, fewer than the {world} ranks: lower data.eval_batch_size"
            )
        return self._loader(split, shuffle=False, by_length=by_length)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_split, shuffle=False, skip=self.predict_skip, by_length=True)
