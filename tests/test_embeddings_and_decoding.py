import torch

from smoothie_pl.diffusion import ArctanSchedule, SmoothieSpace
from smoothie_pl.embeddings import load_embedding_matrix, load_tokenizer, real_token_mask, standardise
from smoothie_pl.text import ids_to_text


def test_standardisation_uses_real_rows_only():
    embeddings = torch.tensor([[1.0, 3.0], [5.0, 7.0], [1000.0, -1000.0]])
    real = torch.tensor([True, True, False])
    out = standardise(embeddings, real)
    # Real entries 1, 3, 5, 7: mean 4, sample std sqrt(((9 + 1 + 1 + 9) / 3)) = sqrt(20 / 3).
    std = (20 / 3) ** 0.5
    torch.testing.assert_close(out[:2], torch.tensor([[-3.0, -1.0], [1.0, 3.0]]) / std)
    torch.testing.assert_close(out[2], torch.tensor([996.0, -1004.0]) / std)


def test_per_feature_standardisation():
    embeddings = torch.tensor([[0.0, 10.0], [2.0, 30.0], [4.0, 50.0]])
    out = standardise(embeddings, torch.ones(3, dtype=torch.bool), per_feature=True)
    torch.testing.assert_close(out, torch.tensor([[-1.0, -1.0], [0.0, 0.0], [1.0, 1.0]]))


def test_unused_placeholders_are_not_real_tokens(word_model):
    tokenizer = load_tokenizer(word_model)
    mask = real_token_mask(tokenizer, len(tokenizer))
    assert not mask[tokenizer.convert_tokens_to_ids("[unused0]")]
    assert mask[tokenizer.convert_tokens_to_ids("cat")]


def test_loaded_matrix_is_standardised_over_real_rows(word_model):
    matrix = load_embedding_matrix(word_model)
    real = real_token_mask(load_tokenizer(word_model), matrix.shape[0])
    assert abs(matrix[real].mean().item()) < 1e-5
    assert abs(matrix[real].std().item() - 1.0) < 1e-5


def test_default_source_is_the_packaged_minilm():
    tokenizer = load_tokenizer(None)
    assert len(tokenizer) == 30522
    assert load_embedding_matrix(None).shape == (30522, 384)


def test_decoding_recovers_tokens_from_clean_embeddings(word_model):
    matrix = load_embedding_matrix(word_model)
    space = SmoothieSpace(matrix, ArctanSchedule(), chunk_size=7)
    ids = torch.randint(0, matrix.shape[0], (3, 11), generator=torch.Generator().manual_seed(0))
    assert torch.equal(space.decode(matrix[ids]), ids)


def test_text_is_cut_at_the_end_token_and_special_tokens_dropped(word_model):
    tokenizer = load_tokenizer(word_model)
    ids = tokenizer.convert_tokens_to_ids(["[CLS]", "the", "[PAD]", "cat", "sat", "[SEP]", "on", "mat"])
    assert ids_to_text(tokenizer, ids) == "the cat sat"


def test_recasing_takes_names_from_the_source_and_capitalises_each_sentence():
    from smoothie_pl.text import recase

    source = "And the LORD spake unto Moses. And Moses went up to Sinai."
    # "And" opens sentences in the source, so it is not a name; LORD, Moses and Sinai are.
    assert recase("and the lord said to moses and sinai", source) == "And the LORD said to Moses and Sinai"
    assert recase("", source) == ""
    assert recase("judah's king", "Judah's king rose") == "Judah's king"
    # Every sentence and quotation opens with a capital; a colon ends neither, nor does a possessive's apostrophe.
    said = recase("he went. then he said: the 'go! who? \u201cnone.' the brothers' wives", "")
    assert said == "He went. Then he said: the 'Go! Who? \u201cNone.' the brothers' wives"


def test_learned_casing_counts_spellings_away_from_sentence_starts():
    from smoothie_pl.text import learn_casing

    texts = ["and Yahweh spoke, and I heard.", "so I said that Yahweh is good.", "I saw the Lord; the lord is near.",
             "Then Lord. Then the king said no."]  # fmt: skip
    # Counted (not opening a sentence): Yahweh 2; I 2 (the third opens a text); Lord 2 and lord 1;
    # "Then" opens both its sentences, so it is never counted; king, said ... are lower case.
    assert learn_casing(texts, share=0.5) == {"yahweh": "Yahweh", "i": "I", "lord": "Lord"}
    assert learn_casing(texts) == {"yahweh": "Yahweh", "i": "I"}  # Lord is 2 of 3, below the default 0.8


def test_recasing_prefers_the_source_then_the_learned_casing():
    from smoothie_pl.text import recase

    casing = {"i": "I", "yahweh": "Yahweh", "lord": "Lord"}
    recased = recase("and i heard yahweh's voice. the lord spoke", "And the LORD spake", casing)
    # LORD from the source over the learned Lord; "yahweh's" follows "yahweh"; "i" from the casing.
    assert recased == "And I heard Yahweh's voice. The LORD spoke"


def test_an_uncased_tokenizer_is_told_from_a_cased_one(word_model, tmp_path):
    from smoothie_pl.text import lowercases

    from .conftest import make_word_model

    assert lowercases(load_tokenizer(None))  # MiniLM's uncased WordPiece
    assert not lowercases(load_tokenizer(word_model))  # "The" is unknown to it, "the" is a word
    assert lowercases(load_tokenizer(str(make_word_model(tmp_path / "lower", ["the"], lowercase=True))))
