"""A sample forming: the decoded text at every sampling step, for ``generate(..., trajectory=True)``.

The recorder is a sampler step callback (``callback(k, t, x, e0)``): at each
step it decodes the prediction ``e0`` the way the final output is decoded, so
the last step's text is the generated text. With several MBR candidates the
sampler runs once per candidate (``k == 0`` starts the next run) and a source's
trajectory is that of the candidate MBR chose.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class TrajectoryRecorder:
    """Decoded texts of every step of every sampler run over one batch of sources.

    Args:
        decode: predicted embeddings ``[B, L, d]`` to one text per row, as the final texts are decoded.
        sources: the batch's source strings.
    """

    def __init__(self, decode: Callable[[torch.Tensor], list[str]], sources: list[str]) -> None:
        self.decode = decode
        self.sources = sources
        self.runs: list[list[tuple[int, list[float], list[str]]]] = []

    def __call__(self, k: int, t: torch.Tensor, x: torch.Tensor, e0: torch.Tensor) -> None:
        if k == 0:
            self.runs.append([])
        self.runs[-1].append((k, t.tolist(), self.decode(e0)))

    def records(self, chosen: list[str], candidates: list[list[str]], first_index: int = 0) -> list[dict]:
        """One ``{index, source, prediction, steps: [{step, t, text}]}`` per source, for the chosen candidate."""
        records = []
        for row, (source, prediction) in enumerate(zip(self.sources, chosen)):
            run = self.runs[candidates[row].index(prediction)]
            steps = [{"step": k, "t": times[row], "text": texts[row]} for k, times, texts in run]
            records.append({"index": first_index + row, "source": source, "prediction": prediction, "steps": steps})
        return records


def chain(*callbacks: Callable | None) -> Callable | None:
    """One step callback calling each given one in turn (``None`` when none is given)."""
    present = [callback for callback in callbacks if callback is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]

    def both(k: int, t: torch.Tensor, x: torch.Tensor, e0: torch.Tensor) -> None:
        for callback in present:
            callback(k, t, x, e0)

    return both
