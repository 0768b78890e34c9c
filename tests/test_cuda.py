"""The CUDA path: the streaming op against the float64 formula, a training step and a generation on the GPU.

Skipped without a CUDA device (``experiments/gpu/check.sh`` runs them where there is one).
"""

import pytest
import torch

from smoothie_pl.diffusion import noisy_vocab_attention
from smoothie_pl.precision import vocab_compute_dtype

from .test_module import PAIRS, tiny_module

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


@pytest.mark.parametrize("compute_dtype, tolerance", [(torch.float32, 1e-4), (torch.bfloat16, 3e-2)])
def test_the_streaming_op_on_cuda_equals_the_float64_formula(compute_dtype, tolerance):
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(3000, 384, generator=generator) * (24 / 384) ** 0.5
    query = embeddings[torch.randint(0, 3000, (64,), generator=generator)] + 0.05 * torch.randn(64, 384, generator=generator)
    mu = torch.logspace(-3, 0, 64)
    std = torch.sqrt(1 - mu**2)
    # The noise comes from a CUDA generator: the float64 formula is fed the same draws, taken on the GPU.
    cuda_noise = torch.Generator(device=CUDA).manual_seed(3)
    streamed = noisy_vocab_attention(
        query.to(CUDA), embeddings.to(CUDA), mu.to(CUDA), std.to(CUDA), sigma0=1.5, generator=cuda_noise,
        chunk_size=1024, compute_dtype=compute_dtype,
    )
    replay = torch.Generator(device=CUDA).manual_seed(3)
    noise = torch.cat([torch.randn(64, min(1024, 3000 - s), generator=replay, device=CUDA).cpu()
                       for s in range(0, 3000, 1024)], dim=1)
    expected = literal_formula_with_noise(query, embeddings, mu, std, 1.5, noise)
    assert (streamed.cpu().double() - expected).norm() / expected.norm() < tolerance


def literal_formula_with_noise(query, embeddings, mu, std, sigma0, noise):
    distances = -torch.cdist(query.double(), embeddings.double()).pow(2) / (2 * sigma0**2)
    logits = mu.double()[:, None] * distances + std.double()[:, None] * noise.double()
    return torch.softmax(logits, dim=1) @ embeddings.double()


def test_auto_takes_bf16_vocabulary_matmuls_on_a_bf16_gpu():
    assert vocab_compute_dtype("auto", CUDA) == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32)


def test_a_training_step_and_a_generation_run_on_cuda(word_model):
    torch.manual_seed(0)
    module = tiny_module(word_model).to(CUDA)
    encoded = module.tokenizer([s for s, _ in PAIRS], padding="max_length", max_length=8, truncation=True,
                               return_tensors="pt")
    batch = {"target_ids": encoded["input_ids"], "source_ids": encoded["input_ids"],
             "source_mask": encoded["attention_mask"].bool()}
    batch = {key: value.to(CUDA) for key, value in batch.items()}
    optimizer = module.configure_optimizers()["optimizer"]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = module.diffusion_loss(batch, torch.Generator(device=CUDA).manual_seed(1))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and all(p.grad is None or torch.isfinite(p.grad).all() for p in module.parameters())
    texts = module.generate([s for s, _ in PAIRS[:2]], steps=3, seed=0)
    assert len(texts) == 2 and all(isinstance(text, str) for text in texts)
    assert texts == module.generate([s for s, _ in PAIRS[:2]], steps=3, seed=0)  # seeded on the GPU too

