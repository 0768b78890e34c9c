"""Bad data, configs, checkpoints and diverging runs end in an error that names the file, line, key or step."""

import json

import pytest

from smoothie_pl.data import JsonlDataModule
from smoothie_pl.data.jsonl import read_jsonl_pairs
from smoothie_pl.errors import DataError, DataFileNotFoundError

GOOD = '{"src": "a", "trg": "b"}'


def write_bytes(path, lines: list[bytes]):
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


# ------------------------------------------------------------------ data files
@pytest.mark.parametrize(
    "line, message",
    [
        (b"{not json", "malformed JSON"),
        (b'{"src": "a"}', "missing field 'trg'"),
        (b'{"src": "a", "trg": "  "}', "field 'trg' must be a non-empty string"),
        (b'{"src": ["a"], "trg": "b"}', "field 'src' must be a non-empty string"),
        (b'{"src": "caf\xe9", "trg": "b"}', "invalid UTF-8 at byte 12"),
        (b"3", "expected a JSON object, got int"),
    ],
)
def test_bad_line_is_named_by_file_line_and_field(tmp_path, line, message):
    path = write_bytes(tmp_path / "bad.jsonl", [GOOD.encode(), b"", line, GOOD.encode()])
    with pytest.raises(DataError, match=message) as error:
        read_jsonl_pairs(path)
    assert str(error.value).startswith(f"{path}:3: ")


def test_missing_and_empty_files_are_named(tmp_path):
    with pytest.raises(DataFileNotFoundError, match="nope.jsonl does not exist"):
        read_jsonl_pairs(tmp_path / "nope.jsonl")
    empty = write_bytes(tmp_path / "empty.jsonl", [b"", b"  "])
    with pytest.raises(DataError, match=f"{empty} holds no 'src'/'trg' pairs: it is empty"):
        read_jsonl_pairs(empty)


def test_skipping_bad_lines_keeps_the_good_ones_and_reports_the_first_five(tmp_path):
    lines = [GOOD.encode()] + [b"{broken"] * 7 + [b'{"src": "c", "trg": "d"}']
    path = write_bytes(tmp_path / "mixed.jsonl", lines)
    with pytest.warns(UserWarning) as warnings:
        pairs = read_jsonl_pairs(path, skip_bad_lines=True)
    assert [(pair.source, pair.target) for pair in pairs] == [("a", "b"), ("c", "d")]
    (warning,) = warnings
    assert f"{path}: skipped 7 bad line(s) (lines 2, 3, 4, 5, 6, ...; line 2: malformed JSON" in str(warning.message)


def test_a_file_of_only_bad_lines_is_an_error_even_when_skipping(tmp_path):
    path = write_bytes(tmp_path / "bad.jsonl", [b"[1]", b"{"])
    with pytest.warns(UserWarning), pytest.raises(DataError, match="all 2 non-blank lines are bad"):
        read_jsonl_pairs(path, skip_bad_lines=True)


def test_overlong_texts_are_truncated_and_counted_in_one_warning(tmp_path, word_model):
    long_source = "the cat sat on the mat " * 3  # 18 words, + CLS and SEP
    records = [{"src": long_source, "trg": "a cat was sitting on a mat"}, {"src": "love thy neighbour", "trg": "love"}]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    data = JsonlDataModule(train_file=str(path), tokenizer=word_model, target_length=4, source_length=5)
    with pytest.warns(UserWarning) as warnings:
        dataset = data.dataset("train")
    messages = [str(warning.message) for warning in warnings]
    assert messages == [
        "train split: truncated 1 of 2 sources to source_length=5 tokens and 1 targets to target_length=4"
    ]
    tokens = data.tokenizer.convert_ids_to_tokens
    assert tokens(dataset.source_ids[0]) == ["[CLS]", "the", "cat", "sat", "[SEP]"]  # the end token is kept
    assert tokens(dataset.target_ids[0]) == ["a", "cat", "was", "sitting"]
    assert tokens(dataset.source_ids[1]) == ["[CLS]", "love", "thy", "neighbour", "[SEP]"]
