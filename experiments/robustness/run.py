"""Feed the `smoothie` CLI a corpus of bad inputs and print what each one ends in.

Every case is a command line (data files, configs and checkpoints prepared in
a scratch folder) with what it must end in: exit status 0 for inputs the
library accepts (and fixes, e.g. by truncating or skipping), or a non-zero
status with an error line that names the problem (file and line, config key,
checkpoint). A case fails if its error line lacks that name or if the run
ends in an exception the CLI does not turn into a message (a traceback).

    python experiments/robustness/run.py               # in-process, about a minute on 2 cores
    python experiments/robustness/run.py --subprocess  # each case as its own `smoothie` process

The model is tests/configs/tiny.yaml on a 2-layer BERT of width 32 with the
packaged MiniLM's tokenizer, built here, so nothing needs the network.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import transformers

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
SENTENCES = [
    ("in the beginning god created the heaven and the earth", "in the beginning god created the heavens and the earth"),
    ("and the earth was without form and void", "the earth was formless and empty"),
    ("and god said let there be light", "god said let there be light"),
    ("and god saw the light that it was good", "god saw the light and saw that it was good"),
]
OTHER_SENTENCES = [("zebras graze quietly near rivers", "zebras eat grass by the river")] * 4


@dataclass
class Case:
    """A command line and what it must end in: exit status ``expect``, and ``names`` in its error line
    (in its warnings when it succeeds)."""

    name: str
    args: list[str]
    expect: int
    names: list[str] = field(default_factory=list)
    prepare: Callable[[Path], None] | None = None


@dataclass
class Outcome:
    """Exit status, the error line (for a success: its first warning that the case names) and the verdict."""

    status: int | str
    line: str
    passed: bool


# ------------------------------------------------------------------ fixtures
def write_existing_predictions(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "predictions.jsonl").write_text('{"index": 0, "prediction": "kept"}\n')


def write_pairs(path: Path, pairs, extra_lines: tuple[bytes, ...] = (), at: int = 2) -> None:
    lines = [json.dumps({"src": s, "trg": t}).encode() for s, t in pairs]
    lines[at:at] = list(extra_lines)
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def tiny_embedding_model(directory: Path, seed: int, extra_token: str | None = None) -> None:
    """A 2-layer BERT of width 32 with the packaged MiniLM's tokenizer (plus ``extra_token``), saved to ``directory``."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from smoothie_pl.embeddings import load_tokenizer, resolve_embedding_source

    tokenizer = AutoTokenizer.from_pretrained(resolve_embedding_source(None))
    if extra_token:
        tokenizer.add_tokens([extra_token])
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    load_tokenizer.cache_clear()  # a fresh process would read the new files; so must this one


def prepare_workspace(work: Path) -> None:
    """Data splits, a run config on top of tiny.yaml, and a checkpoint trained for two steps."""
    data = work / "data"
    data.mkdir()
    for split in ("train", "validation", "test"):
        write_pairs(data / f"{split}.jsonl", SENTENCES)
    write_pairs(data / "other_train.jsonl", OTHER_SENTENCES)
    tiny_embedding_model(work / "embedding", seed=0)
    (work / "run.yaml").write_text(
        json.dumps(
            {
                "trainer": {"max_steps": 2, "enable_progress_bar": False, "logger": False},
                "model": {"embedding": str(work / "embedding"), "sampling": {"steps": 2}},
                "data": {
                    "class_path": "smoothie_pl.data.JsonlDataModule",
                    "init_args": {
                        "train_file": str(data / "train.jsonl"),
                        "validation_file": str(data / "validation.jsonl"),
                        "test_file": str(data / "test.jsonl"),
                        "batch_size": 2,
                        "eval_batch_size": 2,
                        "restrict_vocabulary": True,
                    },
                },
            }
        )
    )
    status, lines = invoke_in_process(["fit", *base_args(work), "--trainer.default_root_dir", str(work / "trained")])
    if status != 0:
        raise RuntimeError("training the checkpoint for the checkpoint cases failed:\n" + "\n".join(lines[-20:]))


def base_args(work: Path) -> list[str]:
    return ["--config", str(TINY), "--config", str(work / "run.yaml")]


def checkpoint(work: Path) -> str:
    return str(work / "trained" / "checkpoints" / "last.ckpt")


class Payload:
    """Unpickling this ends the process with status 99: what a crafted checkpoint's code could do instead."""

    def __reduce__(self):
        return exec, ("raise SystemExit(99)",)


def crafted_checkpoint(path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "loops": {}, "payload": Payload()}, path)


def damaged_copy(checkpoint: str, path: Path, how: str) -> None:
    """A copy of ``checkpoint`` with random bytes in its largest record, NaN weights, or cut in half."""
    import torch
    import zipfile

    from smoothie_pl.checkpoint_io import save_atomically

    path.parent.mkdir(parents=True, exist_ok=True)
    if how == "nan":
        content = torch.load(checkpoint, weights_only=True)
        next(iter(content["state_dict"].values())).fill_(float("nan"))
        save_atomically(content, path)
        return
    shutil.copyfile(checkpoint, path)
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return
    with zipfile.ZipFile(path) as archive:
        largest = max(archive.infolist(), key=lambda info: info.compress_size)
    with path.open("r+b") as handle:  # the record's data starts after its local header
        handle.seek(largest.header_offset + 26)
        skip = sum(int.from_bytes(handle.read(2), "little") for _ in range(2))
        handle.seek(largest.header_offset + 30 + skip + largest.compress_size // 3)
        handle.write(os.urandom(min(1 << 20, largest.compress_size // 3)))


def truncated_last_beside_intact(checkpoint: str, run: Path) -> None:
    """A run folder whose last.ckpt was cut off by a kill, written after an intact step checkpoint."""
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint, run / "checkpoints" / "epoch=0-step=2.ckpt")
    damaged_copy(checkpoint, run / "checkpoints" / "last.ckpt", "truncated")


def copy_into_run(checkpoint: str, run: Path) -> None:
    """Make ``checkpoint`` the last.ckpt of ``run``, which ``fit`` then resumes from."""
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint, run / "checkpoints" / "last.ckpt")


# ------------------------------------------------------------------ the corpus
def cases(work: Path) -> list[Case]:
    data = work / "data"
    fit = ["fit", *base_args(work)]  # run_case gives every case its own default_root_dir
    predict = ["predict", *base_args(work)]
    train = data / "train.jsonl"
    ckpt = checkpoint(work)
    widened = "run resumed after its denoiser was widened"

    def bad_train(*lines: bytes) -> Callable[[Path], None]:
        return lambda _: write_pairs(train, SENTENCES, lines)

    def text(path: Path, content: bytes) -> Callable[[Path], None]:
        return lambda _: path.write_bytes(content)

    def reseed_embedding(_: Path) -> None:
        tiny_embedding_model(work / "embedding", seed=1)

    def add_token_to_embedding(_: Path) -> None:
        tiny_embedding_model(work / "embedding", seed=0, extra_token="zebraword")

    def restore_embedding(_: Path) -> None:
        tiny_embedding_model(work / "embedding", seed=0)

    data_cases = [
        Case("malformed JSON line", fit, 1, ["train.jsonl:3", "malformed JSON"], bad_train(b'{"src": "a", "trg": ')),
        Case("missing trg field", fit, 1, ["train.jsonl:3", "missing field 'trg'"], bad_train(b'{"src": "a"}')),
        Case("number as source text", fit, 1, ["train.jsonl:3", "'src'"], bad_train(b'{"src": 7, "trg": "b"}')),
        Case("empty target text", fit, 1, ["train.jsonl:3", "'trg'"], bad_train(b'{"src": "a", "trg": " "}')),
        Case("invalid UTF-8", fit, 1, ["train.jsonl:3", "invalid UTF-8"], bad_train(b'{"src": "caf\xe9", "trg": "b"}')),
        Case("JSON array line", fit, 1, ["train.jsonl:3", "expected a JSON object"], bad_train(b'["a", "b"]')),
        Case(
            "wrong field names",
            [*fit, "--data.init_args.source_field", "source"],
            1,
            ["train.jsonl:1", "missing field 'source'"],
            lambda _: write_pairs(train, SENTENCES),
        ),
        Case("train file does not exist", [*fit, "--data.init_args.train_file", str(data / "no.jsonl")], 1, ["no.jsonl"]),
        Case("empty validation file", fit, 1, ["validation.jsonl", "it is empty"], text(data / "validation.jsonl", b" ")),
        Case(
            "no test file given",
            ["test", *base_args(work), "--data.init_args.test_file", "null", "--ckpt_path", ckpt],
            1,
            ["test split", "data.init_args.test_file"],
            lambda _: write_pairs(data / "validation.jsonl", SENTENCES),
        ),
        Case(
            "bad lines skipped on request",
            [*fit, "--data.init_args.skip_bad_lines", "true"],
            0,
            ["train.jsonl: skipped 2 bad line(s) (lines 3, 4; line 3: malformed JSON"],
            bad_train(b"{", b"[]"),
        ),
        Case(
            "directory given as train file",
            [*fit, "--data.init_args.train_file", str(data)],
            1,
            ["data file", "is a directory"],
            lambda _: write_pairs(train, SENTENCES),
        ),
        Case("duplicate JSON key", fit, 1, ["train.jsonl:3", "'trg' is given twice"],
             bad_train(b'{"src": "a", "trg": "b", "trg": "c"}')),
        Case(
            "texts mostly unknown tokens",
            fit,
            0,
            ["train split: 1 of 5 sources", "mostly [UNK]"],
            bad_train(json.dumps({"src": "\U0001F600 \U0001F603 \U0001F604 \U0001F601", "trg": "b"}).encode()),
        ),
        Case(
            "overlong texts truncated",
            [*fit, "--model.target_length", "4"],
            0,
            ["train split: truncated 0 of 4 sources", "and 4 targets to target_length=4"],
            lambda _: write_pairs(train, SENTENCES),
        ),
    ]
    impossible_values = [  # name, option, value, what the error line must name
        ("negative sampling steps", "--model.sampling.steps", "-5", ["model.sampling.steps = -5", ">= 1"]),
        ("sigma_max below sigma_min", "--model.schedule.sigma_max", "1.0", ["model.schedule", "0 < sigma_min < sigma_max"]),
        ("zero target length", "--model.target_length", "0", ["model.target_length = 0", ">= 1"]),
        ("negative source length", "--model.source_length", "-1", ["model.source_length = -1"]),
        ("zero vocabulary chunk", "--model.vocab_chunk_size", "0", ["model.vocab_chunk_size = 0"]),
        ("zero batch size", "--data.init_args.batch_size", "0", ["data.init_args.batch_size = 0"]),
        ("dropout of 1", "--model.denoiser.dropout", "1.0", ["model.denoiser.dropout", "[0, 1)"]),
        ("odd denoiser depth", "--model.denoiser.depth", "3", ["model.denoiser.depth = 3", "even"]),
        ("heads not dividing width", "--model.denoiser.heads", "5", ["model.denoiser.heads = 5"]),
        ("unknown vocab dtype", "--model.vocab_dtype", "float8", ["model.vocab_dtype", "bfloat16"]),
        ("unknown metric set", "--model.evaluation.metric_set", "poetry", ["model.evaluation.metric_set", "paraphrase"]),
        ("unknown sampler", "--model.sampling.sampler", "magic", ["model.sampling.sampler", "renoise"]),
        ("negative max_steps", "--trainer.max_steps", "-5", ["trainer.max_steps = -5"]),
        ("EMA decay above 1", "--ema.decay", "1.5", ["ema.decay = 1.5"]),
        ("unknown predict split", "--data.init_args.predict_split", "dev", ["data.init_args.predict_split"]),
    ]
    broken_yaml = text(work / "broken.yaml", b"model: [1, 2\n")
    config_cases = [
        Case("unknown model key", [*fit, "--model.not_a_key", "1"], 2, ["not_a_key"]),
        Case("unknown data key", [*fit, "--data.init_args.batchsize", "4"], 2, ["batchsize"]),
        Case("text where a number belongs", [*fit, "--model.sampling.steps", "many"], 1, ["sampling.steps", "expected int"]),
        Case("config file does not exist", ["fit", "--config", str(work / "nope.yaml")], 2, ["nope.yaml"]),
        Case("malformed yaml", ["fit", "--config", str(work / "broken.yaml")], 2, ["broken.yaml:2:1", "invalid yaml"], broken_yaml),
        Case("misspelt nested key", [*fit, "--model.denoiser.widht", "8"], 1, ["model.denoiser.widht", "'width'"]),
        Case("abbreviated key", [*fit, "--model.sampling_step", "3"], 2, ["did you mean '--model.sampling.steps'"]),
        Case("misspelt group key", [*fit, "--model.sampling.step", "3"], 1, ["model.sampling.step", "did you mean 'steps'"]),
        Case("misspelt subcommand", ["fitt", *base_args(work)], 2, ["invalid choice: 'fitt'"]),
        Case(
            "guidance without CFG dropout", [*fit, "--model.sampling.guidance_weight", "1"], 1,
            ["model.sampling.guidance_weight", "cfg_dropout"],
        ),
        Case("token head on the Smoothie space", [*fit, "--model.token_head", "linear"], 1, ["model.token_head", "simplex"]),
        Case(
            "global batch with accumulation",
            [*fit, "--data.init_args.global_batch_size", "4", "--trainer.accumulate_grad_batches", "2"],
            1,
            ["data.init_args.global_batch_size", "accumulate_grad_batches"],
        ),
        Case("unknown if_exists choice", [*fit, "--prediction_writer.if_exists", "append"], 1, ["prediction_writer.if_exists"]),
        Case("embedding path does not exist", [*fit, "--model.embedding", str(work / "no-model")], 1, ["model.embedding", "no-model"]),
        Case("unknown data class", [*fit, "--data.class_path", "smoothie_pl.data.NoSuchData"], 2, ["NoSuchData"]),
        *(Case(name, [*fit, option, value], 1, names) for name, option, value, names in impossible_values),
    ]
    checkpoint_cases = [
        Case("checkpoint does not exist", [*predict, "--ckpt_path", str(work / "no.ckpt")], 1, ["no.ckpt does not exist"]),
        Case(
            "checkpoint is not a zip",
            [*predict, "--ckpt_path", str(work / "text.ckpt")],
            1,
            ["text.ckpt cannot be read", "not the zip"],
            text(work / "text.ckpt", b"hello"),
        ),
        Case(
            "checkpoint without state_dict",
            [*predict, "--ckpt_path", str(work / "plain.ckpt")],
            1,
            ["plain.ckpt is not a Lightning checkpoint"],
            lambda _: __import__("torch").save({"weights": [1, 2]}, work / "plain.ckpt"),
        ),
        Case("predict from the checkpoint", [*predict, "--ckpt_path", ckpt], 0),
        Case(
            "predictions file already exists",
            [*predict, "--ckpt_path", ckpt],
            1,
            ["predictions.jsonl already exists", "if_exists"],
            lambda _: write_existing_predictions(run_dir(work, "predictions file already exists")),
        ),
        Case(
            "data vocabulary differs from the checkpoint's",
            [*predict, "--ckpt_path", ckpt, "--data.init_args.train_file", str(data / "other_train.jsonl")],
            1,
            ["diffuses over", "only in the data", "'river'"],
        ),
        # The embedding model the checkpoint names changed on disk: resuming training from it is refused,
        # while test and predict use the E and tokenizer the checkpoint holds.
        Case(
            "embedding weights changed at the checkpoint's path",
            [*fit, "--ckpt_path", ckpt, "--trainer.max_steps", "4"],
            1,
            ["does not fit this run", "embedding matrix"],
            reseed_embedding,
        ),
        Case("predict takes the checkpoint's own E, whatever is on disk", [*predict, "--ckpt_path", ckpt], 0, []),
        Case(
            "tokenizer at the checkpoint's path gained a token",
            [*fit, "--ckpt_path", ckpt, "--trainer.max_steps", "4"],
            1,
            ["tokenizer: the checkpoint has", "tokenizer_size=30522", "tokenizer_size=30523"],
            add_token_to_embedding,
        ),
        Case("checkpoint fits again with the embedding restored", [*predict, "--ckpt_path", ckpt], 0, [], restore_embedding),
        Case(
            "diverging run stops before saving NaN weights",
            [*fit, "--model.optim.lr", "1e30", "--model.optim.warmup_steps", "0", "--trainer.max_steps", "6"],
            1,
            ["non-finite", "at step", "batch index", "Last good checkpoint"],
        ),
        Case("resuming fit from a non-checkpoint", [*fit, "--ckpt_path", str(work / "text.ckpt")], 1, ["text.ckpt"]),
        Case(
            "crafted pickle as --ckpt_path",
            [*predict, "--ckpt_path", str(work / "crafted.ckpt")],
            1,
            ["crafted.ckpt cannot be read (UnpicklingError)"],
            lambda _: crafted_checkpoint(work / "crafted.ckpt"),
        ),
        Case(
            "crafted pickle as the run's last.ckpt",
            fit,
            0,
            ["skipping checkpoint", "UnpicklingError"],
            lambda _: crafted_checkpoint(run_dir(work, "crafted pickle as the run's last.ckpt") / "checkpoints" / "last.ckpt"),
        ),
        Case(
            "random bytes in the largest record",
            [*predict, "--ckpt_path", str(work / "bytes.ckpt")],
            1,
            ["bytes.ckpt is damaged: tensor", "does not match its stored digest"],
            lambda _: damaged_copy(ckpt, work / "bytes.ckpt", "bytes"),
        ),
        Case(
            "NaN weights",
            [*predict, "--ckpt_path", str(work / "nan.ckpt")],
            1,
            ["nan.ckpt holds non-finite weights: the first is state_dict/"],
            lambda _: damaged_copy(ckpt, work / "nan.ckpt", "nan"),
        ),
        Case(
            "truncated last.ckpt beside an intact one",
            fit,
            0,
            ["skipping checkpoint", "last.ckpt"],
            lambda _: truncated_last_beside_intact(ckpt, run_dir(work, "truncated last.ckpt beside an intact one")),
        ),
        Case(
            widened,  # resumed from its own last.ckpt: --ckpt_path would take the checkpoint's options instead
            [*fit, "--model.denoiser.width", "48"],
            1,
            ["trained with another architecture", "(32, ", "model.denoiser.width: checkpoint 32, this run 48"],
            lambda _: copy_into_run(ckpt, run_dir(work, widened)),
        ),
    ]
    return data_cases + config_cases + checkpoint_cases


# ------------------------------------------------------------------ running
def invoke_in_process(args: list[str]) -> tuple[int | str, list[str]]:
    """Exit status and stderr lines of ``smoothie <args>`` run in this process; an escaping exception is a traceback."""
    from smoothie_pl.cli import run

    stderr = io.StringIO()
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        with warnings.catch_warnings(record=True) as caught:  # recorded, whoever else is watching warnings
            warnings.simplefilter("always")
            try:
                status: int | str = run(args)
            except Exception:
                status = "traceback"
                stderr.write(traceback.format_exc())
    warned = [f"{warning.category.__name__}: {warning.message}" for warning in caught]
    return status, [*warned, *stderr.getvalue().splitlines()]


def invoke_subprocess(args: list[str]) -> tuple[int | str, list[str]]:
    command = [sys.executable, "-m", "smoothie_pl.cli", *args]
    done = subprocess.run(command, capture_output=True, text=True)
    status = "traceback" if "Traceback (most recent call last)" in done.stderr else done.returncode
    return status, done.stderr.splitlines()


def error_line(lines: list[str]) -> str:
    """The first line that says ``error:``, with its indented continuation lines joined on."""
    for number, line in enumerate(lines):
        if "error:" in line:
            continued = []
            for following in lines[number + 1 :]:
                if not following.startswith("  "):
                    break
                continued.append(following.strip())
            return " ".join([line.strip(), *continued])
    return ""


def run_dir(work: Path, name: str) -> Path:
    """Each case's own run folder: a shared one would make a later ``fit`` resume an earlier case's checkpoint."""
    return work / "runs" / re.sub(r"\W+", "-", name).strip("-")


def run_case(case: Case, work: Path, invoke) -> Outcome:
    if case.prepare:
        case.prepare(work)
    status, lines = invoke([*case.args, "--trainer.default_root_dir", str(run_dir(work, case.name))])
    line = error_line(lines)
    if status == "traceback":
        line = lines[-1] if lines else "traceback"
    # A success names its warnings anywhere in stderr; a failure names the problem in its error line.
    named_in = "\n".join(lines) if status == 0 else line
    passed = status == case.expect and all(name in named_in for name in case.names) and (status == 0) == (not line)
    if status == 0 and case.names:
        line = next((text.split("Warning: ", 1)[-1] for text in lines if case.names[0] in text), "")
    return Outcome(status, line, passed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subprocess", action="store_true", help="run every case as its own `smoothie` process")
    parser.add_argument("--only", help="run only the cases whose name contains this text")
    options = parser.parse_args(argv)
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[variable] = "1"
    # torch < 2.6's default: every load that does not ask for weights_only itself would unpickle code.
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    invoke = invoke_subprocess if options.subprocess else invoke_in_process
    transformers.utils.logging.disable_progress_bar()
    with tempfile.TemporaryDirectory(prefix="smoothie-robustness-") as scratch:
        work = Path(scratch)
        previous = os.getcwd()
        os.chdir(work)
        try:
            prepare_workspace(work)
            selected = [case for case in cases(work) if not options.only or options.only in case.name]
            width = max(len(case.name) for case in selected)
            print(f"{'case':<{width}}  exit  ok  first error line (of a success: its warning)")
            failures = 0
            for case in selected:
                outcome = run_case(case, work, invoke)
                failures += not outcome.passed
                shown = outcome.line.replace(scratch, "$WORK")
                verdict = "ok" if outcome.passed else "NO"
                print(f"{case.name:<{width}}  {outcome.status!s:>4}  {verdict}  {shown[:150]}", flush=True)
                if not outcome.passed:
                    print(f"    expected exit {case.expect} naming {case.names}; the whole line: {shown}")
        finally:
            os.chdir(previous)
    print(f"{len(selected) - failures} of {len(selected)} cases end as expected")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
