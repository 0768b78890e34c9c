"""The paper's task DataModules on fixture files with each dataset's real schema (METHOD section 8).

Hub datasets are stood in for by ``save_to_disk`` folders built from the
fixtures' raw rows (field names and split layout as on the hub); DiffuSeq and
fairseq tasks read their split files directly.
"""

import json
import random
from pathlib import Path

import lightning as L
import pytest
import torch

from smoothie_pl.data import (
    IWSLT14DataModule,
    NewselaAutoDataModule,
    ParaDetoxDataModule,
    QQPDataModule,
    QuasarTDataModule,
    ROCStoriesDataModule,
    WMT14DataModule,
    XSumDataModule,
)
from smoothie_pl.data.base import Pair
from smoothie_pl.module import SmoothieModule

FIXTURES = Path(__file__).parent / "fixtures"
ROC_SIZES = {"test_size": 3, "validation_size": 2}  # of the fixture's 14 stories
TINY_DENOISER = {"width": 32, "depth": 2, "heads": 2, "encoder_depth": 1, "dropout": 0.0}


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def save_raw(task: str, tmp_path: Path) -> str:
    """A ``save_to_disk`` folder of the fixture's raw splits, as ``datasets.load_dataset`` would give them."""
    import datasets

    raw = FIXTURES / task / "raw"
    splits = {path.stem: datasets.Dataset.from_list(rows(path)) for path in sorted(raw.glob("*.jsonl"))}
    folder = tmp_path / f"{task}_raw"
    datasets.DatasetDict(splits).save_to_disk(str(folder))
    return str(folder)


def texts(pairs: list[Pair]) -> list[tuple[str, str]]:
    return [(pair.source, pair.target) for pair in pairs]


def build(cls, tmp_path: Path, **kwargs):
    return cls(data_dir=str(tmp_path / "prepared"), batch_size=2, eval_batch_size=2, restrict_vocabulary=True, **kwargs)


def sizes(data) -> dict[str, int]:
    return {split: len(data.read_split(split)) for split in ("train", "validation", "test")}


def seeded_order(n: int, seed: int) -> list[int]:
    """The paper's split order written out: indices shuffled by ``random.Random(seed)``."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


# ------------------------------------------------------------------ splits
def test_qqp_pools_positive_train_and_validation_pairs_and_cuts_80_10_10_with_seed_0(tmp_path):
    data = build(QQPDataModule, tmp_path, dataset=save_raw("qqp", tmp_path))
    positives = [
        (row["question1"], row["question2"])
        for split in ("train", "validation")
        for row in rows(FIXTURES / f"qqp/raw/{split}.jsonl")
        if row["label"] == 1
    ]
    assert len(positives) == 19  # 13 of 20 train rows and 6 of 10 validation rows are paraphrases
    assert sizes(data) == {"train": 17, "validation": 1, "test": 1}  # int(0.1 * 19) = 1
    order = seeded_order(19, 0)
    assert texts(data.read_split("train")) == [positives[i] for i in order[:17]]
    assert texts(data.read_split("validation")) == [positives[order[17]]]
    assert texts(data.read_split("test")) == [positives[order[18]]]
    # The prepared splits are written once, as DiffuSeq jsonl, and reused.
    assert rows(tmp_path / "prepared/valid.jsonl") == [{"src": positives[order[17]][0], "trg": positives[order[17]][1]}]


def test_a_different_seed_gives_a_different_split(tmp_path):
    raw = save_raw("paradetox", tmp_path)
    seed0 = build(ParaDetoxDataModule, tmp_path / "a", dataset=raw)
    seed1 = build(ParaDetoxDataModule, tmp_path / "b", dataset=raw, split_seed=1)
    assert texts(seed0.read_split("test")) != texts(seed1.read_split("test"))


def test_paradetox_cuts_80_10_10_with_seed_0(tmp_path):
    data = build(ParaDetoxDataModule, tmp_path, dataset=save_raw("paradetox", tmp_path))
    raw = [(row["en_toxic_comment"], row["en_neutral_comment"]) for row in rows(FIXTURES / "paradetox/raw/train.jsonl")]
    assert sizes(data) == {"train": 16, "validation": 2, "test": 2}
    order = seeded_order(20, 0)
    assert texts(data.read_split("test")) == [raw[i] for i in order[18:]]


def test_rocstories_joins_five_sentences_and_holds_out_test_stories_with_seed_0(tmp_path):
    data = build(ROCStoriesDataModule, tmp_path, dataset=save_raw("rocstories", tmp_path), **ROC_SIZES)
    raw = rows(FIXTURES / "rocstories/raw/train.jsonl")
    stories = [" ".join(row[f"sentence{i}"] for i in range(1, 6)) for row in raw]
    order = seeded_order(14, 0)
    assert sizes(data) == {"train": 9, "validation": 2, "test": 3}
    assert texts(data.read_split("test")) == [("", stories[i]) for i in order[:3]]
    assert texts(data.read_split("validation")) == [("", stories[i]) for i in order[3:5]]
    assert ROCStoriesDataModule.lengths[0] == 80


@pytest.mark.parametrize(
    ("cls", "task", "source", "target"),
    [
        (XSumDataModule, "xsum", lambda r: r["document"], lambda r: r["summary"]),
        (WMT14DataModule, "wmt14_de_en", lambda r: r["translation"]["de"], lambda r: r["translation"]["en"]),
    ],
    ids=["xsum", "wmt14"],
)
def test_official_splits_are_kept(cls, task, source, target, tmp_path):
    data = build(cls, tmp_path, dataset=save_raw(task, tmp_path))
    for split in ("train", "validation", "test"):
        expected = [(source(row), target(row)) for row in rows(FIXTURES / f"{task}/raw/{split}.jsonl")]
        assert texts(data.read_split(split)) == expected


@pytest.mark.parametrize("cls", [NewselaAutoDataModule, QuasarTDataModule], ids=["newsela_auto", "quasar_t"])
def test_diffuseq_jsonl_files_are_read_as_they_are(cls, tmp_path):
    task = {NewselaAutoDataModule: "newsela_auto", QuasarTDataModule: "quasar_t"}[cls]
    data = cls(data_dir=str(FIXTURES / task))
    for split, stem in (("train", "train"), ("validation", "valid"), ("test", "test")):
        assert texts(data.read_split(split)) == [(r["src"], r["trg"]) for r in rows(FIXTURES / f"{task}/{stem}.jsonl")]


def test_iwslt14_reads_fairseq_parallel_text_files():
    data = IWSLT14DataModule(data_dir=str(FIXTURES / "iwslt14_de_en"))
    german = (FIXTURES / "iwslt14_de_en/valid.de").read_text().splitlines()
    english = (FIXTURES / "iwslt14_de_en/valid.en").read_text().splitlines()
    assert texts(data.read_split("validation")) == list(zip(german, english))


def test_task_lengths_are_the_papers():
    expected = {
        QQPDataModule: (50, 50),
        XSumDataModule: (64, 512),
        NewselaAutoDataModule: (64, 64),
        QuasarTDataModule: (50, 100),
        ParaDetoxDataModule: (40, 40),
        IWSLT14DataModule: (100, 100),
        WMT14DataModule: (80, 80),
    }
    for cls, (target_length, source_length) in expected.items():
        data = cls()
        assert (data.target_length, data.source_length) == (target_length, source_length), cls.__name__


def test_documents_and_summaries_are_cut_to_the_lengths(tmp_path):
    data = build(XSumDataModule, tmp_path, dataset=save_raw("xsum", tmp_path), target_length=5, source_length=8)
    train = data.dataset("train")
    assert max(map(len, train.source_ids)) == 8 and train.source_ids[0][-1] == data.tokenizer.sep_token_id
    assert max(map(len, train.target_ids)) == 5
    batch = next(iter(data.val_dataloader()))
    assert batch["target_ids"].shape == (2, 5) and batch["source_ids"].shape == (2, 8)


# ------------------------------------------------------------- QQP swap
def draws(dataset, epochs: int) -> list[bool]:
    """Whether each item of each of ``epochs`` epochs came out swapped."""
    swapped = []
    for epoch in range(epochs):
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        swapped += [dataset[i]["source"] != pair.source for i, pair in enumerate(dataset.pairs)]
    return swapped


def test_qqp_training_pairs_are_swapped_half_the_time_reproducibly(tmp_path):
    data = build(QQPDataModule, tmp_path, dataset=save_raw("qqp", tmp_path))
    train = data.dataset("train")
    swapped = draws(train, 25)
    assert len(swapped) >= 300 and 0.4 < sum(swapped) / len(swapped) < 0.6  # p = 0.5; std < 0.03
    train.set_epoch(0)
    assert [train[i] for i in range(len(train))] == [train[i] for i in range(len(train))]  # a draw, not a stream
    item = next(train[0] for epoch in range(50) if train.set_epoch(epoch) or train.swapped(0))
    pair = train.pairs[0]
    assert (item["source"], item["reference"]) == (pair.target, pair.source)
    assert item["target_ids"] == data.tokenizer(pair.source, add_special_tokens=False)["input_ids"]
    assert item["source_ids"] == data.tokenizer(pair.target)["input_ids"]
    again = build(QQPDataModule, tmp_path).dataset("train")  # the prepared files, same seed
    assert draws(again, 25) == swapped
    other_seed = build(QQPDataModule, tmp_path, swap_seed=1).dataset("train")
    assert draws(other_seed, 25) != swapped
    assert not any(draws(data.dataset("validation"), 2))
    assert not any(draws(build(QQPDataModule, tmp_path, swap_probability=0.0).dataset("train"), 2))


# -------------------------------------------------------- loading errors
def test_missing_data_lists_every_path_looked_at(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    data = QQPDataModule(data_dir=str(tmp_path / "qqp"))
    with pytest.raises(FileNotFoundError) as error:
        data.prepare_data()
    message = str(error.value)
    for name in ("train.jsonl", "valid.jsonl", "validation.jsonl", "dev.jsonl", "test.jsonl", "train.source + "):
        assert name in message
    assert "'nyu-mll/glue' (config 'qqp'): not tried, HF_DATASETS_OFFLINE is set" in message
    assert f"save_to_disk folder at {Path('nyu-mll/glue')}" in message


def online(monkeypatch, load_dataset) -> list[tuple]:
    """Pretend to be online: ``datasets.load_dataset`` is ``load_dataset``; returns the calls made."""
    import datasets

    calls = []
    for variable in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)

    def recording(*args):
        calls.append(args)
        return load_dataset(*args)

    monkeypatch.setattr(datasets, "load_dataset", recording)
    return calls


def test_online_the_hub_dataset_of_method_is_loaded(tmp_path, monkeypatch):
    import datasets

    folder = save_raw("wmt14_de_en", tmp_path)
    calls = online(monkeypatch, lambda *args: datasets.load_from_disk(folder))
    data = WMT14DataModule(data_dir=str(tmp_path / "wmt14"))
    assert len(data.read_split("test")) == 3
    assert calls == [("wmt/wmt14", "de-en")]


def test_a_failing_hub_is_reported_with_the_local_paths(tmp_path, monkeypatch):
    def unreachable(*args):
        raise ConnectionError("no route to huggingface.co")

    online(monkeypatch, unreachable)
    with pytest.raises(FileNotFoundError, match=r"(?s)xsum/train.jsonl.*'EdinburghNLP/xsum': ConnectionError: no route"):
        XSumDataModule(data_dir=str(tmp_path / "xsum")).prepare_data()


def test_some_split_files_without_the_others_are_refused(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"src": "a", "trg": "b"}) + "\n")
    with pytest.raises(FileNotFoundError, match="not the validation, test split"):
        NewselaAutoDataModule(data_dir=str(tmp_path)).prepare_data()


def test_a_task_without_a_split_procedure_refuses_a_raw_dataset(tmp_path):
    with pytest.raises(ValueError, match="reads only prepared split files"):
        NewselaAutoDataModule(data_dir=str(tmp_path / "newsela"), dataset=save_raw("xsum", tmp_path)).prepare_data()


def test_a_raw_dataset_of_another_schema_is_refused_naming_the_field(tmp_path):
    xsum = save_raw("xsum", tmp_path)
    with pytest.raises(ValueError, match=r"QQPDataModule needs the split or field 'label'; the dataset has .*'document'"):
        QQPDataModule(data_dir=str(tmp_path / "qqp"), dataset=xsum).prepare_data()


def test_parallel_files_of_different_lengths_are_refused(tmp_path):
    for stem in ("train", "valid", "test"):
        (tmp_path / f"{stem}.de").write_text("eins\nzwei\n")
        (tmp_path / f"{stem}.en").write_text("one\n")
    with pytest.raises(ValueError, match=r"train\.de has 2 lines, .*train\.en 1"):
        IWSLT14DataModule(data_dir=str(tmp_path)).read_split("train")


# ------------------------------------------- one training step, one generation
def step_and_generate(data, **module_kwargs) -> tuple[SmoothieModule, list[str]]:
    """One optimiser step of a tiny model on the task's batches, then a 2-step generation."""
    data.prepare_data()
    model = SmoothieModule(
        vocabulary=data.vocabulary(),
        target_length=data.target_length,
        source_length=data.source_length,
        denoiser={**TINY_DENOISER, **module_kwargs.pop("denoiser", {})},
        sampling={"steps": 2},
        optim={"warmup_steps": 0, "lr": 1e-3},
        evaluation={"metric_set": data.metric_set},
        **module_kwargs,
    )
    before = [p.detach().clone() for p in model.denoiser.parameters()]
    trainer = L.Trainer(
        accelerator="cpu", max_steps=1, limit_val_batches=1, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(model, datamodule=data)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.denoiser.parameters()))
    batch = next(iter(data.train_dataloader()))
    assert batch["target_ids"].shape == (2, data.target_length)
    assert batch["source_ids"].shape[1] <= data.source_length
    sources = [pair.source for pair in data.dataset("test").pairs[:2]]
    generated = model.generate(sources, steps=2, seed=0)
    assert len(generated) == len(sources) and all(isinstance(text, str) for text in generated)
    return model, generated


@pytest.mark.parametrize(
    ("cls", "source"),
    [
        (QQPDataModule, "raw"),
        (XSumDataModule, "raw"),
        (NewselaAutoDataModule, "files"),
        (QuasarTDataModule, "files"),
        (ParaDetoxDataModule, "raw"),
        (IWSLT14DataModule, "files"),
        (WMT14DataModule, "raw"),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else value,
)
def test_one_training_step_and_one_generation(cls, source, tmp_path):
    task = {
        QQPDataModule: "qqp", XSumDataModule: "xsum", NewselaAutoDataModule: "newsela_auto",
        QuasarTDataModule: "quasar_t", ParaDetoxDataModule: "paradetox", IWSLT14DataModule: "iwslt14_de_en",
        WMT14DataModule: "wmt14_de_en",
    }[cls]
    if source == "raw":
        data = build(cls, tmp_path, dataset=save_raw(task, tmp_path))
    else:
        data = cls(data_dir=str(FIXTURES / task), batch_size=2, eval_batch_size=2, restrict_vocabulary=True)
    step_and_generate(data)


# ---------------------------------------------------------- unconditional
def test_unconditional_model_trains_samples_and_scores_without_a_source(tmp_path):
    data = build(ROCStoriesDataModule, tmp_path, dataset=save_raw("rocstories", tmp_path), **ROC_SIZES)
    model, generated = step_and_generate(data, denoiser={"source_encoder": "none"})
    assert model.source_encoder is None and len(generated) == 2
    trainer = L.Trainer(accelerator="cpu", limit_test_batches=1, logger=False, enable_progress_bar=False)
    (results,) = trainer.test(model, datamodule=data)
    assert 0.0 <= results["test/diversity"] <= 1.0  # needs no reference; MAUVE and perplexity need a model
    assert "test/mauve" not in results
    assert "test/copy_source_sacrebleu" not in results  # there is no source to copy


# ------------------------------------------------- separate source vocabulary
@pytest.fixture(scope="module")
def german_english_models(tmp_path_factory) -> tuple[str, str]:
    """Word-level models over the IWSLT14 fixture's German (d = 8) and English (d = 16) words."""
    from tests.conftest import make_word_model

    def words(suffix: str) -> list[str]:
        paths = (FIXTURES / "iwslt14_de_en").glob(f"*.{suffix}")
        return sorted({word for path in paths for word in path.read_text().replace(".", " . ").split()})

    german = make_word_model(tmp_path_factory.mktemp("german"), words("de"), dim=8)
    english = make_word_model(tmp_path_factory.mktemp("english"), words("en"), dim=16, seed=1)
    return str(german), str(english)


def test_german_sources_use_their_own_tokenizer_and_embedding(german_english_models, tmp_path, monkeypatch):
    german, english = german_english_models
    monkeypatch.chdir(tmp_path)
    from smoothie_pl.cli import build_cli

    cli = build_cli(
        [
            "--config", str(Path(__file__).parent / "configs/tiny.yaml"),
            "--model.embedding", english, "--model.source_embedding", german,
            "--data", "smoothie_pl.data.IWSLT14DataModule",
            "--data.init_args.data_dir", str(FIXTURES / "iwslt14_de_en"),
            "--trainer.logger", "false",
        ],
        run=False,
    )
    data, model = cli.datamodule, cli.model
    assert data.source_tokenizer_name == german  # linked from model.source_embedding
    item, first = data.dataset("train")[0], data.dataset("train").pairs[0]
    german_ids = [data.source_tokenizer.convert_tokens_to_ids(w) for w in first.source.split()]
    assert item["source_ids"][1:-1] == german_ids and data.source_tokenizer.unk_token_id not in german_ids
    batch = next(iter(data.train_dataloader()))
    assert (batch["source_ids"][~batch["source_mask"]] == data.source_tokenizer.pad_token_id).all()
    # The diffusion vocabulary is the English one only: German ids would index other rows.
    english_ids = {i for ids in data.dataset("train").target_ids for i in ids}
    assert english_ids <= set(model.vocabulary.tolist()) <= english_ids | set(data.tokenizer.all_special_ids)
    assert model.source_encoder.input.in_features == 8 and model.embedding_matrix.shape[1] == 16
    L.Trainer(accelerator="cpu", max_steps=1, limit_val_batches=0, logger=False, enable_progress_bar=False,
              enable_checkpointing=False).fit(model, datamodule=data)
    (text,) = model.generate([first.source], steps=2)
    assert isinstance(text, str)
