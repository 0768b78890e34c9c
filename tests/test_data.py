import json

import pytest

from smoothie_pl.data import JsonlDataModule
from smoothie_pl.data.bible import clean_verse
from smoothie_pl.data.jsonl import read_jsonl_pairs


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_batches_pad_targets_to_length_and_sources_to_longest(pairs_dir, word_model):
    data = JsonlDataModule(
        train_file=str(pairs_dir / "train.jsonl"),
        validation_file=str(pairs_dir / "validation.jsonl"),
        test_file=str(pairs_dir / "test.jsonl"),
        tokenizer=word_model,
        target_length=5,
        source_length=6,
        batch_size=8,
    )
    data.setup("test")
    batch = next(iter(data.test_dataloader()))
    tokenizer = data.tokenizer
    assert batch["target_ids"].shape == (8, 5)
    # "the cat sat on the mat" -> CLS + 6 words + SEP, truncated to 6 ids; no special tokens in targets.
    assert batch["source_ids"].shape == (8, 6)
    first_target = tokenizer.convert_ids_to_tokens(batch["target_ids"][0].tolist())
    assert first_target == ["a", "cat", "was", "sitting", "on"]
    fourth_target = tokenizer.convert_ids_to_tokens(batch["target_ids"][3].tolist())
    assert fourth_target == ["he", "went", "to", "the", "city"]
    blessed = tokenizer.convert_ids_to_tokens(batch["target_ids"][4].tolist())
    assert blessed == ["happy", "are", "the", "gentle", "[PAD]"]
    assert batch["source_mask"][4].tolist() == [True] * 6  # CLS blessed are the meek SEP
    assert batch["source_mask"][7].tolist() == [True] * 5 + [False]  # CLS love thy neighbour SEP
    assert batch["reference"][0] == "a cat was sitting on a mat"
    assert batch["index"].tolist() == list(range(8))


def test_restricted_vocabulary_holds_training_tokens_and_specials(pairs_dir, word_model):
    data = JsonlDataModule(train_file=str(pairs_dir / "train.jsonl"), tokenizer=word_model, restrict_vocabulary=True)
    tokenizer = data.tokenizer
    vocabulary = data.vocabulary()
    words = {w for line in (pairs_dir / "train.jsonl").read_text().splitlines() for t in json.loads(line).values() for w in t.split()}
    expected = set(tokenizer.convert_tokens_to_ids(sorted(words))) | set(tokenizer.all_special_ids)
    assert set(vocabulary) == expected
    assert JsonlDataModule(train_file=str(pairs_dir / "train.jsonl"), tokenizer=word_model).vocabulary() is None


def test_targets_only_vocabulary_leaves_out_words_only_the_sources_use(tmp_path, word_model):
    train = write_lines(tmp_path / "train.jsonl", ['{"src": "thou art the cat", "trg": "you are the cat"}'])
    data = JsonlDataModule(train_file=str(train), tokenizer=word_model, restrict_vocabulary="targets")
    tokenizer = data.tokenizer
    expected = set(tokenizer.convert_tokens_to_ids(["you", "are", "the", "cat"])) | set(tokenizer.all_special_ids)
    assert set(data.vocabulary()) == expected
    both = JsonlDataModule(train_file=str(train), tokenizer=word_model, restrict_vocabulary=True).vocabulary()
    assert set(both) == expected | set(tokenizer.convert_tokens_to_ids(["thou", "art"]))


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "malformed JSON"),
        ('{"src": "a"}', "missing field 'trg'"),
        ('{"src": "a", "trg": ""}', "field 'trg' must be a non-empty string"),
        ('{"src": 3, "trg": "b"}', "field 'src' must be a non-empty string"),
        ('["a", "b"]', "expected a JSON object"),
    ],
)
def test_bad_lines_are_reported_with_file_and_line(tmp_path, line, message):
    path = write_lines(tmp_path / "bad.jsonl", ['{"src": "a", "trg": "b"}', line])
    with pytest.raises(ValueError, match=message) as error:
        read_jsonl_pairs(path)
    assert f"{path}:2" in str(error.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_jsonl_pairs(tmp_path / "nope.jsonl")


def test_bible_cleaning_drops_brackets_and_unifies_apostrophes():
    assert clean_verse("darkness [was] upon  the deep") == "darkness was upon the deep"
    assert clean_verse("God`s Spirit and Judah’s") == "God's Spirit and Judah's"
