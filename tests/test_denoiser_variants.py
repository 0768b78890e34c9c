"""Block styles and conditioning modes: every combination reads the source, and only its real positions."""

import itertools
import math

import pytest
import torch

from smoothie_pl.models import DenoiserConfig
from smoothie_pl.models.denoiser import AlignedSource, SourcePointer
from smoothie_pl.models.layers import Attention, Block, PreNormBlock, SwiGLU, rotate
from smoothie_pl.module import SmoothieModule
from smoothie_pl.text import leading_special_tokens

COMBINATIONS = list(itertools.product(("postln", "prenorm"), ("cross_attention", "concat"), ("scratch", "pretrained")))


def variant_module(word_model, **denoiser) -> SmoothieModule:
    config = DenoiserConfig(width=32, depth=2, heads=2, encoder_depth=1, dropout=0.0, **denoiser)
    torch.manual_seed(0)
    return SmoothieModule(embedding=word_model, denoiser=config, target_length=6, source_length=12).eval()


def predict(module: SmoothieModule, source_ids: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor:
    shape = (source_ids.shape[0], 6, module.embedding_matrix.shape[1])
    x_t = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    t = torch.full((source_ids.shape[0],), 0.3)
    with torch.no_grad():
        return module.denoiser(x_t, t, module.pipeline.encode_source(source_ids, source_mask), source_mask)


def encode(module: SmoothieModule, texts: list[str], pad_to: int) -> tuple[torch.Tensor, torch.Tensor]:
    encoded = module.tokenizer(texts, padding="max_length", max_length=pad_to, return_tensors="pt")
    return encoded["input_ids"], encoded["attention_mask"].bool()


@pytest.mark.parametrize("block, conditioning, source_encoder", COMBINATIONS)
def test_every_combination_conditions_on_the_real_source_positions(word_model, block, conditioning, source_encoder):
    module = variant_module(word_model, block=block, conditioning=conditioning, source_encoder=source_encoder)
    ids, mask = encode(module, ["the cat sat on the mat", "love thy neighbour"], pad_to=10)
    reference = predict(module, ids, mask)

    other_ids, _ = encode(module, ["the lord is my shepherd", "love thy neighbour"], pad_to=10)
    changed = predict(module, other_ids, mask)
    assert not torch.allclose(changed[0], reference[0], atol=1e-4), "a different source must change the output"
    torch.testing.assert_close(changed[1], reference[1])  # rows do not leak into each other

    padded_ids = ids.masked_fill(~mask, module.tokenizer.convert_tokens_to_ids("god"))
    torch.testing.assert_close(predict(module, padded_ids, mask), reference)  # padded positions are masked

    wider_ids, wider_mask = encode(module, ["the cat sat on the mat", "love thy neighbour"], pad_to=12)
    torch.testing.assert_close(predict(module, wider_ids, wider_mask), reference)  # nor does the padding width matter


@pytest.mark.parametrize("block", ["postln", "prenorm"])
def test_unconditional_denoiser_needs_no_source(word_model, block):
    module = variant_module(word_model, block=block, source_encoder="none", conditioning="concat")
    assert module.source_encoder is None and module.denoiser.segments is None
    x_t = torch.randn(2, 6, module.embedding_matrix.shape[1])
    assert module.denoiser(x_t, torch.full((2,), 0.5)).shape == x_t.shape


def test_conditional_denoiser_refuses_a_missing_source(word_model):
    module = variant_module(word_model, conditioning="concat")
    with pytest.raises(ValueError, match="no source encoding"):
        module.denoiser(torch.randn(1, 6, module.embedding_matrix.shape[1]), torch.full((1,), 0.5))


def test_prenorm_block_is_the_identity_when_its_branches_output_zero():
    # Pre-norm: x + f(norm(x)); with every branch's last projection zeroed the block passes x through.
    # The post-LN block normalises the stream itself, so it does not.
    torch.manual_seed(0)
    x, context = torch.randn(2, 5, 8) * 3 + 1, torch.randn(2, 4, 8)
    pre = PreNormBlock(8, 2, 4.0, 0.0, cross_attention=True)
    post = Block(8, 2, 4.0, 0.0, cross_attention=True)
    for block in (pre, post):
        with torch.no_grad():
            for linear in (block.self_attention.out, block.cross_attention.out, *[m for m in block.mlp.modules()][-1:]):
                linear.weight.zero_()
                if linear.bias is not None:
                    linear.bias.zero_()
    torch.testing.assert_close(pre(x, None, context), x)
    assert not torch.allclose(post(x, None, context), x)
    assert isinstance(pre.self_norm, torch.nn.RMSNorm) and pre.self_attention.rope and pre.cross_attention.rope


def test_swiglu_matches_its_formula_and_the_plain_mlp_size():
    mlp = SwiGLU(6, 4.0)  # hidden 2 * 6 * 4 / 3 = 16
    x = torch.randn(3, 6)
    gate, up = mlp.gate_up.weight[:16], mlp.gate_up.weight[16:]
    a, b = x @ gate.T, x @ up.T
    expected = (a / (1 + torch.exp(-a)) * b) @ mlp.down.weight.T
    torch.testing.assert_close(mlp(x), expected)
    plain = 2 * 6 * 24  # weights of Linear(6, 24) and Linear(24, 6)
    assert math.isclose(sum(p.numel() for p in mlp.parameters()), plain, rel_tol=0.05)


def test_unknown_block_and_conditioning_are_refused():
    with pytest.raises(ValueError, match="denoiser.block"):
        DenoiserConfig(block="preln")
    with pytest.raises(ValueError, match="denoiser.conditioning"):
        DenoiserConfig(conditioning="prefix")


@pytest.mark.parametrize("block", ["postln", "prenorm"])
def test_generating_under_inference_mode_does_not_break_later_training_with_rope(word_model, block):
    # trainer.predict/test and notebooks generate under inference mode; the rotary tables they
    # build must not be what a later training step saves for backward.
    module = variant_module(word_model, block=block, rope=True)
    with torch.inference_mode():
        module.generate(["the cat sat on the mat"], steps=2, seed=0)
    module.train()
    x_t, t = torch.randn(2, 6, module.embedding_matrix.shape[1]), torch.full((2,), 0.5)
    ids, mask = encode(module, ["the cat sat on the mat", "love thy neighbour"], pad_to=10)
    output = module.denoiser(x_t, t, module.pipeline.encode_source(ids, mask), mask)
    output.square().mean().backward()
    assert all(p.grad is not None for p in module.denoiser.blocks.parameters())


def test_aligned_source_adds_the_encoded_source_at_the_same_position():
    aligned = AlignedSource(width=3)
    with torch.no_grad():
        aligned.projection.weight.copy_(torch.eye(3))
    source = torch.arange(12.0).reshape(1, 4, 3)
    mask = torch.tensor([[True, True, False, False]])
    # Target of 6 positions: source rows 0 and 1, then zeros (padding and past the source's end).
    expected = torch.tensor([[[0.0, 1, 2], [3, 4, 5], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]]])
    torch.testing.assert_close(aligned(source, mask, length=6), expected)
    torch.testing.assert_close(aligned(source, None, length=2), source[:, :2])  # a longer source is cut
    skipping = AlignedSource(width=3, offset=1)  # past a leading [CLS]
    with torch.no_grad():
        skipping.projection.weight.copy_(torch.eye(3))
    torch.testing.assert_close(skipping(source, None, length=2), source[:, 1:3])
    torch.testing.assert_close(skipping(source, mask, length=4), torch.stack([source[0, 1], *torch.zeros(3, 3)])[None])


def test_aligned_source_skips_berts_cls(word_model):
    module = variant_module(word_model, aligned_source=True)
    assert leading_special_tokens(module.source_tokenizer) == 1  # [CLS] text [SEP]
    assert module.denoiser.aligned_source.offset == 1


def test_aligned_source_starts_as_the_plain_denoiser_and_learns_from_the_source(word_model):
    plain, aligned = variant_module(word_model), variant_module(word_model, aligned_source=True)
    ids, mask = encode(aligned, ["the cat sat on the mat"], pad_to=10)
    torch.testing.assert_close(predict(aligned, ids, mask), predict(plain, ids, mask))
    aligned.train()
    source = aligned.pipeline.encode_source(ids, mask)
    x_t = torch.randn(1, 6, aligned.embedding_matrix.shape[1])
    aligned.denoiser(x_t, torch.full((1,), 0.3), source, mask).square().sum().backward()
    assert aligned.denoiser.aligned_source.projection.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="aligned_source needs a source"):
        DenoiserConfig(aligned_source=True, source_encoder="none")


def test_source_copy_puts_each_source_token_at_its_target_position(word_model):
    module = variant_module(word_model, source_skip=True)
    tokenizer = module.tokenizer
    ids, _ = encode(module, ["the cat sat"], pad_to=5)  # [CLS] the cat sat [SEP]
    words = tokenizer.convert_tokens_to_ids(["the", "cat", "sat", "[SEP]"])
    pad = tokenizer.pad_token_id
    # Target of 6 positions: the words after [CLS] and the [SEP] that ends decoding, then the pad embedding.
    expected = module.embedding_matrix[torch.tensor([[*words, pad, pad]])]
    torch.testing.assert_close(module.pipeline.source_copy(ids), expected)
    long_ids, _ = encode(module, ["the cat sat on the mat by the door"], pad_to=12)
    assert module.pipeline.source_copy(long_ids).shape == (1, 6, module.embedding_matrix.shape[1])  # cut to L
    assert variant_module(word_model).pipeline.source_copy(ids) is None


def test_source_skip_adds_the_copy_to_the_plain_prediction(word_model):
    plain, skipping = variant_module(word_model), variant_module(word_model, source_skip=True)
    ids, mask = encode(skipping, ["the cat sat on the mat", "love thy neighbour"], pad_to=10)
    source = skipping.pipeline.encode_source(ids, mask)
    x_t = torch.randn(2, 6, skipping.embedding_matrix.shape[1])
    t = torch.full((2,), 0.3)
    with torch.no_grad():
        copied = skipping.denoiser(x_t, t, source, mask, source_copy=skipping.pipeline.source_copy(ids))
        without = plain.denoiser(x_t, t, source, mask)
    # The skip has no weights: the same seed gives the same denoiser, and the difference is the copy itself.
    torch.testing.assert_close(copied - without, skipping.pipeline.source_copy(ids))
    with pytest.raises(ValueError, match="source_skip needs a source"):
        DenoiserConfig(source_skip=True, source_encoder="none")
    with pytest.raises(ValueError, match="source_skip copies source tokens into the target's embedding"):
        SmoothieModule(embedding=word_model, source_embedding=word_model, denoiser=DenoiserConfig(source_skip=True))


def test_source_pointer_matches_the_pointer_generator_formula_written_out():
    torch.manual_seed(0)
    pointer = SourcePointer(width=4).double()
    states, prediction = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 3, 5, dtype=torch.float64)
    source, tokens = torch.randn(2, 4, 4, dtype=torch.float64), torch.randn(2, 4, 5, dtype=torch.float64)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    with torch.no_grad():
        output = pointer(states, prediction, source, mask, tokens)
        query, key, gate = pointer.query(states), pointer.key(source), pointer.gate(states)[..., 0]
    for b in range(2):
        real = [j for j in range(4) if mask[b, j]]
        for i in range(3):
            weights = [math.exp(float(query[b, i] @ key[b, j]) / 2.0) for j in real]  # sqrt(width) = 2
            copied = sum(w * tokens[b, j] for w, j in zip(weights, real)) / sum(weights)
            g = 1.0 / (1.0 + math.exp(-float(gate[b, i])))
            torch.testing.assert_close(output[b, i], (1 - g) * prediction[b, i] + g * copied)


def test_source_pointer_copies_the_token_it_points_at_and_never_padding():
    pointer = SourcePointer(width=3)
    with torch.no_grad():
        pointer.query.weight.copy_(100 * torch.eye(3))
        pointer.key.weight.copy_(torch.eye(3))
        pointer.gate.weight.zero_()
        for bias in (pointer.query.bias, pointer.key.bias):
            bias.zero_()
        pointer.gate.bias.fill_(40.0)  # the gate fully open
    source = torch.eye(3)[None]  # source position j encodes as the j-th unit vector
    tokens = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])
    states = torch.eye(3)[[2, 0]][None]  # target position 0 points at source 2, position 1 at source 0
    copied = pointer(states, torch.zeros(1, 2, 2), source, None, tokens)
    torch.testing.assert_close(copied, tokens[:, [2, 0]])
    hidden = torch.tensor([[True, True, False]])  # source 2 is padding: position 0 cannot point at it
    assert not torch.allclose(pointer(states, torch.zeros(1, 2, 2), source, hidden, tokens)[0, 0], tokens[0, 2])


def test_source_pointer_module_copies_from_the_source_tokens_and_learns(word_model):
    module = variant_module(word_model, source_pointer=True)
    ids, mask = encode(module, ["the cat sat on the mat", "love thy neighbour"], pad_to=10)
    tokens = module.pipeline.source_copy(ids)
    torch.testing.assert_close(tokens, module.embedding_matrix[ids])  # every source position, specials included
    source = module.pipeline.encode_source(ids, mask)
    x_t, t = torch.randn(2, 6, module.embedding_matrix.shape[1]), torch.full((2,), 0.3)
    with torch.no_grad():
        reference = module.denoiser(x_t, t, source, mask, source_copy=tokens)
        padded_ids = ids.masked_fill(~mask, module.tokenizer.convert_tokens_to_ids("god"))
        padded = module.pipeline.source_copy(padded_ids)
        torch.testing.assert_close(module.denoiser(x_t, t, source, mask, source_copy=padded), reference)
    module.train()
    module.denoiser(x_t, t, source, mask, source_copy=tokens).square().sum().backward()
    pointer = module.denoiser.source_pointer
    assert float(torch.sigmoid(pointer.gate.bias)) < 0.02  # starts as (almost) the plain denoiser
    assert all(p.grad.abs().sum() > 0 for p in (pointer.query.weight, pointer.key.weight, pointer.gate.weight))
    with pytest.raises(ValueError, match="no source_copy was given"):
        module.denoiser(x_t, t, source, mask)
    with pytest.raises(ValueError, match="choose one"):
        DenoiserConfig(source_skip=True, source_pointer=True)
    with pytest.raises(ValueError, match="source_pointer copies source tokens into the target's embedding"):
        SmoothieModule(embedding=word_model, source_embedding=word_model, denoiser=DenoiserConfig(source_pointer=True))


@pytest.mark.parametrize("rope", [False, True])
def test_attention_matches_its_formula_with_and_without_grad(rope):
    """CPU attention takes the plain path when a backward may follow and flash when none can: both are the formula."""
    torch.manual_seed(0)
    attention = Attention(width=16, heads=2, dropout=0.0, rope=rope)
    x, context = torch.randn(3, 5, 16), torch.randn(3, 7, 16)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3, [True] + [False] * 6])
    q = attention.query(x).view(3, 5, 2, 8).transpose(1, 2)
    k, v = attention.key_value(context).view(3, 7, 2, 2, 8).unbind(2)
    k, v = k.transpose(1, 2), v.transpose(1, 2)
    if rope:
        q, k = rotate(q), rotate(k)
    scores = (q @ k.transpose(-1, -2) / 8**0.5).masked_fill(~mask[:, None, None, :], float("-inf"))
    expected = attention.out((scores.softmax(-1) @ v).transpose(1, 2).reshape(3, 5, 16))
    with_grad = attention(x, context, mask)
    with torch.no_grad():
        without_grad = attention(x, context, mask)
    torch.testing.assert_close(with_grad, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(without_grad, expected, rtol=1e-5, atol=1e-6)
