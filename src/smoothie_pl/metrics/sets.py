"""Per-task metric sets (tracked metric first) and :class:`TextMetrics`, the container that runs one."""

import inspect
import logging
from collections.abc import Sequence

import torch

from ._text import Tokenizer
from .bertscore import BERTScoreF1
from .bleu import CorpusBLEU, SacreBLEU
from .diversity import DistinctN, Diversity
from .jscore import JScore
from .mauve import MAUVE
from .perplexity import Perplexity
from .rouge import ROUGE
from .sari import SARI

log = logging.getLogger(__name__)

METRIC_SETS: dict[str, tuple[str, ...]] = {
    "paraphrase": ("bertscore", "bleu", "rougeL", "div1", "div4"),
    "summarization": ("rougeL", "bleu", "bertscore", "rouge1", "rouge2"),
    "simplification": ("sari", "bleu", "bertscore", "rougeL"),
    "translation": ("sacrebleu", "bleu"),
    "unconditional": ("diversity", "mauve", "perplexity"),
    "detoxification": ("jscore", "sta", "sim", "fl", "bleu", "sacrebleu", "perplexity"),
    "demo": ("sacrebleu", "bleu", "rougeL", "div4"),
}
_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
# Reported names computed by a metric of another name (one ROUGE or J-score pass gives them all).
_METRIC_OF = {**dict.fromkeys(_ROUGE_TYPES, "rouge"), **dict.fromkeys(("sta", "sim", "fl"), "jscore")}


class TextMetrics(torch.nn.Module):
    """The metrics of one task set, updated together and computed to ``{name: float}``.

    Model-based metrics run only when their model is given (``bertscore_model``: an
    encoder; ``causal_lm``: for MAUVE and perplexity; ``jscore``: the keyword arguments of
    :class:`JScore`, its three models first), otherwise they are skipped and the
    reason is added to ``notes``. ``tracked`` is the first metric that remains, the one to
    monitor for checkpointing. ``bleu_tokenizer`` is passed to :class:`CorpusBLEU`,
    ``bertscore_num_layers`` to :class:`BERTScoreF1` (default: ``bert-score``'s layer).
    Being an ``nn.Module``, it moves with the LightningModule that owns it.
    """

    def __init__(
        self,
        task: str,
        *,
        bleu_tokenizer: Tokenizer | str | None = None,
        bertscore_model: str | None = None,
        bertscore_num_layers: int | None = None,
        causal_lm: str | None = None,
        jscore: dict | None = None,
    ) -> None:
        super().__init__()
        if task not in METRIC_SETS:
            raise ValueError(f"Unknown metric set {task!r}; choose from {sorted(METRIC_SETS)}")
        models = {
            "bertscore": ("bertscore_model", bertscore_model),
            "mauve": ("causal_lm", causal_lm),
            "perplexity": ("causal_lm", causal_lm),
            "jscore": ("jscore", jscore),
        }
        self.names: list[str] = []
        skipped: dict[str, list[str]] = {}
        for name in METRIC_SETS[task]:
            key = _METRIC_OF.get(name, name)
            if key in models and not models[key][1]:
                skipped.setdefault(key, []).append(name)
            else:
                self.names.append(name)
        self.notes = [f"{task}: skipped {', '.join(names)}, no `{models[key][0]}` given" for key, names in skipped.items()]
        for note in self.notes:
            log.info(note)
        self.tracked = self.names[0]
        builders = {
            "bleu": lambda: CorpusBLEU(bleu_tokenizer),
            "sacrebleu": SacreBLEU,
            "rouge": lambda: ROUGE([t for t in self.names if t in _ROUGE_TYPES]),
            "div1": lambda: DistinctN(1),
            "div4": lambda: DistinctN(4),
            "sari": SARI,
            "bertscore": lambda: BERTScoreF1(bertscore_model, bertscore_num_layers),
            "diversity": Diversity,
            "mauve": lambda: MAUVE(causal_lm),
            "perplexity": lambda: Perplexity(causal_lm),
            "jscore": lambda: JScore(**jscore),
        }
        keys = dict.fromkeys(_METRIC_OF.get(name, name) for name in self.names)
        self.metrics = torch.nn.ModuleDict({key: builders[key]() for key in keys})

    def update(
        self,
        sources: Sequence[str] | None = None,
        predictions: Sequence[str] | None = None,
        references: Sequence[str] | Sequence[Sequence[str]] | None = None,
    ) -> None:
        """Feed each metric the inputs its ``update`` takes (by parameter name)."""
        batch = {"sources": sources, "predictions": predictions, "references": references}
        for metric in self.metrics.values():
            wanted = inspect.signature(metric.update).parameters
            metric.update(**{k: v for k, v in batch.items() if k in wanted})

    def compute(self) -> dict[str, float]:
        values: dict[str, torch.Tensor] = {}
        for key, metric in self.metrics.items():
            result = metric.compute()
            values.update(result if isinstance(result, dict) else {key: result})
        return {name: float(values[name]) for name in self.names}

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()
