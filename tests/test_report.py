import json

import pytest
import sacrebleu

from smoothie_pl.report import report


def test_report_scores_predictions_and_the_copy_baseline(tmp_path):
    records = [
        {"index": 0, "source": "thou shalt not kill", "reference": "You shall not murder.", "prediction": "you shall not murder."},
        {"index": 1, "source": "ye are the salt", "reference": "You are the salt of the earth.", "prediction": "You are the salt."},
    ]
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    scores = report(path, examples=1)
    predictions = [record["prediction"] for record in records]
    references = [[record["reference"] for record in records]]
    assert scores["sacrebleu"] == pytest.approx(sacrebleu.corpus_bleu(predictions, references).score)
    assert scores["sacrebleu_lowercase"] == pytest.approx(
        sacrebleu.corpus_bleu(predictions, references, lowercase=True).score
    )
    sources = [record["source"] for record in records]
    assert scores["copy_source_sacrebleu"] == pytest.approx(sacrebleu.corpus_bleu(sources, references).score)


def test_report_names_the_line_of_a_bad_record(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"source": "a", "reference": "b", "prediction": "c"}\n{"source": "a"}\n')
    with pytest.raises(ValueError, match=r"predictions.jsonl:2: missing field\(s\) prediction"):
        report(path)
