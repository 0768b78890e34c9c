"""The vocabulary operation: streaming vs the literal formula, forward time and peak extra memory.

    python experiments/bench/vocab_op.py            # the full grid (V, positions, d, dtype)
    python experiments/bench/vocab_op.py --tiny     # smoke run

Both implementations get the same inputs and the same noise (same generator,
same chunk order). The literal formula is skipped where its ``[N, V]`` fp32
tensors would not fit ``--literal-budget-gib`` (it holds about five).
``--chunk-sizes`` measures the streaming op at several chunk sizes, and
``--baseline-src DIR`` also another checkout's streaming op (``DIR`` is its
``src/``, e.g. a ``git worktree`` of an earlier commit), in the same rounds.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

FULL_GRID = {"vocab": [30522, 131072], "positions": [2048, 8192], "dim": [384, 768], "dtype": ["float32", "bfloat16"]}
TINY_GRID = {"vocab": [20000], "positions": [256], "dim": [32], "dtype": ["float32", "bfloat16"]}
VARIANTS = [{"impl": "streaming"}, {"impl": "literal"}]
LITERAL_TENSORS = 6  # [N, V] fp32 tensors the literal formula peaks at (measured: 5.6 GiB at N=8192, V=30522)


def measure(case: dict) -> dict:
    import torch

    ops = harness.load_vocab_attention()
    generator = torch.Generator().manual_seed(0)
    vocab, positions, dim = case["vocab"], case["positions"], case["dim"]
    dtype = getattr(torch, case["dtype"])
    embeddings = torch.randn(vocab, dim, generator=generator).to(dtype)
    query = embeddings[torch.randint(0, vocab, (positions,), generator=generator)].float()
    query.add_(torch.randn(positions, dim, generator=generator), alpha=0.3)
    mu = torch.rand(positions, generator=generator)
    std = (1 - mu**2).sqrt()
    norms = ops.half_squared_norms(embeddings)
    attention = ops.VOCAB_ATTENTIONS[case["impl"]]

    def run(rows: int = positions):
        return attention(
            query[:rows], embeddings, mu[:rows], std[:rows], sigma0=1.5, generator=torch.Generator().manual_seed(1),
            chunk_size=case.get("chunk_size", ops.DEFAULT_CHUNK_SIZE), compute_dtype=dtype, half_sq_norms=norms,
        )

    run(rows=4)  # loads the kernels' code pages, which would otherwise count as the op's memory
    with harness.PeakMemory() as memory:
        seconds = harness.timed(run)
    return {"seconds": seconds, "extra_bytes": memory.extra_bytes}


def literal_fits(case: dict, budget_gib: float) -> bool:
    return LITERAL_TENSORS * case["positions"] * case["vocab"] * 4 <= budget_gib * harness.GIB


def cases_of(grid: dict) -> list[dict]:
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def streaming_variants(chunk_sizes: list[int] | None, baseline_src: str | None) -> list[dict]:
    """The streaming op at each chunk size (default: the library's), and the baseline checkout's too."""
    sizes = [{"chunk_size": size} for size in chunk_sizes] if chunk_sizes else [{}]
    sources = [{}] + ([{"src": baseline_src}] if baseline_src else [])
    return [{"impl": "streaming", **size, **source} for size in sizes for source in sources]


def compare(
    script: str, cases: list[dict], rounds: int, budget_gib: float, streaming: list[dict] | None = None
) -> list[dict]:
    """Streaming and literal records per case; literal only where it fits the memory budget."""
    streaming = streaming or VARIANTS[:1]
    records = []
    for case in cases:
        fits = literal_fits(case, budget_gib)
        records += harness.interleaved(script, [case], streaming + VARIANTS[1:] if fits else streaming, rounds)
        if not fits:
            need = LITERAL_TENSORS * case["positions"] * case["vocab"] * 4
            records.append({**case, "impl": "literal", "skipped": f"needs ~{need / harness.GIB:.0f} GiB"})
    return records


def streaming_label(record: dict) -> str:
    label = f"streaming, chunks of {record['chunk_size']:,}" if "chunk_size" in record else "streaming"
    return label + harness.baseline_label(record)


def table(records: list[dict]) -> str:
    by_case: dict[tuple, dict] = {}
    for record in records:
        key = (record["vocab"], record["positions"], record["dim"], record["dtype"])
        by_case.setdefault(key, {"streaming": []})
        if record["impl"] == "literal":
            by_case[key]["literal"] = record
        else:
            by_case[key]["streaming"].append(record)
    rows = []
    for (vocab, positions, dim, dtype), group in by_case.items():
        literal = group.get("literal", {})
        literal_time = literal.get("seconds")
        rows += [[
            streaming_label(stream), f"{vocab:,}", f"{positions:,}", dim, dtype,
            f"{stream.get('seconds', float('nan')):.3f}",
            f"{literal_time:.3f}" if literal_time else literal.get("skipped", literal.get("error", "-")),
            harness.ratio(literal_time, stream.get("seconds")),
            harness.gib(stream.get("extra_bytes")), harness.gib(literal.get("extra_bytes")),
            f"1/{literal['extra_bytes'] / stream['extra_bytes']:.0f}" if literal.get("extra_bytes") and stream.get("extra_bytes") else "-",
        ] for stream in group["streaming"]]
    headers = ["variant", "V", "positions", "d", "dtype", "streaming s", "literal s", "speed-up",
               "streaming GiB", "literal GiB", "streaming / literal memory"]
    return harness.markdown_table(headers, rows)


def run(args) -> tuple[str, dict]:
    grid = dict(TINY_GRID if args.tiny else FULL_GRID)
    grid.update({key: getattr(args, key) for key in grid if getattr(args, key)})
    streaming = streaming_variants(args.chunk_sizes, args.baseline_src)
    records = compare(__file__, cases_of(grid), args.rounds, args.literal_budget_gib, streaming)
    return table(records), {"records": records}


def add_budget_argument(parser) -> None:
    parser.add_argument("--literal-budget-gib", type=float, default=8.0,
                        help="skip the literal formula where its [N, V] tensors would exceed this")


def add_arguments(parser) -> None:
    add_budget_argument(parser)
    parser.add_argument("--chunk-sizes", type=int, nargs="+", help="streaming chunk sizes to compare (default: the library's)")
    harness.add_baseline_argument(parser)
    for key, kind in (("vocab", int), ("positions", int), ("dim", int), ("dtype", str)):
        parser.add_argument(f"--{key}", type=kind, nargs="+", help=f"override the grid's {key} values")


if __name__ == "__main__":
    harness.main(__doc__.splitlines()[0], measure, run, add_arguments)
