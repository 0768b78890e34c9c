"""A second task from the same offline data, never used for tuning: Young's Literal Translation -> World English Bible.

Writes ``data/ylt_web/{train,validation,test}.jsonl`` (500 validation and 500
test verses, seed 0, as the demo) for ``JsonlDataModule``, and prints the
SacreBLEU of copying the source on each held-out split, the baseline a model
must beat.

    python experiments/bible/make_ylt_web.py            # needs pythonbible[ylt,web]
    smoothie fit --config lightning_configs/demo.yaml --config experiments/bible/ylt_web.yaml
"""

from __future__ import annotations

import argparse
from pathlib import Path

import sacrebleu

from smoothie_pl.data.bible import bible_pairs, split_pairs
from smoothie_pl.io import write_jsonl_atomically


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/ylt_web"))
    args = parser.parse_args(argv)
    splits = split_pairs(bible_pairs("YLT", "WEB"), validation_size=500, test_size=500, seed=0)
    copy_scores = {}
    for split, records in splits.items():
        write_jsonl_atomically(args.out / f"{split}.jsonl", records)
        if split != "train":
            sources, references = [r["src"] for r in records], [r["trg"] for r in records]
            copy_scores[split] = sacrebleu.corpus_bleu(sources, [references]).score
    print(f"wrote {', '.join(f'{len(r)} {s}' for s, r in splits.items())} pairs to {args.out}")
    for split, score in copy_scores.items():
        print(f"copying the source, {split}: SacreBLEU {score:.2f}")
    return copy_scores


if __name__ == "__main__":
    main()
