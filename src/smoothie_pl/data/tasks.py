"""The paper's tasks (METHOD section 8): one DataModule each, with its splits, seeds, lengths and metrics.

Every task reads prepared split files from ``data_dir`` (see
:mod:`smoothie_pl.data.sources`). When there are none, ``prepare_data`` loads
the raw dataset (``dataset``: a hub name, by default METHOD's, or a
``save_to_disk`` folder), makes the paper's splits and writes them to
``data_dir`` as DiffuSeq jsonl, once.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import ClassVar


from smoothie_pl.data.base import SPLITS, Pair, Seq2SeqDataModule, TokenizedPairs
from smoothie_pl.data.jsonl import read_jsonl_pairs
from smoothie_pl.data.sources import (
    describe,
    find_split_file,
    load_raw_dataset,
    no_data_error,
    read_split_file,
    shuffled_split,
    split_candidates,
)
from smoothie_pl.io import write_jsonl_atomically

PREPARED = {split: f"{split if split != 'validation' else 'valid'}.jsonl" for split in SPLITS}


class TaskDataModule(Seq2SeqDataModule):
    """A paper task: prepared splits in ``data_dir``, made from the raw dataset when missing.

    Subclasses set the class attributes and :meth:`make_splits`.

    Args:
        data_dir: folder of the split files (read, or written once by ``prepare_data``).
        dataset: hub name or ``save_to_disk`` folder of the raw dataset
            (``None``: only local split files).
        dataset_config: the hub dataset's configuration name.
        split_seed: seed of the tasks whose splits are random.
    """

    #: (target length L, source length Lc) of METHOD section 8
    lengths: ClassVar[tuple[int, int]] = (64, 64)
    #: the metric set of ``smoothie_pl.metrics.METRIC_SETS`` the task reports
    metric_set: ClassVar[str] = "demo"
    #: suffixes of plain parallel text files (``train.<source>``, ``train.<target>``)
    text_suffixes: ClassVar[tuple[str, str]] = ("source", "target")

    def __init__(
        self,
        data_dir: str,
        dataset: str | None = None,
        dataset_config: str | None = None,
        split_seed: int = 0,
        **kwargs,
    ) -> None:
        kwargs.setdefault("target_length", self.lengths[0])
        kwargs.setdefault("source_length", self.lengths[1])
        super().__init__(**kwargs)
        self.data_dir = Path(data_dir).expanduser()
        self.raw_dataset = dataset
        self.raw_config = dataset_config
        self.split_seed = split_seed

    def make_splits(self, raw) -> dict[str, list[Pair]]:
        """The paper's train / validation / test pairs from the raw ``DatasetDict``."""
        raise ValueError(
            f"{type(self).__name__} reads only prepared split files, not a raw dataset: "
            f"put them in {self.data_dir} ({', '.join(self._describe_candidates('train'))}, ...)"
        )

    def prepare_data(self) -> None:
        found = {split: find_split_file(self.data_dir, split, self.text_suffixes) for split in SPLITS}
        if all(found.values()):
            return
        if any(found.values()):
            missing = [split for split, file in found.items() if file is None]
            raise FileNotFoundError(
                f"{self.data_dir} holds some split files of {type(self).__name__} but not the {', '.join(missing)} "
                f"split; looked for {', '.join(self._describe_candidates(missing[0]))}"
            )
        looked_at = [name for split in SPLITS for name in self._describe_candidates(split)]
        raw = load_raw_dataset(self.raw_dataset, self.raw_config, looked_at)
        if raw is None:
            raise no_data_error(type(self).__name__, looked_at)
        try:
            splits = self.make_splits(raw)
        except KeyError as err:
            raise ValueError(
                f"{self.raw_dataset}: {type(self).__name__} needs the split or field {err}; "
                f"the dataset has {raw.column_names}"
            ) from None
        for split, pairs in splits.items():
            write_jsonl_atomically(self.data_dir / PREPARED[split], [self.record(pair) for pair in pairs])

    def record(self, pair: Pair) -> dict:
        return {"src": pair.source, "trg": pair.target}

    def read_split(self, split: str) -> list[Pair]:
        self.prepare_data()
        return read_split_file(find_split_file(self.data_dir, split, self.text_suffixes))

    def _describe_candidates(self, split: str) -> list[str]:
        return [describe(candidate) for candidate in split_candidates(self.data_dir, split, self.text_suffixes)]


def official_splits(raw, source_field: str, target_field: str) -> dict[str, list[Pair]]:
    return {split: [Pair(row[source_field], row[target_field]) for row in raw[split]] for split in SPLITS}


class SwappedPairs(TokenizedPairs):
    """Each draw swaps source and target with probability ``probability`` (QQP: paraphrase is symmetric).

    Whether a draw is swapped depends only on ``(seed, epoch, index)``: every
    index is drawn once an epoch, so the swaps are the same for any number of
    DataLoader workers or ranks, and a resumed run (whose training loader
    restores the epoch and its position in it) swaps as the uninterrupted run did.
    """

    def __init__(self, pairs: list[Pair], *args, probability: float, seed: int) -> None:
        super().__init__(pairs, *args)
        self.reversed = TokenizedPairs([Pair(pair.target, pair.source) for pair in pairs], *args)
        self.probability = probability
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def swapped(self, index: int) -> bool:
        draw = random.Random((self.seed * 1_000_003 + self.epoch) * 1_000_003 + index).random()
        return draw < self.probability

    def __getitem__(self, index: int) -> dict:
        return self.reversed[index] if self.swapped(index) else super().__getitem__(index)


class QQPDataModule(TaskDataModule):
    """Quora Question Pairs paraphrase (GLUE ``qqp``).

    Positive pairs (``label == 1``) of the train and validation splits pooled,
    shuffled with ``split_seed`` and cut 80/10/10; training pairs are swapped
    with probability ``swap_probability`` at every draw (a function of
    ``swap_seed``, the epoch and the pair: ``SwappedPairs``).
    """

    lengths = (50, 50)
    metric_set = "paraphrase"

    def __init__(
        self,
        data_dir: str = "data/qqp",
        dataset: str | None = "nyu-mll/glue",
        dataset_config: str | None = "qqp",
        swap_probability: float = 0.5,
        swap_seed: int = 0,
        **kwargs,
    ):
        super().__init__(data_dir, dataset, dataset_config, **kwargs)
        if not 0.0 <= swap_probability <= 1.0:
            raise ValueError(f"data.swap_probability must be in [0, 1], got {swap_probability}")
        self.swap_probability = swap_probability
        self.swap_seed = swap_seed

    def make_splits(self, raw) -> dict[str, list[Pair]]:
        pooled = [
            Pair(row["question1"], row["question2"])
            for split in ("train", "validation")
            for row in raw[split]
            if row["label"] == 1
        ]
        return shuffled_split(pooled, (0.8, 0.1, 0.1), self.split_seed)

    def tokenize(self, split: str, pairs: list[Pair]) -> TokenizedPairs:
        if split != "train" or self.swap_probability == 0.0:
            return super().tokenize(split, pairs)
        args = (self.tokenizer, self.target_length, self.source_length, self.source_tokenizer)
        return SwappedPairs(pairs, *args, probability=self.swap_probability, seed=self.swap_seed)


class XSumDataModule(TaskDataModule):
    """XSum extreme summarisation (``EdinburghNLP/xsum``: ``document`` -> ``summary``), official splits."""

    lengths = (64, 512)
    metric_set = "summarization"

    def __init__(self, data_dir: str = "data/xsum", dataset: str | None = "EdinburghNLP/xsum", **kwargs):
        super().__init__(data_dir, dataset, **kwargs)

    def make_splits(self, raw) -> dict[str, list[Pair]]:
        return official_splits(raw, "document", "summary")


class NewselaAutoDataModule(TaskDataModule):
    """Newsela-Auto simplification from DiffuSeq-style jsonl files (the corpus is licensed, not on the hub)."""

    lengths = (64, 64)
    metric_set = "simplification"

    def __init__(self, data_dir: str = "data/newsela_auto", **kwargs):
        super().__init__(data_dir, **kwargs)


class QuasarTDataModule(TaskDataModule):
    """Quasar-T question generation (context -> question) from DiffuSeq's jsonl files."""

    lengths = (50, 100)
    metric_set = "paraphrase"  # the same metrics: BERTScore, BLEU, ROUGE-L, div-1, div-4

    def __init__(self, data_dir: str = "data/quasar_t", **kwargs):
        super().__init__(data_dir, **kwargs)


class ROCStoriesDataModule(TaskDataModule):
    """ROCStories, unconditional: the five sentences of a story joined; the source is empty.

    Stories are shuffled with ``split_seed``; the first ``test_size`` (5,000)
    are the test split, the next ``validation_size`` validation (METHOD gives
    no validation size; 1,000 is this library's choice), the rest train.
    Local jsonl files need only a ``trg`` field; plain text is ``<split>.txt``.
    """

    lengths = (80, 2)  # the source is the empty text: [CLS] [SEP]
    metric_set = "unconditional"
    text_suffixes = ("txt", "txt")

    def __init__(
        self,
        data_dir: str = "data/rocstories",
        dataset: str | None = "wza/roc_stories",
        test_size: int = 5000,
        validation_size: int = 1000,
        **kwargs,
    ):
        super().__init__(data_dir, dataset, **kwargs)
        self.test_size = test_size
        self.validation_size = validation_size

    def make_splits(self, raw) -> dict[str, list[Pair]]:
        stories = [
            " ".join(row[f"sentence{i}"].strip() for i in range(1, 6)) for split in raw for row in raw[split]
        ]
        random.Random(self.split_seed).shuffle(stories)
        held_out = self.test_size + self.validation_size
        if held_out >= len(stories):
            raise ValueError(f"ROCStories has {len(stories)} stories, not more than test + validation = {held_out}")
        splits = {
            "test": stories[: self.test_size],
            "validation": stories[self.test_size : held_out],
            "train": stories[held_out:],
        }
        return {split: [Pair("", story) for story in texts] for split, texts in splits.items()}

    def record(self, pair: Pair) -> dict:
        return {"trg": pair.target}

    def read_split(self, split: str) -> list[Pair]:
        self.prepare_data()
        found = find_split_file(self.data_dir, split, self.text_suffixes)
        if isinstance(found, tuple):
            stories = [line for line in found[0].read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            # the source field is the target field: only ``trg`` is required of a line
            stories = [pair.target for pair in read_jsonl_pairs(found, "trg", "trg")]
        return [Pair("", story) for story in stories]


class ParaDetoxDataModule(TaskDataModule):
    """ParaDetox (``s-nlp/paradetox``: toxic -> neutral comment), shuffled with ``split_seed`` and cut 80/10/10."""

    lengths = (40, 40)
    metric_set = "detoxification"

    def __init__(self, data_dir: str = "data/paradetox", dataset: str | None = "s-nlp/paradetox", **kwargs):
        super().__init__(data_dir, dataset, **kwargs)

    def make_splits(self, raw) -> dict[str, list[Pair]]:
        pairs = [Pair(row["en_toxic_comment"], row["en_neutral_comment"]) for row in raw["train"]]
        return shuffled_split(pairs, (0.8, 0.1, 0.1), self.split_seed)


class TranslationDataModule(TaskDataModule):
    """German -> English translation, official splits; ``translation: {de, en}`` rows or ``<split>.de/.en`` files."""

    metric_set = "translation"
    text_suffixes = ("de", "en")

    def make_splits(self, raw) -> dict[str, list[Pair]]:
        return {
            split: [Pair(row["translation"]["de"], row["translation"]["en"]) for row in raw[split]] for split in SPLITS
        }


class IWSLT14DataModule(TranslationDataModule):
    """IWSLT14 de-en, as fairseq's ``prepare-iwslt14.sh`` leaves it (``train.de``, ``valid.en``, ...).

    There is no canonical hub copy; ``dataset`` may name any ``translation``-schema one.
    """

    lengths = (100, 100)

    def __init__(self, data_dir: str = "data/iwslt14_de_en", **kwargs):
        super().__init__(data_dir, **kwargs)


class WMT14DataModule(TranslationDataModule):
    """WMT14 de-en (``wmt/wmt14``, config ``de-en``), official splits (newstest2013 validation, newstest2014 test)."""

    lengths = (80, 80)

    def __init__(
        self,
        data_dir: str = "data/wmt14_de_en",
        dataset: str | None = "wmt/wmt14",
        dataset_config: str | None = "de-en",
        **kwargs,
    ):
        super().__init__(data_dir, dataset, dataset_config, **kwargs)
