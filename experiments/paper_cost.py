"""Cost of the paper's runs: measured step time here and FLOPs, and the GPU hours they imply.

    python experiments/paper_cost.py [--batch 4] [--tasks qqp xsum ...] [--utilisation 0.3] [--device cuda]

For each task config it builds the paper-size model with the task's lengths over
a random embedding matrix of bert-base-cased's shape (28,996 x 768; the cost does
not depend on the values, and nothing is downloaded), then:

- times forward + backward + AdamW of a training step at ``--batch`` on this machine;
- counts the FLOPs of that step (``torch.utils.flop_counter``: matmuls and attention);
- estimates GPU hours for the paper's 500k steps at global batch 256 as
  FLOPs x 64 (batch 256 / 4) x 500k / (H100 bf16 dense peak 989 TFLOP/s x utilisation).

The estimate assumes the step's FLOPs scale linearly with the batch (they do), and
an utilisation (default 30 %) that is a guess for this model size, not a measurement.
On a GPU (``--device cuda --batch 256``) the measured seconds per step times 500k
replace the estimate.
"""

from __future__ import annotations

import argparse
import time
from unittest import mock

import torch
from torch.utils.flop_counter import FlopCounterMode

import smoothie_pl.module as module_file
from smoothie_pl.module import SmoothieModule
from smoothie_pl.pipeline import seeded_generator

VOCAB, DIM = 28_996, 768  # bert-base-cased
H100_BF16_PEAK = 989e12
PAPER_STEPS, PAPER_BATCH = 500_000, 256
TASKS = {  # (L, Lc, conditional), METHOD section 8
    "qqp": (50, 50, True),
    "xsum": (64, 512, True),
    "newsela_auto": (64, 64, True),
    "quasar_t": (50, 100, True),
    "rocstories": (80, 2, False),
    "paradetox": (40, 40, True),
    "iwslt14_de_en": (100, 100, True),
    "wmt14_de_en": (80, 80, True),
}


def paper_model(target_length: int, source_length: int, conditional: bool) -> SmoothieModule:
    matrix = torch.randn(VOCAB, DIM)
    with mock.patch.object(module_file, "load_embedding_matrix", return_value=matrix):
        return SmoothieModule(
            embedding="bert-base-cased-shaped",
            target_length=target_length,
            source_length=source_length,
            denoiser={"source_encoder": "scratch" if conditional else "none"},
        )


def training_step(model: SmoothieModule, optimizer, batch: dict, generator) -> None:
    loss = model.diffusion_loss(batch, generator)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def measure(task: str, batch_size: int, repeats: int, device: torch.device) -> tuple[int, float, float]:
    """(parameters, seconds per step on ``device``, FLOPs per step) at ``batch_size``."""
    target_length, source_length, conditional = TASKS[task]
    model = paper_model(target_length, source_length, conditional).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4, fused=True)
    ids = lambda length: torch.randint(VOCAB, (batch_size, length), device=device)  # noqa: E731
    batch = {
        "target_ids": ids(target_length),
        "source_ids": ids(source_length),
        "source_mask": torch.ones(batch_size, source_length, dtype=torch.bool, device=device),
    }
    generator = seeded_generator(device, 0)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    with torch.autocast(device.type, dtype=torch.bfloat16):
        training_step(model, optimizer, batch, generator)  # warm-up
        synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            training_step(model, optimizer, batch, generator)
        synchronize()
        seconds = (time.perf_counter() - start) / repeats
        counter = FlopCounterMode(display=False)
        with counter:
            training_step(model, optimizer, batch, generator)
    parameters = sum(p.numel() for p in model.parameters())
    return parameters, seconds, counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--utilisation", type=float, default=0.3)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    scale = PAPER_BATCH / args.batch
    print(f"| task | L / Lc | parameters | s/step on {args.device} (batch {args.batch}) | TFLOP/step at batch 256 "
          f"| H100 hours for 500k steps at {args.utilisation:.0%} utilisation |")
    print("|---|---|---|---|---|---|")
    for task in args.tasks:
        parameters, seconds, flops = measure(task, args.batch, args.repeats, torch.device(args.device))
        flops_256 = flops * scale
        hours = flops_256 * PAPER_STEPS / (H100_BF16_PEAK * args.utilisation) / 3600
        length, source_length, _ = TASKS[task]
        print(f"| {task} | {length} / {source_length} | {parameters / 1e6:.1f} M | {seconds:.2f} "
              f"| {flops_256 / 1e12:.1f} | {hours:.0f} |", flush=True)


if __name__ == "__main__":
    main()
