"""The ``README.md`` of an exported model: what it was trained on, for how long, its scores, how to use it."""

from __future__ import annotations

from pathlib import Path

from smoothie_pl.embeddings import PACKAGED_MODEL

PREDICTIONS_FILE = "predictions.jsonl"


def run_folder(checkpoint: Path) -> Path:
    """The run a checkpoint belongs to (``<run>/checkpoints/x.ckpt`` or ``<run>/x.ckpt``)."""
    folder = checkpoint.resolve().parent
    return folder.parent if folder.name == "checkpoints" else folder


def prediction_scores(run: Path) -> dict[str, float]:
    """SacreBLEU of the run's ``predictions.jsonl`` when it has one with references."""
    from smoothie_pl.report import corpus_sacrebleu, read_predictions

    path = run / PREDICTIONS_FILE
    if not path.is_file():
        return {}
    try:
        records = read_predictions(path)
    except ValueError:  # not a predictions file
        return {}
    if not all("reference" in record for record in records):  # inference-only predictions
        return {}
    predictions, references = [r["prediction"] for r in records], [r["reference"] for r in records]
    return {f"{PREDICTIONS_FILE} SacreBLEU ({len(records)} pairs)": corpus_sacrebleu(predictions, references)}


def model_card(saved, checkpoint: Path) -> str:
    """Markdown for a ``SavedModel`` exported from ``checkpoint``."""
    hp, training, state = saved.hyper_parameters, saved.training, saved.state
    data = training.get("data", {})
    denoiser, sampling = hp.get("denoiser", {}), hp.get("sampling", {})
    constants = ("embedding_matrix", "source_embedding_matrix", "vocabulary")
    parameters = sum(value.numel() for key, value in state.items() if key not in constants)
    rows, dim = state["embedding_matrix"].shape
    trained_on = data.get("datamodule", "not recorded")
    if data.get("files"):
        trained_on += " (" + ", ".join(f"{split}: {path}" for split, path in data["files"].items()) + ")"
    if data.get("train_pairs"):
        trained_on += f", {data['train_pairs']:,} training pairs"
    lines = [
        "# Smoothie text diffusion model",
        "",
        f"Exported by smoothie-pl from `{checkpoint.name}` of the run `{run_folder(checkpoint)}`.",
        "",
        f"- Trained on: {trained_on}",
        f"- Training: {training.get('global_step', '?')} optimizer steps (saved in epoch {training.get('epoch', '?')}, "
        "counted from 0)",
        f"- Embedding: {hp.get('embedding') or PACKAGED_MODEL}, E of {rows:,} x {dim} "
        f"({'trained' if hp.get('train_embeddings') else 'frozen, standardised'}), "
        f"diffused over {state['vocabulary'].numel():,} tokens",
        f"- Space and schedule: {hp.get('space', 'smoothie')}, {hp.get('schedule', {}).get('name', 'default')}",
        f"- Denoiser: width {denoiser.get('width')}, depth {denoiser.get('depth')}, heads {denoiser.get('heads')}, "
        f"source encoder {denoiser.get('source_encoder')}; {parameters:,} trained parameters",
        f"- Lengths: target {hp.get('target_length')}, source {hp.get('source_length')} tokens",
        f"- Sampling: {sampling.get('sampler')} sampler, {sampling.get('steps')} steps, "
        f"noise scale {sampling.get('noise_scale')}, {sampling.get('mbr_candidates')} MBR candidate(s)",
        "",
        "## Scores",
        "",
    ]
    found = {**training.get("scores", {}), **prediction_scores(run_folder(checkpoint))}
    if found:
        lines += ["| metric | value |", "|---|---|", *(f"| {name} | {value:.4g} |" for name, value in found.items())]
        lines += ["", "Validation numbers are those logged last before the checkpoint was saved."]
    else:
        lines.append("No scores were recorded with this checkpoint or found in its run folder.")
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        "echo 'a source sentence' | smoothie generate --model THIS_FOLDER --input - --output -",
        "```",
        "",
        "```python",
        "from smoothie_pl import SmoothieModule",
        "",
        'model = SmoothieModule.from_pretrained("THIS_FOLDER")',
        'print(model.generate(["a source sentence"]))',
        "```",
        "",
    ]
    return "\n".join(lines)
