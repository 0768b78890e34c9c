"""Denoiser diagnostics over the diffusion time: how well it reconstructs, and how hard the task is.

At each ``t`` of a grid, on a fixed validation batch, the callback measures the
denoiser's x0-prediction MSE, the token accuracy of its decoded prediction, and
the probability the noised distribution ``softmax(mu D0 + std eps)`` still puts
on the true token. The last one says how much of the answer the input holds at
``t`` (near 1 at small t, about ``1 / V`` at t = 1), so the first two can be
read against it: a denoiser that fails where the true token is still obvious is
undertrained; one that fails only where it is buried is doing what it can.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from smoothie_pl.callbacks.trigger import ValidationTrigger
from smoothie_pl.diffusion.spaces import SmoothieSpace
from smoothie_pl.diffusion.vocab_attention import DEFAULT_CHUNK_SIZE, LOG_PROB_FLOOR, noisy_logit_chunks

DEFAULT_TIMES = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@torch.no_grad()
def true_row_log_probs(
    query: torch.Tensor,
    embeddings: torch.Tensor,
    rows: torch.Tensor,
    mu: torch.Tensor,
    std: torch.Tensor,
    *,
    sigma0: float,
    generator: torch.Generator | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    half_sq_norms: torch.Tensor | None = None,
) -> torch.Tensor:
    """``log softmax(mu * D0(query) + std * eps)[i, rows[i]]`` for every query row, ``[N]``.

    Streams the vocabulary in chunks with an online log-sum-exp, like
    :func:`~smoothie_pl.diffusion.vocab_attention.noisy_vocab_attention`, and
    takes its noisy logits from the same ``noisy_logit_chunks``, so a generator
    seeded as the one given to ``noisy_vocab_attention`` scores the very
    distribution whose read-out the model saw. The true row's logit is taken
    from the chunk that holds it, with that chunk's noise. Logits are fp32 even
    when the space's matmuls run in bf16, so they may differ by that rounding.
    """
    n = query.shape[0]
    running_max = torch.full((n,), float("-inf"), device=query.device)
    running_sum = torch.zeros(n, device=query.device)
    true_logit = torch.zeros(n, device=query.device)
    chunks = noisy_logit_chunks(
        query.float(), embeddings.float(), mu, std, sigma0=sigma0, generator=generator, chunk_size=chunk_size,
        half_sq_norms=half_sq_norms,
    )
    for start, _, logits in chunks:
        offset = rows - start
        inside = (offset >= 0) & (offset < logits.shape[1])
        picked = logits.gather(1, offset.clamp(0, logits.shape[1] - 1).unsqueeze(1)).squeeze(1)
        true_logit = torch.where(inside, picked, true_logit)

        new_max = torch.maximum(running_max, logits.amax(dim=1))
        shifted = (logits - new_max.unsqueeze(1)).clamp_min_(LOG_PROB_FLOOR)  # CPU exp is slow on underflow
        running_sum = running_sum * torch.exp(running_max - new_max) + shifted.exp_().sum(1)
        running_max = new_max
    return true_logit - running_max - running_sum.log()


class Diagnostics(Callback):
    """Reconstruction MSE, token accuracy and true-token probability against ``t``.

    Runs at the end of the first validation batch (the validation loader is not
    shuffled, so it is the same batch every time), when Lightning's EMA callback
    has its weights swapped in whatever the callbacks' order, and under no grad.
    Skipped during the sanity check.

    Args:
        times: the grid of diffusion times (the schedule clamps 0 and 1).
        every_n_steps: run at a validation only when this many optimizer steps
            have passed since the last run (``None``: every validation).
        max_examples: sequences of the batch used (the cost is about three
            vocabulary passes and one denoiser call per ``t``).
        seed: seed of the noise; the same at every ``t`` so the curves are smooth.
        plot: save ``<log_dir>/diagnostics/step{N}.png`` on rank zero, and send
            the image to loggers whose ``experiment`` has ``add_image``
            (TensorBoard's ``SummaryWriter``).

    Logged (per ``t``, e.g. ``diag/acc_t0.20``): ``diag/mse_t*`` (MSE over all
    positions and features, padding included, as in training), ``diag/acc_t*``
    (accuracy of the decoded tokens on non-pad target positions) and
    ``diag/p_true_t*`` (mean probability of the true token's row over the
    non-pad positions whose token is in the diffusion vocabulary). The
    prediction is the first denoiser call, without self-conditioning. Under
    DDP each rank uses its own first batch and the numbers are averaged.
    """

    def __init__(
        self,
        times: Sequence[float] = DEFAULT_TIMES,
        every_n_steps: int | None = None,
        max_examples: int = 16,
        seed: int = 0,
        plot: bool = True,
    ) -> None:
        if not times or any(not 0.0 <= t <= 1.0 for t in times):
            raise ValueError(f"diagnostics.times must be a non-empty list of values in [0, 1], got {times}")
        if max_examples <= 0:
            raise ValueError(f"diagnostics.max_examples must be positive, got {max_examples}")
        self.times = sorted(float(t) for t in times)
        self.trigger = ValidationTrigger(every_n_steps)
        self.max_examples = max_examples
        self.seed = seed
        self.plot = plot

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if not self.trigger.due(trainer, batch_idx, dataloader_idx):
            return
        with torch.no_grad(), trainer.precision_plugin.forward_context():
            values = torch.stack([self.measure(pl_module, batch, t) for t in self.times], dim=1)
        values = trainer.strategy.reduce(values, reduce_op="mean")
        curves = dict(zip(("mse", "acc", "p_true"), values.tolist()))
        for name, curve in curves.items():
            for t, value in zip(self.times, curve):
                # sync_dist is a no-op average of equal values; it keeps Lightning's DDP warning quiet.
                pl_module.log(f"diag/{name}_t{t:.2f}", value, batch_size=1, sync_dist=True)
        directory = Path(trainer.log_dir) / "diagnostics"  # a broadcast: every rank must ask
        if self.plot and trainer.is_global_zero:
            self._save_plot(trainer, directory, curves)

    def measure(self, pl_module: L.LightningModule, batch: dict, t: float) -> torch.Tensor:
        """``[mse, accuracy, p_true]`` of the batch at time ``t`` (``p_true`` is NaN outside the Smoothie space)."""
        space, device = pl_module.space, pl_module.device
        source_ids, source_mask = batch["source_ids"][: self.max_examples], batch["source_mask"][: self.max_examples]
        pipeline = pl_module.pipeline
        width, live = pipeline.target_window(source_mask)  # the positions training models
        target_ids = batch["target_ids"][: self.max_examples, :width]
        size, length = target_ids.shape
        clean = pl_module.embedding_matrix[target_ids]
        times = torch.full((size,), t, device=device)

        x_t = space.noised_input(clean, times, torch.Generator(device=device).manual_seed(self.seed))
        source, source_copy = pipeline.encode_source(source_ids, source_mask), pipeline.source_copy(source_ids, width)
        predicted = pl_module.denoiser(x_t, times, source, source_mask, source_copy=source_copy, target_mask=live)
        predicted = predicted.float()
        modelled = torch.ones_like(target_ids, dtype=torch.bool) if live is None else live
        mse = (predicted - clean).pow(2).mean(-1)[modelled].mean()

        real = (target_ids != pl_module.tokenizer.pad_token_id) & modelled
        decoded = pl_module.vocabulary[space.decode(predicted)]
        accuracy = (decoded == target_ids)[real].float().mean()

        if not isinstance(space, SmoothieSpace):  # p_true below is written in Smoothie's distances
            return torch.stack([mse, accuracy, torch.tensor(float("nan"), device=device)]).float()
        rows = torch.searchsorted(pl_module.vocabulary, target_ids).clamp(max=space.vocab_size - 1)
        scored = real & (pl_module.vocabulary[rows] == target_ids)
        mu, std = space.schedule.marginal(times)
        log_probs = true_row_log_probs(
            clean.reshape(size * length, -1),
            space.embeddings,
            rows.flatten(),
            mu.repeat_interleave(length),
            std.repeat_interleave(length),
            sigma0=space.sigma0,
            generator=torch.Generator(device=device).manual_seed(self.seed),
            chunk_size=space.chunk_size,
            half_sq_norms=space.half_sq_norms,
        )
        p_true = log_probs.view(size, length).exp()[scored].mean()
        return torch.stack([mse, accuracy, p_true]).float()

    def _save_plot(self, trainer: L.Trainer, directory: Path, curves: dict[str, list[float]]) -> None:
        """One panel per quantity (their scales differ; ``p_true`` spans orders of magnitude, so log y)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(12, 3.6), layout="constrained")
        canvas = FigureCanvasAgg(figure)
        titles = {"mse": "reconstruction MSE", "acc": "token accuracy (non-pad)", "p_true": "P(true token) in input"}
        for axis, (name, curve) in zip(figure.subplots(1, 3), curves.items()):
            axis.plot(self.times, curve, marker="o")
            axis.set_title(titles[name])
            axis.set_xlabel("t")
            axis.grid(alpha=0.3)
            if name == "acc":
                axis.set_ylim(-0.02, 1.02)
            if name == "p_true" and all(math.isfinite(v) and v > 0 for v in curve):
                axis.set_yscale("log")
        figure.suptitle(f"step {trainer.global_step}")

        directory.mkdir(parents=True, exist_ok=True)
        figure.savefig(directory / f"step{trainer.global_step}.png", dpi=100)
        with (directory / f"step{trainer.global_step}.json").open("w") as out:
            json.dump({"step": trainer.global_step, "t": self.times, **curves}, out)

        canvas.draw()
        image = np.asarray(canvas.buffer_rgba())[..., :3]
        for logger in trainer.loggers:
            if hasattr(logger.experiment, "add_image"):
                logger.experiment.add_image("diag/curves", image, trainer.global_step, dataformats="HWC")
