"""The documentation stays inside the repository and in step with the code.

Every link in ``README.md``, ``docs/**/*.md`` and ``experiments/**/README.md``
must resolve to a file of the repository (and a ``#fragment`` to a heading of
it). None may leave the repository: no ``../shared``-style paths above its
root, no absolute paths, no ``file:`` URLs, and no web links to the
repository's own files (they would show another version than the clone's).
The README's own-data config must instantiate as it is printed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250


def documents(root: Path) -> list[Path]:
    """The pages a reader of the repository follows links in."""
    pages = [root / "README.md", *(root / "docs").glob("**/*.md"), *(root / "experiments").glob("**/README.md")]
    return sorted(page for page in pages if page.is_file())


def repository_name(root: Path) -> str:
    match = re.search(r'^name\s*=\s*"([^"]+)"', (root / "pyproject.toml").read_text(), re.MULTILINE)
    return match.group(1) if match else root.name


FENCED_BLOCK = re.compile(r"^ {0,3}(`{3,}|~{3,})[^\n]*\n.*?^ {0,3}\1[ \t]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
LINK_TARGETS = (
    re.compile(r"\]\(\s*<([^>\n]*)>"),  # [text](<path with spaces>)
    re.compile(r"\]\(\s*([^<)\s][^)\s]*)"),  # [text](target "title") and ![alt](image)
    re.compile(r"^ {0,3}\[[^\]\n]+\]:\s*<?([^>\s]+)>?", re.MULTILINE),  # [label]: target
    re.compile(r"<((?:https?|file|ftp)://[^>\s]+)>"),  # <https://...>
    re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']+)["']"""),  # <img src="...">
)
BARE_URL = re.compile(r"(?<![(<\"'=])\b(?:https?|file)://[^\s)>\]\"']+")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def prose(markdown: str) -> str:
    """The text outside fenced code blocks and code spans (where a path is an example, not a link)."""
    return CODE_SPAN.sub("", FENCED_BLOCK.sub("", markdown))


def link_targets(markdown: str) -> list[str]:
    """Every link target of a page, in order of appearance, bare web addresses included."""
    text = prose(markdown)
    found = [(match.start(1), match.group(1)) for pattern in LINK_TARGETS for match in pattern.finditer(text)]
    starts = {start for start, _ in found}
    found += [
        (match.start(), match.group().rstrip(".,;:")) for match in BARE_URL.finditer(text) if match.start() not in starts
    ]
    return [target for _, target in sorted(found)]


def heading_slugs(markdown: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    slugs: set[str] = set()
    for heading in HEADING.findall(FENCED_BLOCK.sub("", markdown)):
        text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        unique, n = slug, 0
        while unique in slugs:
            n += 1
            unique = f"{slug}-{n}"
        slugs.add(unique)
    return slugs


def link_problem(target: str, page: Path, root: Path, own_repository: re.Pattern) -> str | None:
    """Why ``target`` (a link on ``page``) does not resolve inside ``root``; ``None`` when it does."""
    if SCHEME.match(target):
        if target.lower().startswith(("http://", "https://")):
            if own_repository.search(target):
                return "a web link to this repository's own files: link the file relatively"
            return None
        if target.lower().startswith("mailto:"):
            return None
        return "a URL outside the repository"
    path, _, fragment = target.partition("#")
    if not path:
        return None if fragment in heading_slugs(page.read_text()) else f"no heading #{fragment} on this page"
    if path.startswith(("/", "~", "\\")):
        return "an absolute path"
    resolved = (page.parent / unquote(path)).resolve()
    if not resolved.is_relative_to(root.resolve()):
        return "a path outside the repository"
    if not resolved.exists():
        return f"{resolved.relative_to(root.resolve())} does not exist"
    if fragment and resolved.suffix == ".md" and fragment not in heading_slugs(resolved.read_text()):
        return f"no heading #{fragment} in {resolved.relative_to(root.resolve())}"
    return None


def page_problems(page: Path, root: Path) -> list[str]:
    own = re.compile(
        rf"(?:github\.com|githubusercontent\.com|gitlab\.com)/[^/\s]+/{re.escape(repository_name(root))}(?![\w-])", re.I
    )
    markdown = page.read_text()
    problems = [f"{target}: {why}" for target in link_targets(markdown) if (why := link_problem(target, page, root, own))]
    if "../shared" in markdown:
        problems.append("../shared: names a folder outside the repository")
    return problems


# ------------------------------------------------------------ the checker itself

HAND_WRITTEN_PAGE = """\
# Title

See [the method](docs/method.md), ![a picture](images/a.png "Caption"), and
[spaced](<docs/with space.md>). A [reference][ref] and <https://example.org/x>.
The paper is at https://arxiv.org/abs/2505.18853.

```bash
cat [not a link](inside/code.md)
```

Inline `[not a link](inside/span.md)` either, but [this one](#title) is.

[ref]: docs/ref.md
<img src="images/b.png">
"""


def test_link_targets_of_a_hand_written_page():
    assert link_targets(HAND_WRITTEN_PAGE) == [
        "docs/method.md",
        "images/a.png",
        "docs/with space.md",
        "https://example.org/x",
        "https://arxiv.org/abs/2505.18853",
        "#title",
        "docs/ref.md",
        "images/b.png",
    ]


def test_heading_slugs_follow_githubs_rules():
    page = "# 4. Sampling and decoding\n## Train, test, predict, generate\n### `smoothie generate`\n## Notes\n## Notes\n"
    page += "```\n# a comment, not a heading\n```\n"
    assert heading_slugs(page) == {
        "4-sampling-and-decoding",
        "train-test-predict-generate",
        "smoothie-generate",
        "notes",
        "notes-1",
    }


def test_every_way_of_leaving_the_repository_is_reported(tmp_path):
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "smoothie-pl"\n')
    (root / "docs" / "other.md").write_text("# Other\n\n## A section\n")
    page = root / "README.md"
    page.write_text(
        "[spec](../shared/METHOD.md) [abs](/etc/passwd) [home](~/notes.md) [file](file:///tmp/x.md)\n"
        "[own](https://github.com/someone/smoothie-pl/blob/main/docs/other.md) [missing](docs/missing.md)\n"
        "[bad anchor](docs/other.md#no-such-section) [self](#nowhere)\n"
        "[good](docs/other.md#a-section) [web](https://arxiv.org/abs/2505.18853) [other repo](https://github.com/a/smoothie-plus)\n"
    )
    assert page_problems(page, root) == [
        "../shared/METHOD.md: a path outside the repository",
        "/etc/passwd: an absolute path",
        "~/notes.md: an absolute path",
        "file:///tmp/x.md: a URL outside the repository",
        "https://github.com/someone/smoothie-pl/blob/main/docs/other.md: a web link to this repository's own files: "
        "link the file relatively",
        "docs/missing.md: docs/missing.md does not exist",
        "docs/other.md#no-such-section: no heading #no-such-section in docs/other.md",
        "#nowhere: no heading #nowhere on this page",
        "../shared: names a folder outside the repository",
    ]


# ------------------------------------------------------------ the repository's pages


@pytest.mark.parametrize("page", documents(ROOT), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repository(page):
    assert page_problems(page, ROOT) == []


def test_the_documentation_pages_exist():
    pages = {str(path.relative_to(ROOT)) for path in documents(ROOT)}
    assert {"README.md", "docs/method.md", "docs/options.md", "docs/scaling.md"} <= pages


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def readme_block(language: str, containing: str) -> str:
    """The README's fenced ``language`` block that contains ``containing``."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(rf"^```{language}\n(.*?)^```", readme, re.MULTILINE | re.DOTALL)
    (block,) = [block for block in blocks if containing in block]
    return block


@pytest.mark.slow  # builds the model and loads MiniLM: 10 to 30 s on 2 CPU cores
def test_readmes_own_data_config_instantiates_as_printed(tmp_path, monkeypatch):
    from smoothie_pl.cli import build_cli
    from smoothie_pl.data import JsonlDataModule

    example = json.loads(readme_block("json", '"src"').strip())
    data_dir = tmp_path / "my"
    data_dir.mkdir()
    for name in ("train", "valid", "test"):
        (data_dir / f"{name}.jsonl").write_text(json.dumps(example) + "\n")
    config = tmp_path / "my_task.yaml"
    config.write_text(readme_block("yaml", "JsonlDataModule"))
    monkeypatch.chdir(tmp_path)  # the config's data paths are relative: my/train.jsonl

    cli = build_cli(["--config", str(config), "--trainer.logger", "false"], run=False)

    assert isinstance(cli.datamodule, JsonlDataModule)
    assert cli.datamodule.read_split("train")[0].target == example["trg"]
    assert (cli.model.hparams.target_length, cli.model.hparams.denoiser["width"]) == (64, 256)
    (checkpoint,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "ModelCheckpoint"]
    assert (checkpoint.monitor, checkpoint.mode) == ("val/tracked", "max")
