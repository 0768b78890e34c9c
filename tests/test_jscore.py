"""J-score (ParaDetox) against naive one-sentence-at-a-time model calls and hand-worked similarities.

Every model is tiny and built here: BERT classifiers and encoders over the word-level
tokenizer of ``conftest.make_word_model``; nothing is downloaded.
"""

from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertModel

from smoothie_pl.metrics import JScore, TextMetrics

from .conftest import PAIRS, make_word_model
from .test_module import pairs_data, tiny_module

SOURCES = [source for source, _ in PAIRS]
PREDICTIONS = [target for _, target in PAIRS[:-1]] + [""]  # an empty prediction too
REFERENCES = [target for _, target in PAIRS]


def make_classifier(directory: Path, word_model: str, labels: list[str], seed: int = 0) -> str:
    """A random BERT classifier with classes named ``labels`` in index order, and the word model's tokenizer.

    ``initializer_range`` 0.2 (not 0.02) spreads the logits, so decisions differ between
    sentences and no margin is so thin that padding's rounding could flip one.
    """
    config = BertConfig.from_pretrained(
        word_model,
        id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)},
        initializer_range=0.2,
    )
    torch.manual_seed(seed)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(directory)
    AutoTokenizer.from_pretrained(word_model).save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def style_model(word_model, tmp_path_factory) -> str:
    """'neutral' is class 1 here, so choosing the label by index 0 would be caught."""
    return make_classifier(tmp_path_factory.mktemp("style"), word_model, ["toxic", "neutral"], seed=4)


@pytest.fixture(scope="module")
def fluency_model(word_model, tmp_path_factory) -> str:
    """Unnamed classes, like the CoLA classifier ParaDetox uses (acceptable = LABEL_0)."""
    return make_classifier(tmp_path_factory.mktemp("fluency"), word_model, ["LABEL_0", "LABEL_1"], seed=0)


@pytest.fixture(scope="module")
def models(style_model, word_model, fluency_model) -> dict:
    return {"style_classifier": style_model, "similarity_model": word_model, "fluency_classifier": fluency_model}


def naive_decisions(path: str, index: int, texts: list[str]) -> list[float]:
    """1.0 where class ``index`` has the largest logit, one unpadded sentence at a time."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    decisions = []
    with torch.no_grad():
        for text in texts:
            logits = model(**tokenizer(text, return_tensors="pt")).logits[0]
            others = torch.cat([logits[:index], logits[index + 1 :]])
            assert (logits[index] - others).abs().min() > 1e-4, "margin too thin for a float comparison"
            decisions.append(float(logits[index] > others.max()))
    return decisions


def naive_similarities(path: str, sources: list[str], predictions: list[str]) -> list[float]:
    """max(0, cos) of the plain token means of each unpadded pair."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()

    def embed(text: str) -> torch.Tensor:
        return model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0].mean(dim=0)

    similarities = []
    with torch.no_grad():
        for source, prediction in zip(sources, predictions):
            u, v = embed(source), embed(prediction)
            similarities.append(max(0.0, float(u @ v / (u.norm() * v.norm()))))
    return similarities


def test_scores_match_naive_model_calls(models):
    sta = naive_decisions(models["style_classifier"], 1, PREDICTIONS)  # "neutral" is index 1
    fl = naive_decisions(models["fluency_classifier"], 0, PREDICTIONS)
    sim = naive_similarities(models["similarity_model"], SOURCES, PREDICTIONS)
    assert 0 < sum(sta) < len(sta) and 0 < sum(fl) < len(fl)  # both decisions occur: the case is not degenerate

    metric = JScore(**models, batch_size=3)  # three batches of padded texts
    scores = metric.sample_scores(SOURCES, PREDICTIONS)
    assert scores["sta"].tolist() == sta
    assert scores["fl"].tolist() == fl
    assert scores["sim"].tolist() == pytest.approx(sim, abs=1e-5)

    metric.update(SOURCES, PREDICTIONS)
    result = {name: float(value) for name, value in metric.compute().items()}
    n = len(PREDICTIONS)
    assert result["jscore"] == pytest.approx(sum(a * s * f for a, s, f in zip(sta, sim, fl)) / n, abs=1e-6)
    assert result["sta"] == sum(sta) / n
    assert result["fl"] == sum(fl) / n
    assert result["sim"] == pytest.approx(sum(sim) / n, abs=1e-6)


def test_jscore_is_the_mean_of_products_not_the_product_of_means(style_model, word_model):
    """With one classifier as both judges, asking for opposite classes, every product has a 0 factor."""
    metric = JScore(style_model, word_model, style_model, style_label="neutral", fluency_label="toxic")
    metric.update(SOURCES, PREDICTIONS)
    result = metric.compute()
    assert 0 < result["sta"] < 1 and result["fl"] == pytest.approx(1 - result["sta"])
    assert result["sta"] * result["sim"] * result["fl"] > 0.1
    assert result["jscore"] == 0


def test_labels_are_chosen_by_name(word_model, tmp_path):
    """The same weights with the class names swapped give the complementary decisions."""
    plain = make_classifier(tmp_path / "plain", word_model, ["neutral", "toxic"], seed=4)
    swapped = make_classifier(tmp_path / "swapped", word_model, ["toxic", "neutral"], seed=4)
    first = JScore(plain, word_model, plain, fluency_label="toxic").sample_scores(SOURCES, PREDICTIONS)["sta"]
    second = JScore(swapped, word_model, swapped, fluency_label="toxic").sample_scores(SOURCES, PREDICTIONS)["sta"]
    assert 0 < first.sum() < len(first)
    assert (first + second).tolist() == [1.0] * len(first)


def test_missing_label_names_the_model_and_its_labels(models):
    metric = JScore(**models, style_label="non-toxic")
    with pytest.raises(ValueError, match=r"(?s)style.*no label 'non-toxic'.*'toxic'.*'neutral'"):
        metric.update(SOURCES, PREDICTIONS)


def test_every_model_is_required(models):
    for option in models:
        with pytest.raises(ValueError, match=f"JScore needs `{option}`"):
            JScore(**{**models, option: None})


@pytest.fixture(scope="module")
def hand_encoder(tmp_path_factory) -> str:
    """An encoder with no transformer layer: a token's state is LayerNorm(its word embedding) alone.

    Special and padding tokens embed to 0, so a sentence's mean is proportional to the
    LayerNorm of its words: 'love' (1, -1, 0, 0), 'hate' its negative, 'like' (1, 0, -1, 0).
    """
    path = make_word_model(tmp_path_factory.mktemp("hand"), ["love", "hate", "like"], dim=4)
    model = BertModel(BertConfig.from_pretrained(path, num_hidden_layers=0))
    embeddings = model.embeddings
    with torch.no_grad():
        for table in (embeddings.word_embeddings, embeddings.position_embeddings, embeddings.token_type_embeddings):
            table.weight.zero_()
        vocab = AutoTokenizer.from_pretrained(path).get_vocab()
        for word, vector in {"love": [1, -1, 0, 0], "hate": [-1, 1, 0, 0], "like": [1, 0, -1, 0]}.items():
            embeddings.word_embeddings.weight[vocab[word]] = torch.tensor(vector, dtype=torch.float)
        embeddings.LayerNorm.weight.fill_(1)
        embeddings.LayerNorm.bias.zero_()
    model.save_pretrained(path)
    return str(path)


def test_similarity_is_the_clipped_cosine_of_mean_pooled_states(hand_encoder, style_model):
    sources = ["love", "love", "love", "love love"]
    predictions = ["love love love", "like", "hate", "love hate like"]
    # cos 1; (1,-1,0,0).(1,0,-1,0) / 2 = 1/2; -1 clipped to 0; a sum (1,0,-1,0) of all three against love: 1/2
    expected = [1.0, 0.5, 0.0, 0.5]
    metric = JScore(style_model, hand_encoder, style_model, fluency_label="toxic", batch_size=4)
    scores = metric.sample_scores(sources, predictions)
    assert scores["sim"].tolist() == pytest.approx(expected, abs=1e-6)


def test_two_halves_equal_one_update(models):
    once, halves = JScore(**models), JScore(**models)
    once.update(SOURCES, PREDICTIONS)
    halves.update(SOURCES[:3], PREDICTIONS[:3])
    halves.update(SOURCES[3:], PREDICTIONS[3:])
    # The halves pad to their own longest text: fp32 kernels then round differently (1.6e-8 seen on AVX2).
    for name, value in once.compute().items():
        assert float(halves.compute()[name]) == pytest.approx(float(value), rel=1e-6)


def test_length_mismatch_is_an_error(models):
    with pytest.raises(ValueError, match="Batch sizes differ"):
        JScore(**models).update(SOURCES, PREDICTIONS[:2])


def test_detoxification_set_skips_jscore_with_a_note_without_models():
    metrics = TextMetrics("detoxification")
    assert metrics.names == ["bleu", "sacrebleu"]
    assert metrics.tracked == "bleu"
    assert metrics.notes[0] == "detoxification: skipped jscore, sta, sim, fl, no `jscore` given"
    assert "perplexity" in metrics.notes[1]


def test_detoxification_set_tracks_jscore(models):
    metrics = TextMetrics("detoxification", jscore={**models, "batch_size": 4})
    assert metrics.tracked == "jscore"
    metrics.update(sources=SOURCES, predictions=PREDICTIONS, references=REFERENCES)
    result = metrics.compute()
    assert list(result) == ["jscore", "sta", "sim", "fl", "bleu", "sacrebleu"]
    alone = JScore(**models)
    alone.update(SOURCES, PREDICTIONS)
    for name, value in alone.compute().items():  # batches of 4 against one batch: fp32 rounding only
        assert result[name] == pytest.approx(float(value), rel=1e-6)


def test_smoothie_test_reports_jscore_from_metric_options(models, word_model, pairs_dir):
    """`metric_options: {jscore: ...}` reaches the test metrics, and the sources reach JScore."""
    import lightning as L

    module = tiny_module(word_model, evaluation={"metric_set": "detoxification", "metric_options": {"jscore": models}})
    trainer = L.Trainer(accelerator="cpu", limit_test_batches=1, logger=False, enable_progress_bar=False)
    (results,) = trainer.test(module, datamodule=pairs_data(pairs_dir, word_model, batch_size=4))
    assert module.test_metrics.tracked == "jscore"
    assert {"test/jscore", "test/sta", "test/sim", "test/fl", "test/bleu"} <= set(results)
    assert 0 < results["test/sim"] <= 1  # a cosine to the source: a missing source would have failed
    assert results["test/jscore"] <= min(results["test/sta"], results["test/sim"], results["test/fl"])
