"""CUDA benches: the vocabulary operation (streaming, literal, fused) and a training step, with peak GPU memory.

    PYTHONPATH=src python experiments/gpu/bench.py

Times with CUDA events after a warm-up, peak memory from the CUDA caching
allocator (``torch.cuda.max_memory_allocated`` above the inputs). Prints
markdown tables; exits with a note where there is no CUDA device.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import harness  # noqa: E402
from train_step import DEMO, batches, build  # noqa: E402

MIB = 2**20


def cuda_timed(fn, repeats: int = 5) -> tuple[float, int]:
    """Median seconds of ``fn()`` and its peak allocated bytes above what was allocated before it."""
    fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return sorted(times)[len(times) // 2], torch.cuda.max_memory_allocated() - before


def vocab_op_rows() -> list[list]:
    from smoothie_pl.diffusion.vocab_attention import VOCAB_ATTENTIONS, half_squared_norms

    rows = []
    for dim in (384, 768):
        for dtype in (torch.float32, torch.bfloat16):
            generator = torch.Generator(device="cuda").manual_seed(0)
            embeddings = torch.randn(30522, dim, device="cuda", generator=generator).to(dtype)
            query = embeddings[torch.randint(0, 30522, (8192,), device="cuda", generator=generator)].float()
            mu = torch.rand(8192, device="cuda", generator=generator)
            std, norms = (1 - mu**2).sqrt(), half_squared_norms(embeddings)
            measured = {}
            for name in ("literal", "streaming", "fused"):
                op = VOCAB_ATTENTIONS[name]
                try:
                    measured[name] = cuda_timed(lambda: op(
                        query, embeddings, mu, std, sigma0=1.5, generator=generator, chunk_size=4096,
                        compute_dtype=dtype, half_sq_norms=norms,
                    ))
                except (RuntimeError, ValueError) as error:
                    measured[name] = (None, None, str(error).splitlines()[0][:60])
            line = [30522, 8192, dim, str(dtype).removeprefix("torch.")]
            for name in ("literal", "streaming", "fused"):
                seconds, peak = measured[name][:2]
                line += [f"{seconds * 1e3:.1f} ms / {peak / MIB:.0f} MiB" if seconds else measured[name][2]]
            line += [harness.ratio(measured["streaming"][0], measured["fused"][0])]
            rows.append(line)
    return rows


def train_rows() -> list[list]:
    rows = []
    for batch in (32, 256):
        for impl in ("literal", "streaming", "fused"):
            case = {"denoiser": DEMO, "vocab": 9679, "batch": batch, "length": 64, "impl": impl,
                    "precision": "bf16", "vocab_dtype": "auto"}
            module, optimizer = build(case)
            module.cuda()
            module._build_space(module.vocabulary)  # vocab_dtype auto, chosen again now that E is on the GPU
            optimizer = module.configure_optimizers()["optimizer"]
            data, generator = batches(case), torch.Generator(device="cuda").manual_seed(1)
            cuda_batch = {key: value.cuda() for key, value in next(data).items()}

            def step():
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = module.diffusion_loss(cuda_batch, generator)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            try:
                seconds, peak = cuda_timed(step)
                rows.append([batch, impl, f"{batch * 64 / seconds:,.0f}", f"{peak / MIB:.0f}"])
            except (RuntimeError, ValueError) as error:
                rows.append([batch, impl, str(error).splitlines()[0][:60], "-"])
    return rows


def main() -> None:
    if not torch.cuda.is_available():
        print("skipped: no CUDA device")
        return
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}\n")
    print("Vocabulary operation, forward (median of 5; peak allocated above the inputs):\n")
    print(harness.markdown_table(
        ["V", "positions", "d", "dtype", "literal", "streaming", "fused", "fused over streaming"], vocab_op_rows()))
    print("\nTraining step of the demo model (bf16 autocast, vocab_dtype auto, V = 9,679):\n")
    print(harness.markdown_table(["batch", "vocab op", "tokens/s", "peak MiB"], train_rows()))


if __name__ == "__main__":
    main()
