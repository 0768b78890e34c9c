"""Draw docs/images/process.png: Smoothie's forward process on a real word.

Left: the arctan schedule, i.e. the kernel width ``sigma_t`` and the noise std
``s(t)``. Right: for one position holding the word "light" (packaged MiniLM
vocabulary), the share of ``softmax(D_t)`` that falls on the ``k`` tokens
nearest to it, averaged over noise draws, at several times: the mass leaves
the word for its neighbours first and reaches the whole vocabulary at t = 1.

    PYTHONPATH=src python docs/images/process.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from smoothie_pl.diffusion.schedules import ArctanSchedule
from smoothie_pl.embeddings import load_embedding_matrix, load_tokenizer

WORD = "light"
TIMES = (0.01, 0.06, 0.08, 0.1, 0.15, 0.3, 1.0)
DRAWS = 64
OUTPUT = Path(__file__).with_name("process.png")


def mass_by_distance_rank(embeddings: torch.Tensor, row: int, t: float, schedule: ArctanSchedule) -> torch.Tensor:
    """Mean probability of ``softmax(mu D0 + s eps)`` on each token, tokens sorted by distance to ``row``."""
    clean = -(embeddings - embeddings[row]).pow(2).sum(-1) / (2 * schedule.sigma_min**2)  # D0, [V]
    order = clean.argsort(descending=True)
    mu, std = schedule.marginal(torch.tensor([t]))
    noise = torch.randn(DRAWS, clean.numel(), generator=torch.Generator().manual_seed(0))
    return torch.softmax(mu * clean + std * noise, dim=-1).mean(0)[order]


def main() -> None:
    schedule = ArctanSchedule()
    tokenizer = load_tokenizer(None)
    embeddings = load_embedding_matrix(None)
    row = tokenizer.convert_tokens_to_ids(WORD)
    clean = -(embeddings - embeddings[row]).pow(2).sum(-1)
    nearest = tokenizer.convert_ids_to_tokens(clean.topk(6).indices[1:].tolist())

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    times = torch.logspace(-3.3, 0, 200, dtype=torch.float64)
    _, std = schedule.marginal(times)
    left.plot(times, schedule.sigma_min * schedule.sigma_bar(times), label=r"kernel width $\sigma_t$")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("t (log scale)")
    left.set_ylabel(r"$\sigma_t = \sigma_{min}\,\bar\sigma(t)$")
    noise_axis = left.twinx()
    noise_axis.plot(times, std, color="tab:orange", label="noise std s(t)")
    noise_axis.set_ylim(0, 1.05)
    noise_axis.set_ylabel("s(t)")
    lines = left.get_lines() + noise_axis.get_lines()
    left.legend(lines, [line.get_label() for line in lines], loc="upper left", fontsize=8)
    left.set_title("arctan schedule\n(sigma_min 1.5, sigma_max 200, k 9, delta 1)", fontsize=9)

    ranks = torch.arange(1, embeddings.shape[0] + 1)
    colours = plt.cm.viridis(torch.linspace(0, 0.9, len(TIMES)).tolist())
    for t, colour in zip(TIMES, colours):
        cumulative = mass_by_distance_rank(embeddings, row, t, schedule).cumsum(0)
        right.plot(ranks, cumulative, color=colour, label=f"t = {t:g}")
    right.set_xscale("log")
    right.set_ylim(0, 1.02)
    right.set_xlabel(f'k nearest tokens to "{WORD}" (k = 1: the word; then {", ".join(nearest[:3])}, ...)', fontsize=9)
    right.set_ylabel(r"share of softmax($D_t$) on them")
    right.legend(loc="lower right", fontsize=8)
    right.set_title(
        f'softmax($D_t$) at one position holding "{WORD}"\n(MiniLM, V = {embeddings.shape[0]:,}; mean of {DRAWS} noise draws)',
        fontsize=9,
    )
    figure.savefig(OUTPUT, dpi=110)
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
