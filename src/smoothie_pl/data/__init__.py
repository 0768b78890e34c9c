"""DataModules: a shared seq2seq base, users' jsonl files, the bundled Bible demo and the paper's tasks."""

from smoothie_pl.data.base import Pair, Seq2SeqDataModule
from smoothie_pl.data.bible import BibleDataModule
from smoothie_pl.data.jsonl import JsonlDataModule
from smoothie_pl.data.tasks import (
    IWSLT14DataModule,
    NewselaAutoDataModule,
    ParaDetoxDataModule,
    QQPDataModule,
    QuasarTDataModule,
    ROCStoriesDataModule,
    TaskDataModule,
    WMT14DataModule,
    XSumDataModule,
)

__all__ = [
    "BibleDataModule",
    "IWSLT14DataModule",
    "JsonlDataModule",
    "NewselaAutoDataModule",
    "Pair",
    "ParaDetoxDataModule",
    "QQPDataModule",
    "QuasarTDataModule",
    "ROCStoriesDataModule",
    "Seq2SeqDataModule",
    "TaskDataModule",
    "WMT14DataModule",
    "XSumDataModule",
]
