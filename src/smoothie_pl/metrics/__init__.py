"""torchmetrics metrics for text generation; every corpus is kept as DDP-reducible tensor state."""

from .bertscore import BERTScoreF1
from .bleu import CorpusBLEU, SacreBLEU
from .diversity import Diversity, DistinctN, MeanLength, SelfBLEU
from .jscore import JScore
from .mauve import MAUVE
from .mbr import mbr_select
from .perplexity import Perplexity
from .rouge import ROUGE
from .sari import SARI
from .sets import METRIC_SETS, TextMetrics

__all__ = [
    "BERTScoreF1",
    "CorpusBLEU",
    "Diversity",
    "DistinctN",
    "JScore",
    "MAUVE",
    "METRIC_SETS",
    "MeanLength",
    "Perplexity",
    "ROUGE",
    "SARI",
    "SacreBLEU",
    "SelfBLEU",
    "TextMetrics",
    "mbr_select",
]
