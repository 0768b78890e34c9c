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


def cxx_compiler() -> str | None:
    """A C++ compiler on PATH: what torch.compile's CPU backend (inductor) builds its kernels with."""
    import shutil

    return next((tool for tool in ("g++", "c++", "clang++") if shutil.which(tool)), None)


@pytest.mark.slow
@pytest.mark.skipif(cxx_compiler() is None, reason="torch.compile on CPU needs a C++ compiler (g++, c++ or clang++)")
def test_the_compiled_denoiser_gives_the_eager_loss_and_gradients(word_model):
    # Tolerance: fp32 kernels fused and reordered by inductor, rtol 1e-4 / atol 1e-5 on every value.
    # RoPE on, so the traced rotary tables are checked as well as the learned positions.
    from dataclasses import replace

    from .test_module import TINY

    denoiser = replace(TINY, rope=True)
    eager, compiled = (seeded_module(word_model, denoiser=denoiser, compile_denoiser=flag) for flag in (False, True))
    compiled.load_state_dict(eager.state_dict())
    results = []
    for module in (eager, compiled):
        loss = module.diffusion_loss(batch_of(module), torch.Generator().manual_seed(3))
        loss.backward()
        results.append((loss.detach(), {name: p.grad for name, p in module.denoiser.named_parameters()}))
    (eager_loss, eager_grads), (compiled_loss, compiled_grads) = results
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-4, atol=1e-5)
    assert eager_grads.keys() == compiled_grads.keys() and all(g is not None for g in eager_grads.values())
    for name, gradient in eager_grads.items():
        torch.testing.assert_close(compiled_grads[name], gradient, rtol=1e-4, atol=1e-5, msg=name)
    assert any(gradient.abs().sum() > 0 for gradient in eager_grads.values())
