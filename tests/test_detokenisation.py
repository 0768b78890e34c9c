"""Decoded WordPiece text is written as the references are: hyphens, apostrophes, quotes and stops joined."""

from __future__ import annotations

import pytest

from smoothie_pl.embeddings import load_tokenizer
from smoothie_pl.text import ids_to_text, join_words

# World English Bible verses (public domain), as the demo's references write them.
REFERENCES = [
    "It happened, when Ben-hadad heard this message, as he was drinking, he and the kings in the pavilions,",
    '"These are of those who rebel against the light; They don\'t know the ways of it, Nor abide in the paths of it.',
    "Justice is turned away backward, and righteousness stands afar off; for truth is fallen in the street, "
    "and uprightness can't enter.",
    "There arose therefore a questioning on the part of John's disciples with some Jews about purification.",
    "I heard the number of those who were sealed, one hundred forty-four thousand, sealed out of every tribe "
    "of the children of Israel:",
    'He said to them, "Go into all the world, and preach the Good News to the whole creation."',
    "Yahweh's hand was on me there; and he said to me, Arise, go out into the plain (there I will talk with you).",
    "Their brothers' wives went up with them.",
]


@pytest.fixture(scope="module")
def minilm():
    return load_tokenizer(None)


@pytest.mark.parametrize("reference", REFERENCES)
def test_references_survive_tokenising_and_decoding(minilm, reference):
    ids = minilm(reference, add_special_tokens=False)["input_ids"]
    assert ids_to_text(minilm, ids) == reference.lower()  # MiniLM's vocabulary is uncased


def test_the_plain_decoder_does_not_round_trip_them(minilm):
    """The references are hard cases: Hugging Face's own clean-up leaves most of them spaced apart."""
    plain = [
        minilm.decode(minilm(text, add_special_tokens=False)["input_ids"], clean_up_tokenization_spaces=True)
        for text in REFERENCES
    ]
    assert sum(text != reference.lower() for text, reference in zip(plain, REFERENCES)) >= 6


@pytest.mark.parametrize(
    ("words", "text"),
    [
        (["ben", "-", "hadad", "heard", "."], "ben-hadad heard."),
        (["he", "said", ",", '"', "go", ".", '"'], 'he said, "go."'),
        (['"', "i", "am", '"', "(", "he", "said", ")", ";", "then"], '"i am" (he said); then'),
        (["it", "isn", "'", "t", "yahweh", "'", "s"], "it isn't yahweh's"),
        (["the", "brothers", "'", "wives"], "the brothers' wives"),
        (["he", "said", ",", "'", "no", "'", "."], "he said, 'no'."),
        # A verse that opens inside a quotation started in the verse before it closes after its stop.
        (["go", "home", ".", '"'], 'go home."'),
    ],
)
def test_words_are_joined_as_written(words, text):
    assert join_words(words) == text


def test_word_level_tokenizers_are_joined_too(word_model):
    tokenizer = load_tokenizer(word_model)
    ids = tokenizer.convert_tokens_to_ids(["the", "cat", "sat", "on", "the", "mat"])
    assert ids_to_text(tokenizer, ids) == "the cat sat on the mat"


def test_collapse_repeats_keeps_one_word_of_each_run(minilm):
    # "be ##hold be ##hold" are two equal words of two pieces each; "," "," is a run of stops.
    tokens = ["and", "be", "##hold", "be", "##hold", ",", ",", "his", "his", "his", "hand", ",", "his", "hand"]
    ids = minilm.convert_tokens_to_ids(tokens)
    assert ids_to_text(minilm, ids, collapse_repeats=True) == "and behold, his hand, his hand"
    assert ids_to_text(minilm, ids) == "and behold behold,, his his his hand, his hand"


def test_collapse_repeats_on_a_tokenizer_that_keeps_spaces():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocabulary = {word: i for i, word in enumerate(["[PAD]", "[UNK]", "the", "cat", "sat."])}
    backend = Tokenizer(models.WordLevel(vocabulary, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # spaces kept: decoded through tokenizer.decode
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")
    ids = tokenizer("the the cat sat. sat.", add_special_tokens=False)["input_ids"]
    assert ids_to_text(tokenizer, ids, collapse_repeats=True) == "the cat sat."
    assert ids_to_text(tokenizer, ids) == "the the cat sat. sat."
