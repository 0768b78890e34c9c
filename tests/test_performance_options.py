"""The module's performance options change speed, not results or checkpoints."""

import pytest
import torch

from .test_module import PAIRS, tiny_module


def seeded_module(word_model, **kwargs):
    torch.manual_seed(0)
    return tiny_module(word_model, **kwargs)


def batch_of(module):
    encoded = module.tokenizer([source for source, _ in PAIRS], padding="max_length", max_length=8, truncation=True,
                               return_tensors="pt")
    ids, mask = encoded["input_ids"], encoded["attention_mask"].bool()
    return {"target_ids": ids, "source_ids": ids, "source_mask": mask}


def test_the_literal_formulation_gives_the_library_loss_with_the_same_noise(word_model):
    streaming, literal = (seeded_module(word_model, vocab_attention=name) for name in ("streaming", "literal"))
    losses = [m.diffusion_loss(batch_of(m), torch.Generator().manual_seed(3)) for m in (streaming, literal)]
    other_seed = streaming.diffusion_loss(batch_of(streaming), torch.Generator().manual_seed(4))
    assert losses[0].item() == pytest.approx(losses[1].item(), rel=1e-5)
    assert other_seed.item() != pytest.approx(losses[0].item(), rel=1e-3)


def test_compiling_the_denoiser_keeps_the_checkpoint_keys(word_model):
    plain, compiled = (seeded_module(word_model, compile_denoiser=flag) for flag in (False, True))
    assert compiled.denoiser._compiled_call_impl is not None and plain.denoiser._compiled_call_impl is None
    assert plain.state_dict().keys() == compiled.state_dict().keys()


def test_an_unknown_vocabulary_operation_is_refused_by_name(word_model):
    with pytest.raises(ValueError, match="vocab_attention must be one of.*'flash'"):
        tiny_module(word_model, vocab_attention="flash")
