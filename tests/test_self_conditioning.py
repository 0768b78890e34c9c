"""Self-conditioning (METHOD section 4): an encoder of the previous prediction, added to every block's input."""

import datetime
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from smoothie_pl.config_checks import config_errors
from smoothie_pl.models import DenoiserConfig, UShapedDenoiser

from .test_module import TINY, tiny_module
from .test_module_options import record_denoiser_calls, train_batch

DIM, LENGTH, SOURCE_LENGTH, WIDTH = 8, 5, 7, 16


def denoiser(self_conditioning: bool, conditioning: str = "cross_attention") -> UShapedDenoiser:
    config = DenoiserConfig(
        width=WIDTH, depth=4, heads=2, dropout=0.0, conditioning=conditioning, self_conditioning=self_conditioning
    )
    return UShapedDenoiser(DIM, config, LENGTH)


def inputs(seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    source_mask = torch.ones(2, SOURCE_LENGTH, dtype=torch.bool)
    source_mask[1, 4:] = False
    return dict(
        x_t=torch.randn(2, LENGTH, DIM, generator=generator),
        t=torch.tensor([0.2, 0.7]),
        source=torch.randn(2, SOURCE_LENGTH, WIDTH, generator=generator),
        source_mask=source_mask,
    )


def block_inputs(model: UShapedDenoiser, previous: torch.Tensor | None) -> list[torch.Tensor]:
    """The input of every block for ``inputs()`` and ``previous``, recorded by hooks."""
    seen = []
    hooks = [block.register_forward_pre_hook(lambda _, args: seen.append(args[0])) for block in model.blocks]
    with torch.no_grad():
        model(**inputs(), previous=previous)
    for hook in hooks:
        hook.remove()
    return seen


def randomise_projections(model: UShapedDenoiser, only: int | None = None) -> None:
    """Draw every block's self-conditioning projection (or only block ``only``'s, zeroing the others)."""
    with torch.no_grad():
        for i, projection in enumerate(model.self_conditioning.projections):
            for parameter in projection.parameters():
                if only is None or i == only:
                    parameter.normal_()
                else:
                    parameter.zero_()


@pytest.mark.parametrize("conditioning", ["cross_attention", "concat"])
def test_without_a_previous_prediction_the_output_is_that_of_the_same_weights_without_self_conditioning(conditioning):
    torch.manual_seed(0)
    model = denoiser(True, conditioning).train()  # grad on: the zero kept for DDP must not change a bit
    randomise_projections(model)
    plain = denoiser(False, conditioning)
    own = {name: value for name, value in model.state_dict().items() if not name.startswith("self_conditioning.")}
    plain.load_state_dict(own)  # strict: the weights without self-conditioning are exactly the plain denoiser's
    assert len(own) < len(model.state_dict())

    encoder_calls = []
    model.self_conditioning.encoder.register_forward_hook(lambda *_: encoder_calls.append(1))
    assert torch.equal(model(**inputs()), plain.train()(**inputs()))
    assert encoder_calls == []  # no encoding of zeros: the encoder does not run at all
    previous = torch.randn(2, LENGTH, DIM)
    assert not torch.allclose(model(**inputs(), previous=previous), plain(**inputs()))
    assert encoder_calls == [1]


@pytest.mark.parametrize("conditioning", ["cross_attention", "concat"])
def test_zero_initialised_projections_add_nothing_whatever_the_previous_prediction(conditioning):
    torch.manual_seed(0)
    model = denoiser(True, conditioning).eval()
    first, second = torch.randn(2, 2, LENGTH, DIM)
    reference = block_inputs(model, None)
    for previous in (first, second):
        for seen, expected in zip(block_inputs(model, previous), reference, strict=True):
            assert torch.equal(seen, expected)


@pytest.mark.parametrize("conditioning", ["cross_attention", "concat"])
def test_every_block_gets_its_own_addition_at_the_target_positions(conditioning):
    torch.manual_seed(0)
    model = denoiser(True, conditioning).eval()
    first, second = torch.randn(2, 2, LENGTH, DIM)
    for i in range(len(model.blocks)):
        randomise_projections(model, only=i)  # only block i's projection is non-zero
        with_first, with_second = block_inputs(model, first), block_inputs(model, second)
        for j in range(i):  # the blocks before block i do not see the previous prediction
            assert torch.equal(with_first[j], with_second[j])
        assert not torch.allclose(with_first[i][:, :LENGTH], with_second[i][:, :LENGTH])
        if conditioning == "concat" and i == 0:
            # [target; source]: the source positions get nothing.
            assert torch.equal(with_first[0][:, LENGTH:], with_second[0][:, LENGTH:])


def test_a_training_step_with_the_first_pass_trains_the_projections_then_the_encoder(word_model, pairs_dir, monkeypatch):
    module = tiny_module(word_model, denoiser=DenoiserConfig(**{**TINY.__dict__, "self_conditioning": True}))
    batch = train_batch(word_model, pairs_dir)
    calls = record_denoiser_calls(module, monkeypatch)
    optimiser = module.configure_optimizers()["optimizer"]
    parameters = dict(module.denoiser.self_conditioning.named_parameters())
    encoder = [name for name in parameters if name.startswith("encoder.")]
    projections = [name for name in parameters if name.startswith("projections.")]

    def step(seed: int) -> tuple[int, dict[str, torch.Tensor]]:
        """One optimiser step: the number of denoiser calls and the self-conditioning gradients."""
        calls.clear()
        optimiser.zero_grad()
        module.diffusion_loss(batch, torch.Generator().manual_seed(seed)).backward()
        optimiser.step()
        return len(calls), {name: parameter.grad for name, parameter in parameters.items()}

    def passes(seed: int) -> int:
        calls.clear()
        with torch.no_grad():
            module.diffusion_loss(batch, torch.Generator().manual_seed(seed))
        return len(calls)

    first, second = [seed for seed in range(20) if passes(seed) == 2][:2]  # the seed's coin says: first pass
    without = next(seed for seed in range(20) if passes(seed) == 1)
    passes, grads = step(first)
    assert passes == 2
    assert all(grads[name].abs().sum() > 0 for name in projections)
    # Zero projections pass no gradient back into the encoder yet ...
    assert all(grads[name].abs().sum() == 0 for name in encoder)
    passes, grads = step(second)
    assert passes == 2
    # ... but once a step has moved them, the encoder learns too.
    assert all(grads[name].abs().sum() > 0 for name in encoder)

    # Without a first pass every parameter still takes part, with zero gradient (DDP needs all of them).
    passes, grads = step(without)
    assert passes == 1
    assert all(grad is not None and not grad.any() for grad in grads.values())


def _train_under_ddp(rank: int, port: int) -> None:
    """Two ranks that disagree on the first pass, as their own random draws do; DDP without unused-parameter search.

    A step that leaves a parameter out on one rank raises on that rank and
    leaves the other waiting for it: the timeout turns the wait into an error.
    """
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=30))
    torch.manual_seed(0)
    parallel = DistributedDataParallel(denoiser(True))
    optimiser = torch.optim.SGD(parallel.parameters(), lr=0.1)
    try:
        for step in range(3):
            previous = torch.randn(2, LENGTH, DIM) if (step + rank) % 2 else None
            optimiser.zero_grad()
            parallel(**inputs(step), previous=previous).pow(2).mean().backward()
            optimiser.step()
        dist.barrier()
    finally:
        # The DDP reducer goes while the process group lives: freed after it (at return), its
        # destructor joins gloo's worker thread holding the GIL, which that thread may need (hung in CI).
        del parallel, optimiser
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_trains_when_the_ranks_disagree_on_the_first_pass(free_port):
    mp.spawn(_train_under_ddp, args=(free_port(),), nprocs=2)  # raises if a rank fails


def test_self_conditioning_depth_must_be_positive():
    with pytest.raises(ValueError, match="denoiser.self_conditioning_depth must be positive, got 0"):
        DenoiserConfig(self_conditioning_depth=0)
    config = {"model": {"denoiser": {"self_conditioning_depth": 0}}}
    assert config_errors(config) == ["model.denoiser.self_conditioning_depth = 0: allowed >= 1"]
