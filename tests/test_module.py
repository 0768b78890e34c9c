import lightning as L
import pytest
import torch

from smoothie_pl.callbacks import SmoothieEMA
from smoothie_pl.callbacks.ema import warmup_decay
from smoothie_pl.config_checks import config_errors
from smoothie_pl.data import JsonlDataModule
from smoothie_pl.models import DenoiserConfig
from smoothie_pl.module import SmoothieModule
from smoothie_pl.options import OptimConfig
from smoothie_pl.pipeline import SmoothiePipeline

from .conftest import PAIRS

TINY = DenoiserConfig(width=64, depth=2, heads=2, encoder_depth=1, dropout=0.0)


def tiny_module(word_model, **kwargs) -> SmoothieModule:
    """A tiny module; a ``sampling`` dict is laid over its 10 sampling steps."""
    sampling = {"steps": 10, **kwargs.pop("sampling", {})}
    options = dict(embedding=word_model, denoiser=TINY, target_length=8, source_length=10, sampling=sampling)
    return SmoothieModule(**{**options, **kwargs})


def pairs_data(pairs_dir, word_model, **kwargs) -> JsonlDataModule:
    files = {f"{split}_file": str(pairs_dir / f"{split}.jsonl") for split in ("train", "validation", "test")}
    return JsonlDataModule(tokenizer=word_model, target_length=8, source_length=10, **files, **kwargs)


def test_ema_warmup_follows_the_paper():
    # (1 + n) / (10 + n), capped by the decay.
    assert warmup_decay(0.9999, 0) == pytest.approx(0.1)
    assert warmup_decay(0.9999, 90) == pytest.approx(91 / 100)
    assert warmup_decay(0.9, 10_000) == 0.9


def learning_rates(module: SmoothieModule, steps: int) -> list[float]:
    """The rate of each of the first ``steps`` optimiser steps under the module's scheduler."""
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(steps):
        rates.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return rates


def test_warmup_then_constant_learning_rate(word_model):
    rates = learning_rates(tiny_module(word_model, optim={"lr": 1e-3, "warmup_steps": 10, "warmup_start_lr": 1e-8}), 15)
    assert rates[0] == pytest.approx(1e-8)
    assert rates[5] == pytest.approx(1e-8 + (1e-3 - 1e-8) * 5 / 10)
    assert rates[10:] == pytest.approx([1e-3] * 5)


def test_warmup_then_linear_decay_learning_rate(word_model):
    # Up over 4 steps to 1e-3, down to 1e-4 at step 10 (0.9e-3 over 6 steps), then held.
    module = tiny_module(
        word_model, optim={"lr": 1e-3, "warmup_steps": 4, "warmup_start_lr": 0.0, "decay_steps": 10, "final_lr": 1e-4}
    )
    expected = [0.0, 2.5e-4, 5e-4, 7.5e-4, 1e-3, 8.5e-4, 7e-4, 5.5e-4, 4e-4, 2.5e-4, 1e-4, 1e-4, 1e-4]
    assert learning_rates(module, 13) == pytest.approx(expected)


def test_decay_must_end_after_the_warm_up(word_model):
    with pytest.raises(ValueError, match="optim.decay_steps 100 must be 0 .* above optim.warmup_steps 200"):
        tiny_module(word_model, optim=OptimConfig(warmup_steps=200, decay_steps=100))
    config = {"model": {"optim": {"warmup_steps": 200, "decay_steps": 100}}}
    assert [error.split(":")[0] for error in config_errors(config)] == ["model.optim.decay_steps = 100"]
    assert config_errors({"model": {"optim": {"warmup_steps": 200, "decay_steps": 400}}}) == []


def test_embedding_matrix_gets_no_gradient(word_model, pairs_dir):
    module = tiny_module(word_model)
    data = pairs_data(pairs_dir, word_model, batch_size=8)
    data.setup("fit")
    loss = module.diffusion_loss(next(iter(data.train_dataloader())), torch.Generator().manual_seed(0))
    loss.backward()
    assert not module.embedding_matrix.requires_grad
    assert all(p.grad is not None for p in module.denoiser.parameters())
    assert "embedding_matrix" not in {name for name, _ in module.named_parameters()}


def test_generate_is_reproducible_for_a_seed(word_model):
    module = tiny_module(word_model)
    sources = [source for source, _ in PAIRS[:3]]
    first = module.generate(sources, steps=4, seed=7)
    assert first == module.generate(sources, steps=4, seed=7)
    assert len(first) == 3 and all(isinstance(text, str) for text in first)
    # The untrained model's texts may all be empty, so compare the sampled embeddings too.
    encoded = module.tokenizer(sources, padding=True, return_tensors="pt")
    ids, mask = encoded["input_ids"], encoded["attention_mask"].bool()
    sample = lambda seed: module.pipeline.sample(ids, mask, torch.Generator().manual_seed(seed), steps=4)  # noqa: E731
    assert torch.equal(sample(7), sample(7))
    assert not torch.allclose(sample(7), sample(8))


@pytest.mark.slow
@pytest.mark.parametrize("space", ["smoothie", "gaussian", "simplex"])
def test_tiny_model_overfits_eight_pairs_and_regenerates_them(word_model, pairs_dir, tmp_path, space):
    L.seed_everything(0)
    data = pairs_data(pairs_dir, word_model, batch_size=8, restrict_vocabulary=True)
    module = tiny_module(
        word_model, vocabulary=data.vocabulary(), optim={"lr": 3e-3, "warmup_steps": 20}, sampling={"steps": 20}, space=space
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=600,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[SmoothieEMA(decay=0.99)],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=data)
    generated = module.generate([source for source, _ in PAIRS], seed=0)
    assert generated == [target for _, target in PAIRS]


def test_rotary_attention_scores_depend_only_on_the_offset():
    from smoothie_pl.models.layers import rotate

    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    queries, keys = rotate(q.expand(1, 1, 6, 8).contiguous()), rotate(k.expand(1, 1, 6, 8).contiguous())
    scores = (queries @ keys.transpose(-1, -2))[0, 0]
    # Same offset i - j, same score; position 0 is not rotated at all.
    assert torch.allclose(scores.diagonal(1), scores[0, 1].expand(5), atol=1e-5)
    assert torch.allclose(scores.diagonal(-2), scores[2, 0].expand(4), atol=1e-5)
    assert torch.allclose(queries[0, 0, 0], q[0, 0, 0])


def test_self_conditioning_feeds_the_first_prediction_back(word_model, pairs_dir, monkeypatch):
    module = tiny_module(word_model, denoiser=DenoiserConfig(**{**TINY.__dict__, "self_conditioning": True}))
    data = pairs_data(pairs_dir, word_model, batch_size=8)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    calls = []
    forward = module.denoiser.forward

    def recording_forward(*args, **kwargs):
        output = forward(*args, **kwargs)
        calls.append((args[4] if len(args) > 4 else kwargs.get("previous"), output))
        return output

    monkeypatch.setattr(module.denoiser, "forward", recording_forward)
    for seed in range(8):  # the second pass happens with probability 0.5 per batch
        calls.clear()
        module.diffusion_loss(batch, torch.Generator().manual_seed(seed))
        if len(calls) == 2:
            break
    assert len(calls) == 2
    assert calls[0][0] is None
    assert torch.equal(calls[1][0], calls[0][1].float())


def test_mbr_candidates_are_seeded_per_candidate_and_the_choice_is_one_of_them(word_model):
    module = tiny_module(word_model, sampling={"mbr_candidates": 3})
    encoded = module.tokenizer([source for source, _ in PAIRS[:4]], padding=True, return_tensors="pt")
    ids, mask = encoded["input_ids"], encoded["attention_mask"].bool()
    chosen, candidates = module.pipeline.generate_candidates(ids, mask, seed=5, offset=0, steps=3)
    single, _ = module.pipeline.generate_candidates(ids, mask, seed=5, offset=0, steps=3, candidates=1)
    assert [len(texts) for texts in candidates] == [3, 3, 3, 3]
    assert [texts[0] for texts in candidates] == single  # candidate 0 does not depend on k
    assert all(text in texts for text, texts in zip(chosen, candidates))


def test_impossible_module_values_are_refused(word_model):
    with pytest.raises(ValueError, match=r"sampling.mbr_candidates = 0: allowed >= 1"):
        tiny_module(word_model, sampling={"mbr_candidates": 0})
    with pytest.raises(ValueError, match="vocab_dtype"):
        tiny_module(word_model, vocab_dtype="int8")


def test_recase_option_applies_to_every_candidate(word_model, monkeypatch):
    module = tiny_module(word_model, sampling={"recase": True, "mbr_candidates": 2})
    monkeypatch.setattr(SmoothiePipeline, "decode", lambda self, embeddings: ["and moses went up"] * embeddings.shape[0])
    outputs = module.generate(["Then Moses spake", "thou art Moses"], steps=2)
    assert outputs == ["And Moses went up", "And Moses went up"]


@pytest.mark.parametrize("space, schedule_name", [("smoothie", "arctan"), ("gaussian", "sd"), ("simplex", "tess")])
def test_every_space_trains_and_samples_with_its_own_schedule(word_model, pairs_dir, space, schedule_name):
    from smoothie_pl.diffusion import SPACES

    module = tiny_module(word_model, space=space, sampling={"steps": 2})
    assert isinstance(module.space, SPACES[space]) and module.hparams.schedule["name"] == schedule_name
    data = pairs_data(pairs_dir, word_model, batch_size=8)
    data.setup("fit")
    loss = module.diffusion_loss(next(iter(data.train_dataloader())), torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    assert len(module.generate([PAIRS[0][0]], seed=0)) == 1


def test_schedule_by_name_or_the_spaces_own_with_parameters(word_model):
    from smoothie_pl.diffusion import ArctanSchedule, SdSchedule

    assert tiny_module(word_model, schedule={"name": "sd", "k": 3.0}).space.schedule == SdSchedule(k=3.0)
    adjusted = tiny_module(word_model, schedule={"sigma_max": 50.0})  # no name: the smoothie space's arctan
    assert adjusted.space.schedule == ArctanSchedule(sigma_max=50.0) and adjusted.hparams.schedule["name"] == "arctan"


def test_a_linear_token_head_over_a_restricted_vocabulary_loads_from_its_checkpoint(word_model, tmp_path):
    import lightning as L

    vocabulary = [0, 1, 2, 3, 6, 7, 8, 9, 10]
    module = tiny_module(word_model, space="simplex", token_head="linear", vocabulary=vocabulary)
    assert module.space.head.weight.shape[0] == len(vocabulary)
    trainer = L.Trainer(max_steps=0, logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(module)
    path = tmp_path / "simplex.ckpt"
    trainer.save_checkpoint(path)

    loaded = SmoothieModule.load_from_checkpoint(path)  # built over the whole vocabulary, then takes the stored one
    assert loaded.vocabulary.tolist() == vocabulary
    torch.testing.assert_close(loaded.space.head.weight, module.space.head.weight)
    torch.testing.assert_close(loaded.space.head.bias, module.space.head.bias)
    sources = [source for source, _ in PAIRS[:2]]
    assert loaded.generate(sources, steps=2, seed=0) == module.generate(sources, steps=2, seed=0)


def test_simplex_token_head_adds_cross_entropy_and_is_refused_elsewhere(word_model, pairs_dir):
    module = tiny_module(word_model, space="simplex", token_head="linear")
    assert any(name.startswith("space.head") for name, _ in module.named_parameters())
    data = pairs_data(pairs_dir, word_model, batch_size=8)
    data.setup("fit")
    module.diffusion_loss(next(iter(data.train_dataloader())), torch.Generator().manual_seed(0)).backward()
    assert module.space.head.weight.grad is not None
    with pytest.raises(ValueError, match="token_head"):
        tiny_module(word_model, space="gaussian", token_head="tied")
    with pytest.raises(ValueError, match="space must be one of"):
        tiny_module(word_model, space="discrete")


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "sde"])
def test_full_state_samplers_generate(word_model, sampler):
    module = tiny_module(word_model, sampling={"sampler": sampler, "steps": 3})
    assert len(module.generate([PAIRS[0][0], PAIRS[1][0]], seed=0)) == 2
