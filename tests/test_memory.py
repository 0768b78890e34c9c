"""The training step never materialises a [batch, length, V] tensor.

Peak memory is read honestly: a fresh subprocess reports how much its peak
resident set grew during one training step (forward and backward), at a
vocabulary where ``batch * length * V * 4`` bytes is 512 MB. The same script
measures the literal formula too (in its own process), so the test also shows
the measurement would catch a materialised tensor.
"""

import subprocess
import sys

import pytest

from .conftest import make_word_model

BATCH, LENGTH, VOCAB = 8, 64, 250_000

SCRIPT = """
import sys, torch
from smoothie_pl.models import DenoiserConfig
from smoothie_pl.module import SmoothieModule

def status_bytes(field):
    line = next(line for line in open("/proc/self/status") if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024

def peak_bytes():
    return status_bytes("VmHWM")

torch.set_num_threads(1)
module = SmoothieModule(
    embedding=sys.argv[1], target_length={length}, source_length=8, vocab_chunk_size=2048,
    denoiser=DenoiserConfig(width=32, depth=2, heads=2, encoder_depth=1, dropout=0.0),
)
generator = torch.Generator().manual_seed(0)
ids = torch.randint(0, {vocab}, ({batch}, {length}), generator=generator)
batch = {{"target_ids": ids, "source_ids": ids[:, :8], "source_mask": torch.ones({batch}, 8, dtype=torch.bool)}}
open("/proc/self/clear_refs", "w").write("5")  # the peak restarts from here: building the model is not counted
before = status_bytes("VmRSS")
if sys.argv[2] == "streaming":
    module.diffusion_loss(batch, generator).backward()
else:
    clean = module.embedding_matrix[ids].reshape(-1, module.embedding_matrix.shape[1])
    distances = -torch.cdist(clean, module.embedding_matrix).pow(2) / (2 * 1.5**2)
    literal = torch.softmax(0.1 * distances + torch.randn_like(distances), dim=-1) @ module.embedding_matrix
print(peak_bytes() - before)
"""


@pytest.mark.slow
def test_training_step_peak_memory_is_far_below_the_vocabulary_tensor(tmp_path):
    words = [f"w{i}" for i in range(VOCAB - 6)]
    model = make_word_model(tmp_path / "big_vocab", words, dim=16)
    script = SCRIPT.format(batch=BATCH, length=LENGTH, vocab=VOCAB)
    growth = {}
    for mode in ("streaming", "literal"):  # a fresh process each: a peak is only ever a high-water mark
        result = subprocess.run([sys.executable, "-c", script, str(model), mode], capture_output=True, text=True, check=True)
        growth[mode] = int(result.stdout.strip().splitlines()[-1])
    one_vocab_tensor = BATCH * LENGTH * VOCAB * 4  # 512 MB in fp32
    assert growth["literal"] > one_vocab_tensor  # the measurement sees a materialised tensor
    assert growth["streaming"] < one_vocab_tensor / 10
