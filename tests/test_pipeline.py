"""SmoothiePipeline: Lightning-free, what the module's generate uses, and observable step by step."""

import ast
from pathlib import Path

import torch

from smoothie_pl.pipeline import SmoothiePipeline, seeded_generator

from .conftest import PAIRS
from .test_module import tiny_module

SOURCE = Path(__file__).resolve().parents[1] / "src"


def smoothie_imports(path: Path) -> set[str]:
    """Every module a file imports (absolute names, relative imports resolved within ``smoothie_pl``)."""
    package = ".".join(path.relative_to(SOURCE).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def module_file(name: str) -> Path | None:
    path = SOURCE.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def test_the_pipeline_and_everything_it_imports_use_no_lightning():
    """Followed through every smoothie_pl module it reaches (the package's top-level re-export aside)."""
    seen, todo, reached = set(), [SOURCE / "smoothie_pl/pipeline.py"], []
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in smoothie_imports(path):
            assert name.split(".")[0] not in ("lightning", "pytorch_lightning"), f"{path} imports {name}"
            target = module_file(name) if name.startswith("smoothie_pl.") else None
            if target is not None:
                todo.append(target)
                reached.append(name)
    assert "smoothie_pl.diffusion.samplers" in reached and "smoothie_pl.models.denoiser" in reached


def test_module_generate_is_the_pipelines_and_the_callback_sees_every_step(word_model):
    module = tiny_module(word_model).eval()
    sources = [source for source, _ in PAIRS[:3]]
    pipeline = module.pipeline
    assert isinstance(pipeline, SmoothiePipeline)
    seen = []

    def callback(k, t, x, e0):
        seen.append((k, t[0].item(), tuple(x.shape), tuple(e0.shape)))

    with_callback = module.generate(sources, steps=4, seed=3, callback=callback)
    assert with_callback == module.generate(sources, steps=4, seed=3)
    assert with_callback == pipeline.generate(sources, seed=3, steps=4)
    assert [k for k, *_ in seen] == [0, 1, 2, 3]
    assert [t for _, t, *_ in seen] == [1.0, 0.75, 0.5, 0.25]
    assert all(x == e0 == (3, 8, module.embedding_matrix.shape[1]) for *_, x, e0 in seen)


def test_decode_of_exact_embeddings_gives_the_text_back(word_model):
    """Embeddings that are vocabulary rows decode to their words (nearest row; the end token cuts the text)."""
    module = tiny_module(word_model)
    tokenizer = module.tokenizer
    ids = tokenizer(["the cat sat on the mat"], add_special_tokens=False, return_tensors="pt")["input_ids"]
    sep = torch.full((1, 1), tokenizer.sep_token_id)
    pad = torch.full((1, 8 - ids.shape[1] - 1), tokenizer.pad_token_id)
    embeddings = module.embedding_matrix[torch.cat([ids, sep, pad], dim=1)]
    assert module.pipeline.decode(embeddings) == ["the cat sat on the mat"]


def test_seeded_generators_depend_on_every_seed():
    draw = lambda *seeds: torch.rand(3, generator=seeded_generator(torch.device("cpu"), *seeds))  # noqa: E731
    assert torch.equal(draw(1, 2, 3), draw(1, 2, 3))
    assert not torch.equal(draw(1, 2, 3), draw(1, 3, 2)) and not torch.equal(draw(1, 2, 3), draw(1, 2, 4))
