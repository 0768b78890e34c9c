"""DataModules: a shared seq2seq base, users' jsonl files and the bundled Bible demo task."""

from smoothie_pl.data.base import Pair, Seq2SeqDataModule
from smoothie_pl.data.bible import BibleDataModule
from smoothie_pl.data.jsonl import JsonlDataModule

__all__ = ["BibleDataModule", "JsonlDataModule", "Pair", "Seq2SeqDataModule"]
