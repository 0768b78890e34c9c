"""``smoothie export --ckpt_path X --output DIR``: a checkpoint as a self-contained model folder."""

from __future__ import annotations

import argparse

from smoothie_pl.export import CARD_FILE, export_checkpoint


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smoothie export", description="Write a checkpoint as a self-contained model folder."
    )
    parser.add_argument("--ckpt_path", required=True, help="the Lightning checkpoint to export")
    parser.add_argument("--output", required=True, help="the folder to write (model.safetensors, config.json, ...)")
    parser.add_argument("--overwrite", action="store_true", help="write into a folder that already holds files")
    return parser


def main(argv: list[str]) -> int:
    arguments = build_parser().parse_args(argv)
    folder = export_checkpoint(arguments.ckpt_path, arguments.output, arguments.overwrite)
    print(f"exported {arguments.ckpt_path} to {folder} (model card: {folder / CARD_FILE})")
    return 0
