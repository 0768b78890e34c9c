"""Metric base for scores that need the whole corpus of texts at ``compute`` time.

Strings are not tensors, so texts are stored as one 1-D tensor of UTF-8 byte codes with
the non-byte value 256 after each text. The state uses the metric's own float dtype
because torchmetrics pads a rank that saw no data with an empty tensor of ``self.dtype``;
any other dtype would make the DDP all-gather mix dtypes. Codes 0..256 are exact in
float16, bfloat16, float32 and float64, so decoding is lossless. Under DDP the state is
concatenated in rank order, so every rank decodes the same full corpus.
"""

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

_END = 256


def encode_texts(texts: list[str], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    codes: list[int] = []
    for text in texts:
        codes.extend(text.encode("utf-8"))
        codes.append(_END)
    return torch.tensor(codes, dtype=dtype, device=device)


def decode_texts(state: torch.Tensor | list[torch.Tensor]) -> list[str]:
    if isinstance(state, list) and not state:
        return []
    codes = dim_zero_cat(state).round().long().cpu()
    if codes.numel() == 0:
        return []
    raw = bytes(codes.clamp(max=255).to(torch.uint8).numpy())
    ends = (codes == _END).nonzero().flatten().tolist()
    starts = [0] + [end + 1 for end in ends[:-1]]
    return [raw[start:end].decode("utf-8") for start, end in zip(starts, ends)]


class CorpusTextMetric(Metric):
    """Keeps every text passed to :meth:`_store` and gives them back, in order, via :meth:`_texts`."""

    is_differentiable = False
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("text_codes", default=[], dist_reduce_fx="cat")

    def _store(self, texts: list[str]) -> None:
        self.text_codes.append(encode_texts(list(texts), self.dtype, self.device))

    def _texts(self) -> list[str]:
        return decode_texts(self.text_codes)
