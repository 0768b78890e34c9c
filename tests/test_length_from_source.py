"""``length_from_source``: each pair models only its source's length plus a margin; length-bucketed batches."""

from __future__ import annotations

import pytest
import torch

from smoothie_pl.config_checks import config_errors
from smoothie_pl.data.samplers import POOL_BATCHES, ResumableShuffleSampler, length_bucketed
from smoothie_pl.models import DenoiserConfig, UShapedDenoiser

from .conftest import PAIRS
from .test_module import TINY, pairs_data, tiny_module
from .test_module_options import record_denoiser_calls, tokenised_sources


def source_mask(*real_tokens: int, width: int = 12) -> torch.Tensor:
    """A source mask whose rows have this many real tokens (specials included)."""
    return torch.arange(width) < torch.tensor(real_tokens)[:, None]


def test_the_window_is_the_source_length_without_specials_plus_the_margin(word_model):
    pipeline = tiny_module(word_model, length_from_source=2).pipeline  # target_length 8; [CLS] ... [SEP]
    width, live = pipeline.target_window(source_mask(5, 7, 12))
    # 3 + 2 = 5, 5 + 2 = 7, 10 + 2 = 12 capped at 8.
    assert width == 8
    assert live.sum(1).tolist() == [5, 7, 8]
    assert live[0].tolist() == [True] * 5 + [False] * 3

    width, live = pipeline.target_window(source_mask(4, 4))
    assert (width, live) == (4, None)  # every position live: no mask
    assert tiny_module(word_model).pipeline.target_window(source_mask(4, 4)) == (8, None)


@pytest.mark.parametrize("conditioning", ["cross_attention", "concat"])
def test_masked_target_positions_change_no_modelled_position(conditioning):
    torch.manual_seed(0)
    config = DenoiserConfig(**{**TINY.__dict__, "conditioning": conditioning, "rope": True})
    denoiser = UShapedDenoiser(16, config, max_length=8).eval()
    x, source = torch.randn(2, 6, 16), torch.randn(2, 5, 64)
    live = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    junk = x.clone()
    junk[0, 4:] = torch.randn(2, 16) * 10
    t = torch.tensor([0.3, 0.7])
    with torch.no_grad():
        first = denoiser(x, t, source, target_mask=live)
        second = denoiser(junk, t, source, target_mask=live)
        unmasked = denoiser(junk, t, source)
    torch.testing.assert_close(first[live], second[live])
    assert not torch.allclose(first[0, :4], unmasked[0, :4])  # without the mask the junk is read


def test_training_models_only_the_windows(word_model, pairs_dir, monkeypatch):
    """x0 MSE averaged over the live positions only, with the window's width and mask given to the denoiser."""
    module = tiny_module(word_model, length_from_source=0)
    data = pairs_data(pairs_dir, word_model, batch_size=8)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    windows = batch["source_mask"].sum(1) - 2  # at most 7 words
    assert windows.max() < 8, "the test needs a batch narrower than target_length"
    calls = record_denoiser_calls(module, monkeypatch)
    module.diffusion_loss(batch, torch.Generator().manual_seed(0))
    (call,) = calls
    assert call["x_t"].shape[1] == int(windows.max())
    assert call["target_mask"].sum(1).tolist() == windows.tolist()

    prediction = torch.randn(8, int(windows.max()), module.embedding_matrix.shape[1], generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(module.denoiser, "forward", lambda x_t, *args: prediction)
    loss = module.diffusion_loss(batch, torch.Generator().manual_seed(0))
    clean = module.embedding_matrix[batch["target_ids"]]
    squared = [(prediction[i, :w] - clean[i, :w]).pow(2).mean(-1) for i, w in enumerate(windows.tolist())]
    torch.testing.assert_close(loss, torch.cat(squared).mean())


def test_sampling_fills_positions_past_the_window_with_padding(word_model):
    module = tiny_module(word_model, length_from_source=1).eval()
    ids, mask = tokenised_sources(module, count=4)
    real = mask.sum(1) - 2
    predicted = module.pipeline.sample(ids, mask, torch.Generator().manual_seed(0), steps=3)
    assert predicted.shape[1] == int((real + 1).max())
    pad = module.space.embeddings[module.vocabulary.tolist().index(module.tokenizer.pad_token_id)]
    for row, window in zip(predicted, (real + 1).tolist()):
        assert torch.equal(row[window:], pad.expand(len(row) - window, -1))
    texts = module.generate([source for source, _ in PAIRS[:4]], steps=3, seed=0)
    assert len(texts) == 4 and all(isinstance(text, str) for text in texts)


def test_sampling_spends_no_vocabulary_work_past_the_window(word_model, monkeypatch):
    """Noise, re-noising and clamping see only the live positions (their count, worked from the sources); the
    model input past a window is zero."""
    module = tiny_module(word_model, length_from_source=1, sampling={"clamp": True}).eval()
    ids, mask = tokenised_sources(module, count=4)
    windows = mask.sum(1) - 2 + 1
    assert windows.min() < windows.max(), "the test needs sources of different lengths"
    attended, clamped, inputs = [], [], []
    attention, decode = module.space.attention, module.space.decode
    monkeypatch.setattr(module.space, "attention", lambda query, *a, **k: attended.append(len(query)) or attention(query, *a, **k))
    monkeypatch.setattr(module.space, "decode", lambda e, exact=True: clamped.append(e.shape[:-1].numel()) or decode(e, exact))
    module.pipeline.sample(ids, mask, torch.Generator().manual_seed(0), steps=3, callback=lambda k, t, x, e0: inputs.append(x))
    live = int(windows.sum())
    assert attended == [live] * 3 and clamped == [live] * 3  # prior + 2 re-noisings; one clamp per step
    dead = torch.arange(int(windows.max())) >= windows[:, None]
    assert all(not x[dead].any() and x[~dead].abs().sum(-1).gt(0).all() for x in inputs)


def test_a_negative_margin_or_no_source_is_refused(word_model):
    assert config_errors({"model": {"length_from_source": -1}}) == [
        "model.length_from_source = -1: allowed >= 0, with a source (model.denoiser.source_encoder not 'none')"
    ]
    unconditional = {"model": {"length_from_source": 4, "denoiser": {"source_encoder": "none"}}}
    assert [error.split(":")[0] for error in config_errors(unconditional)] == ["model.length_from_source = 4"]
    with pytest.raises(ValueError, match="length_from_source"):
        tiny_module(word_model, length_from_source=-1)


# ------------------------------------------------------------------ length buckets
def test_length_buckets_group_similar_lengths_and_keep_every_index_once():
    lengths = torch.randint(1, 200, (1000,), generator=torch.Generator().manual_seed(0)).tolist()
    order = torch.randperm(1000, generator=torch.Generator().manual_seed(1)).tolist()
    bucketed = length_bucketed(order, lengths, 8, torch.Generator().manual_seed(2))
    assert sorted(bucketed) == list(range(1000))
    batches = [bucketed[i : i + 8] for i in range(0, 1000, 8)]
    spread = [max(lengths[i] for i in batch) - min(lengths[i] for i in batch) for batch in batches]
    # 1,000 lengths from 1 to 199 in one pool of 64 batches of 8: neighbours in sorted order are ~0.2 apart.
    assert POOL_BATCHES * 8 < 1000 and max(spread) <= 20, spread
    assert bucketed != length_bucketed(order, lengths, 8, torch.Generator().manual_seed(3))  # batch order is drawn


def test_an_incomplete_last_batch_stays_last():
    lengths = list(range(20))
    bucketed = length_bucketed(list(range(19, -1, -1))[:19], lengths, 4, torch.Generator().manual_seed(0))
    assert len(bucketed) == 19 and sorted(bucketed[-3:]) == [17, 18, 19]  # the longest three: the cut remainder


def test_a_bucketed_epoch_resumes_where_it_stopped_and_ranks_share_nothing():
    dataset = list(range(100))
    lengths = [index % 17 for index in dataset]
    full = list(ResumableShuffleSampler(dataset, seed=5, lengths=lengths, batch_size=4))
    resumed = ResumableShuffleSampler(dataset, seed=5, lengths=lengths, batch_size=4)
    resumed.resume_at(0, 40)
    assert list(resumed) == full[40:]
    ranks = [set(ResumableShuffleSampler(dataset, 2, rank, 5, lengths, 4)) for rank in (0, 1)]
    assert not ranks[0] & ranks[1] and len(ranks[0] | ranks[1]) == 100
    with pytest.raises(ValueError, match="both"):
        ResumableShuffleSampler(dataset, lengths=lengths)


def test_the_data_module_buckets_its_training_batches(word_model, pairs_dir):
    data = pairs_data(pairs_dir, word_model, batch_size=2, length_buckets=True)
    data.setup("fit")
    loader = data.train_dataloader()
    assert loader.sampler.batch_size == 2
    assert loader.sampler.lengths == [len(ids) for ids in data.dataset("train").source_ids]


def test_predict_batches_go_in_order_of_source_length_and_validation_in_file_order(word_model, pairs_dir):
    data = pairs_data(pairs_dir, word_model, batch_size=2, eval_batch_size=3, length_buckets=True)
    data.setup("predict")
    lengths = [len(ids) for ids in data.dataset("test").source_ids]
    batches = [batch["index"].tolist() for batch in data.predict_dataloader()]
    assert sorted(index for batch in batches for index in batch) == list(range(len(lengths)))
    flat = [lengths[index] for batch in batches for index in batch]
    assert flat == sorted(lengths)
    data.setup("validate")
    assert [i for batch in data.val_dataloader() for i in batch["index"].tolist()] == list(range(len(data.dataset("validation"))))
