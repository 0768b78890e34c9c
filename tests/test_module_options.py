"""Each model option changes what it claims: self-conditioning, guidance, clamping, embedding training, masked loss."""

import math

import pytest
import torch

from smoothie_pl.diffusion.embedding_losses import decoding_cross_entropy, prediction_decoding_loss, prior_matching_loss
from smoothie_pl.errors import CheckpointMismatchError
from smoothie_pl.models import DenoiserConfig
from smoothie_pl.module import SmoothieModule

from .conftest import PAIRS
from .test_module import TINY, pairs_data, tiny_module


def train_batch(word_model, pairs_dir) -> dict:
    data = pairs_data(pairs_dir, word_model, batch_size=8)
    data.setup("fit")
    return next(iter(data.train_dataloader()))


def tokenised_sources(module: SmoothieModule, count: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    encoded = module.tokenizer([source for source, _ in PAIRS[:count]], padding=True, return_tensors="pt")
    return encoded["input_ids"], encoded["attention_mask"].bool()


def record_denoiser_calls(module: SmoothieModule, monkeypatch) -> list[dict]:
    """Replace the denoiser's forward by a spy that records every call's inputs and output."""
    calls, forward = [], module.denoiser.forward

    def spy(x_t, t, source=None, source_mask=None, previous=None, source_copy=None, target_mask=None):
        output = forward(x_t, t, source, source_mask, previous, source_copy, target_mask)
        calls.append(dict(
            x_t=x_t, source=source, source_mask=source_mask, previous=previous, source_copy=source_copy,
            target_mask=target_mask, output=output,
        ))  # fmt: skip
        return output

    monkeypatch.setattr(module.denoiser, "forward", spy)
    return calls


# ------------------------------------------------------------ self-conditioning
def test_self_conditioning_runs_the_first_pass_on_about_half_the_batches(word_model, pairs_dir, monkeypatch):
    module = tiny_module(word_model, denoiser=DenoiserConfig(**{**TINY.__dict__, "self_conditioning": True}))
    batch = train_batch(word_model, pairs_dir)
    calls = record_denoiser_calls(module, monkeypatch)
    passes = []
    for seed in range(60):
        calls.clear()
        module.diffusion_loss(batch, torch.Generator().manual_seed(seed))
        passes.append(len(calls))
    assert set(passes) == {1, 2}
    assert 15 <= passes.count(2) <= 45  # Binomial(60, 0.5): mean 30, sd 3.9


def test_sampling_feeds_each_step_the_previous_prediction(word_model, monkeypatch):
    module = tiny_module(word_model, denoiser=DenoiserConfig(**{**TINY.__dict__, "self_conditioning": True}))
    ids, mask = tokenised_sources(module)
    calls = record_denoiser_calls(module, monkeypatch)
    module.pipeline.sample(ids, mask, torch.Generator().manual_seed(0), steps=4)
    assert len(calls) == 4
    assert calls[0]["previous"] is None
    for earlier, later in zip(calls, calls[1:]):
        assert torch.equal(later["previous"], earlier["output"].float())


# --------------------------------------------------------- classifier-free guidance
def test_source_dropout_replaces_about_p_of_the_sources_by_the_null_source(word_model, pairs_dir, monkeypatch):
    module = tiny_module(word_model, cfg_dropout=0.5).train()
    with torch.no_grad():
        module.null_source.vector.fill_(7.0)
    batch = train_batch(word_model, pairs_dir)
    calls = record_denoiser_calls(module, monkeypatch)
    dropped = 0
    for seed in range(10):
        module.diffusion_loss(batch, torch.Generator().manual_seed(seed))
    for call in calls:
        null_rows = (call["source"] == 7.0).all(-1).all(-1)
        dropped += int(null_rows.sum())
        # A dropped row keeps one real key, the null vector; the others keep their own source and mask.
        assert call["source_mask"][null_rows].sum(-1).eq(1).all()
        assert torch.equal(call["source_mask"][~null_rows], batch["source_mask"][~null_rows])
    assert 20 <= dropped <= 60  # Binomial(80, 0.5): mean 40, sd 4.5

    calls.clear()
    module.eval().diffusion_loss(batch, torch.Generator().manual_seed(0))  # validation loss is conditional
    assert not (calls[0]["source"] == 7.0).all(-1).all(-1).any()


def test_guidance_weight_zero_is_exactly_no_guidance(word_model):
    guided = tiny_module(word_model, cfg_dropout=0.1, sampling={"guidance_weight": 0.0})
    plain = tiny_module(word_model)
    missing, unexpected = plain.load_state_dict(guided.state_dict(), strict=False)
    assert not missing and unexpected == ["null_source.vector"]
    ids, mask = tokenised_sources(guided)
    sample = lambda module: module.pipeline.sample(ids, mask, torch.Generator().manual_seed(3), steps=3)  # noqa: E731
    assert torch.equal(sample(guided), sample(plain))


def test_guided_prediction_follows_the_formula(word_model):
    module = tiny_module(word_model, cfg_dropout=0.1, sampling={"guidance_weight": 2.5}).eval()
    with torch.no_grad():
        module.null_source.vector.normal_()
    ids, mask = tokenised_sources(module)
    # One step: the output is the prediction at t = 1 from the prior input.
    output = module.pipeline.sample(ids, mask, torch.Generator().manual_seed(4), steps=1)

    x_1 = module.space.prior_input(3, 8, torch.Generator().manual_seed(4))
    t = torch.ones(3)
    source = module.pipeline.encode_source(ids, mask)
    null = module.null_source.vector.expand_as(source)
    null_mask = torch.zeros_like(mask)
    null_mask[:, 0] = True
    with torch.no_grad():
        conditional = module.denoiser(x_1, t, source, mask)
        unconditional = module.denoiser(x_1, t, null, null_mask)
    torch.testing.assert_close(output, conditional + 2.5 * (conditional - unconditional))
    assert not torch.allclose(conditional, unconditional)


def test_guidance_without_source_dropout_is_refused(word_model):
    with pytest.raises(ValueError, match="cfg_dropout > 0"):
        tiny_module(word_model, sampling={"guidance_weight": 1.0})
    with pytest.raises(ValueError, match="cfg_dropout must be in"):
        tiny_module(word_model, cfg_dropout=1.0)


# ---------------------------------------------------------------------- clamping
def test_clamping_re_noises_and_outputs_exact_vocabulary_rows(word_model, monkeypatch):
    module = tiny_module(word_model, sampling={"clamp": True})
    ids, mask = tokenised_sources(module)
    renoised, noised_input = [], module.space.noised_input

    def recording_noised_input(clean, *args):
        renoised.append(clean)
        return noised_input(clean, *args)

    monkeypatch.setattr(module.space, "noised_input", recording_noised_input)
    output = module.pipeline.sample(ids, mask, torch.Generator().manual_seed(0), steps=3)
    vocabulary_rows = module.space.embeddings
    for embeddings in [*renoised, output]:
        flat = embeddings.reshape(-1, embeddings.shape[-1])
        # Every row equals some vocabulary row exactly.
        assert (flat[:, None, :] == vocabulary_rows[None]).all(-1).any(-1).all()
    assert len(renoised) == 2

    unclamped = tiny_module(word_model).pipeline.sample(ids, mask, torch.Generator().manual_seed(0), steps=3)
    assert not (unclamped.reshape(-1, 1, unclamped.shape[-1]) == vocabulary_rows[None]).all(-1).any(-1).all()


# ------------------------------------------------------------------- masked loss
def test_masked_loss_averages_over_real_tokens_only(word_model, pairs_dir, monkeypatch):
    batch = train_batch(word_model, pairs_dir)
    for masked in (False, True):
        module = tiny_module(word_model, masked_loss=masked)
        monkeypatch.setattr(module.denoiser, "forward", lambda x_t, *args: torch.zeros_like(x_t))
        loss = module.diffusion_loss(batch, torch.Generator().manual_seed(0))
        # Predicting zeros, the squared error of a position is the mean square of its clean embedding.
        squares = module.embedding_matrix[batch["target_ids"]].pow(2).mean(-1)
        real = batch["target_ids"] != module.tokenizer.pad_token_id
        expected = squares[real].mean() if masked else squares.mean()
        torch.testing.assert_close(loss, expected)
    assert real.any() and not real.all()


def test_train_time_power_draws_t_as_a_power_of_a_uniform(word_model, pairs_dir, monkeypatch):
    """t = u^p: P(t < 0.1) is 0.1 for p = 1 and 0.1^(1/3) = 0.464 for p = 3."""
    batch = train_batch(word_model, pairs_dir)
    for power, expected in ((1.0, 0.1), (3.0, 0.1 ** (1 / 3))):
        module = tiny_module(word_model, train_time_power=power)
        times = []
        noised_input = module.space.noised_input
        monkeypatch.setattr(module.space, "noised_input", lambda clean, t, *a: times.append(t) or noised_input(clean, t, *a))
        for seed in range(400):
            module.diffusion_loss(batch, torch.Generator().manual_seed(seed))
        below = (torch.cat(times) < 0.1).float().mean().item()
        n = len(torch.cat(times))
        assert abs(below - expected) < 5 * math.sqrt(expected * (1 - expected) / n), (power, below, n)


def test_decoding_loss_is_the_cross_entropy_of_the_predictions_distances(word_model, pairs_dir, monkeypatch):
    """x0 MSE + w * mean_i -log softmax_j(-|e0_hat_i - E_j|^2 / (2 sigma0^2))[true_i], over a restricted vocabulary."""
    batch = train_batch(word_model, pairs_dir)
    vocabulary = sorted(set(batch["target_ids"].flatten().tolist()) | {0, 1, 2, 3})
    module = tiny_module(word_model, decoding_loss_weight=0.3, vocabulary=vocabulary)
    prediction = torch.randn(*batch["target_ids"].shape, module.embedding_matrix.shape[1], generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(module.denoiser, "forward", lambda x_t, *args: prediction)
    loss = module.diffusion_loss(batch, torch.Generator().manual_seed(0))

    clean = module.embedding_matrix[batch["target_ids"]]
    mse = (prediction - clean).pow(2).mean()
    rows = module.embedding_matrix[torch.tensor(vocabulary)]
    distances = torch.cdist(prediction.reshape(-1, prediction.shape[-1]).double(), rows.double()).pow(2)
    log_probs = torch.log_softmax(-distances / (2 * 1.5**2), dim=-1)
    true_rows = torch.tensor([vocabulary.index(i) for i in batch["target_ids"].flatten().tolist()])
    cross_entropy = -log_probs[torch.arange(len(true_rows)), true_rows].mean()
    torch.testing.assert_close(loss.double(), mse.double() + 0.3 * cross_entropy, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------- embedding training
def test_prior_matching_loss_matches_the_distances_written_out():
    torch.manual_seed(0)
    clean, vocab = torch.randn(5, 4), torch.randn(9, 4)
    mu, sigma0, prior_std = 0.3, 1.5, 2.0
    d0 = -((clean[:, None, :] - vocab[None]) ** 2).sum(-1) / (2 * sigma0**2)
    expected = (mu * d0).pow(2).mean(-1) / (2 * prior_std**2)
    torch.testing.assert_close(prior_matching_loss(clean, vocab, mu, sigma0, prior_std), expected)


def test_decoding_cross_entropy_matches_the_full_softmax_and_its_gradient():
    torch.manual_seed(0)
    clean, vocab = torch.randn(6, 4), torch.randn(10, 4, requires_grad=True)
    rows = torch.tensor([0, 3, 9, 5, 5, 1])
    mu, std, sigma0 = 0.7, 0.4, 1.5

    def full_softmax(vocab):
        # One chunk, noise drawn from seed + 0: -|e - E_j|^2 / (2 sigma0^2), noised, then cross-entropy.
        d0 = -((clean[:, None, :] - vocab[None]) ** 2).sum(-1) / (2 * sigma0**2)
        noise = torch.randn(6, 10, generator=torch.Generator().manual_seed(11))
        return torch.nn.functional.cross_entropy(mu * d0 + std * noise, rows, reduction="none")

    expected = full_softmax(vocab)
    (expected_grad,) = torch.autograd.grad(expected.sum(), vocab)
    streamed = decoding_cross_entropy(clean, rows, vocab, mu, std, sigma0, seed=11, chunk_size=10)
    (streamed_grad,) = torch.autograd.grad(streamed.sum(), vocab)
    torch.testing.assert_close(streamed, expected)
    torch.testing.assert_close(streamed_grad, expected_grad)

    # Noise-free, the chunking does not matter at all.
    def noiseless(chunk_size):
        return decoding_cross_entropy(clean, rows, vocab, mu, 0.0, sigma0, seed=0, chunk_size=chunk_size)

    torch.testing.assert_close(noiseless(3), noiseless(10))


@pytest.mark.parametrize("chunk_size", [3, 7, 50])
def test_prediction_decoding_loss_gradient_matches_autograd_of_the_full_softmax(chunk_size):
    """The gradient taken in the forward pass, ``(E_p[E_j] - E_true) / sigma0^2``, against float64 autograd."""

    class Space:
        sigma0 = 1.5
        embeddings = torch.randn(20, 6, generator=torch.Generator().manual_seed(0)) * 2
        half_sq_norms = embeddings.pow(2).sum(-1) / 2

    vocabulary = torch.arange(100, 120)
    target_ids = torch.tensor([[100, 119, 107], [113, 113, 101]])
    predicted = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(1), requires_grad=True)
    weights = torch.tensor([[1.0, 2.0, -1.0], [0.5, 3.0, 1.0]])
    counted = torch.tensor([[True, True, False], [True, False, True]])  # a non-uniform upstream gradient
    loss = prediction_decoding_loss(Space, vocabulary, predicted * weights[..., None], target_ids, counted, chunk_size)
    (gradient,) = torch.autograd.grad(loss, predicted)

    exact = predicted.detach().double().requires_grad_()
    distances = ((exact * weights[..., None].double())[:, :, None, :] - Space.embeddings.double()).pow(2).sum(-1)
    log_probs = torch.log_softmax(-distances / (2 * Space.sigma0**2), dim=-1)
    expected_loss = -log_probs.gather(-1, (target_ids - 100)[..., None]).squeeze(-1)[counted].mean()
    (expected_gradient,) = torch.autograd.grad(expected_loss, exact)
    torch.testing.assert_close(loss.double(), expected_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gradient.double(), expected_gradient, rtol=1e-4, atol=1e-6)


def test_trained_embeddings_are_optimised_with_the_two_extra_losses(word_model, pairs_dir, monkeypatch):
    batch = train_batch(word_model, pairs_dir)
    module = tiny_module(word_model, train_embeddings=True)
    optimiser = module.configure_optimizers()["optimizer"]
    assert any(p is module.embedding_matrix for group in optimiser.param_groups for p in group["params"])

    calls = []

    def counted(function):
        return lambda *args, **kwargs: calls.append(function.__name__) or function(*args, **kwargs)

    monkeypatch.setattr("smoothie_pl.diffusion.embedding_losses.prior_matching_loss", counted(prior_matching_loss))
    monkeypatch.setattr("smoothie_pl.diffusion.embedding_losses.decoding_cross_entropy", counted(decoding_cross_entropy))
    loss = module.diffusion_loss(batch, torch.Generator().manual_seed(0))
    loss.backward()
    assert calls == ["prior_matching_loss", "decoding_cross_entropy"]
    assert module.embedding_matrix.grad is not None and module.embedding_matrix.grad.abs().sum() > 0

    # A step moves E, and the space (what sampling diffuses over) follows it.
    before = module.space.embeddings.clone()
    optimiser.step()
    module.pipeline.sample(*tokenised_sources(module), torch.Generator().manual_seed(0), steps=1)
    torch.testing.assert_close(module.space.embeddings, module.embedding_matrix.detach()[module.vocabulary])
    assert not torch.equal(module.space.embeddings, before)


@pytest.mark.slow
def test_a_run_whose_embeddings_moved_resumes_tests_predicts_and_loads(word_model, pairs_dir, tmp_path):
    import lightning as L

    def trainer(steps: int) -> L.Trainer:
        return L.Trainer(
            accelerator="cpu", max_steps=steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
            limit_val_batches=0, limit_test_batches=1, limit_predict_batches=1, default_root_dir=tmp_path,
        )

    options = dict(train_embeddings=True, optim={"lr": 5e-2, "warmup_steps": 0}, sampling={"steps": 2})
    module = tiny_module(word_model, **options)
    pretrained = module.embedding_matrix.detach().clone()
    first = trainer(4)
    first.fit(module, datamodule=pairs_data(pairs_dir, word_model, batch_size=4))
    # Far outside any float-rounding tolerance: E really moved.
    assert (module.embedding_matrix.detach() - pretrained).abs().max() > 0.05
    path = tmp_path / "moved.ckpt"
    first.save_checkpoint(path)

    resumed = tiny_module(word_model, **options)
    trainer(6).fit(resumed, datamodule=pairs_data(pairs_dir, word_model, batch_size=4), ckpt_path=path)
    assert resumed.global_step == 6

    tested = tiny_module(word_model, **options)
    trainer(0).test(tested, datamodule=pairs_data(pairs_dir, word_model, batch_size=4), ckpt_path=path, verbose=False)
    predicted = tiny_module(word_model, **options)
    records = trainer(0).predict(predicted, datamodule=pairs_data(pairs_dir, word_model, batch_size=4), ckpt_path=path)
    assert len(records[0]) == 4

    loaded = SmoothieModule.load_from_checkpoint(path)
    torch.testing.assert_close(loaded.embedding_matrix, module.embedding_matrix)
    sources = [source for source, _ in PAIRS[:2]]
    assert loaded.generate(sources, steps=2, seed=0) == module.generate(sources, steps=2, seed=0)

    # The pretrained E is still checked: a run over another embedding model is refused.
    other = tiny_module(word_model, **options, per_feature_standardisation=True)
    with pytest.raises(CheckpointMismatchError, match="embedding matrix"):
        other.on_load_checkpoint(torch.load(path, weights_only=False))


def test_frozen_embeddings_are_a_buffer_without_gradient(word_model, pairs_dir):
    module = tiny_module(word_model)
    module.diffusion_loss(train_batch(word_model, pairs_dir), torch.Generator().manual_seed(0)).backward()
    assert "embedding_matrix" in dict(module.named_buffers())
    assert not module.embedding_matrix.requires_grad and module.embedding_matrix.grad is None


def test_per_feature_standardisation_gives_every_real_column_mean_zero_and_std_one(word_model):
    from smoothie_pl.embeddings import load_tokenizer, real_token_mask

    matrix = tiny_module(word_model, per_feature_standardisation=True).embedding_matrix
    real = real_token_mask(load_tokenizer(word_model), matrix.shape[0])
    torch.testing.assert_close(matrix[real].mean(0), torch.zeros(matrix.shape[1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(matrix[real].std(0), torch.ones(matrix.shape[1]), atol=1e-5, rtol=0)
    scalar = tiny_module(word_model).embedding_matrix
    assert scalar[real].std(0).sub(1).abs().max() > 0.05  # the scalar default does not equalise columns


# ------------------------------------------------------------------ all together
def test_all_options_train_save_load_and_sample_together(word_model, pairs_dir, tmp_path):
    import lightning as L

    variant = {"self_conditioning": True, "block": "prenorm", "conditioning": "concat", "source_pointer": True}
    denoiser = DenoiserConfig(**{**TINY.__dict__, **variant})
    options = dict(
        train_embeddings=True, masked_loss=True, cfg_dropout=0.2, sampling={"guidance_weight": 1.5, "clamp": True}
    )
    module = tiny_module(word_model, denoiser=denoiser, **options)
    before = module.embedding_matrix.detach().clone()
    trainer = L.Trainer(
        accelerator="cpu", max_steps=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=pairs_data(pairs_dir, word_model, batch_size=4))
    assert not torch.equal(module.embedding_matrix.detach(), before)

    path = tmp_path / "options.ckpt"
    trainer.save_checkpoint(path)
    loaded = SmoothieModule.load_from_checkpoint(path)
    torch.testing.assert_close(loaded.embedding_matrix, module.embedding_matrix)
    assert loaded.hparams.denoiser["block"] == "prenorm" and loaded.null_source is not None
    sources = [source for source, _ in PAIRS[:2]]
    assert loaded.generate(sources, steps=3, seed=0) == module.generate(sources, steps=3, seed=0)


def test_embedding_losses_stay_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    clean, vocab, rows = torch.randn(4, 16) * 3, torch.randn(50, 16) * 3, torch.tensor([1, 2, 3, 4])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        prior = prior_matching_loss(clean, vocab, 0.5, 1.5, 1.0)
        decoding = decoding_cross_entropy(clean, rows, vocab, 0.7, 0.0, 1.5, seed=0, chunk_size=16)
    torch.testing.assert_close(prior, prior_matching_loss(clean, vocab, 0.5, 1.5, 1.0))
    torch.testing.assert_close(decoding, decoding_cross_entropy(clean, rows, vocab, 0.7, 0.0, 1.5, seed=0, chunk_size=16))
