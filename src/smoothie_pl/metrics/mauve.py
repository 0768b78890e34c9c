"""MAUVE (Pillutla et al., 2021): how close the distribution of generations is to that of human text."""

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from ._hf import LazyModel, causal_lm_batches, require_model
from ._text import reference_lists


def pca_project(data: torch.Tensor, explained_variance: float) -> torch.Tensor:
    """Centre, then keep the fewest principal components explaining ``explained_variance``."""
    centred = data - data.mean(dim=0)
    _, singular, components = torch.linalg.svd(centred, full_matrices=False)
    ratio = (singular**2).cumsum(0) / (singular**2).sum().clamp(min=1e-12)
    keep = int((ratio < explained_variance).sum().item()) + 1
    return centred @ components[:keep].T


def kmeans(data: torch.Tensor, k: int, restarts: int, iterations: int, generator: torch.Generator) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding; labels of the restart with the lowest inertia."""
    best_inertia, best_labels = math.inf, None
    for _ in range(restarts):
        centres = data[torch.randint(len(data), (1,), generator=generator)]
        while len(centres) < k:
            nearest = torch.cdist(data, centres).min(dim=1).values ** 2
            weights = nearest if nearest.sum() > 0 else torch.ones_like(nearest)
            centres = torch.cat([centres, data[torch.multinomial(weights, 1, generator=generator)]])
        for _ in range(iterations):
            labels = torch.cdist(data, centres).argmin(dim=1)
            sums = torch.zeros_like(centres).index_add_(0, labels, data)
            sizes = torch.bincount(labels, minlength=k).unsqueeze(1)
            moved = torch.where(sizes > 0, sums / sizes.clamp(min=1), centres)
            if torch.equal(moved, centres):
                break
            centres = moved
        distances = torch.cdist(data, centres).min(dim=1)
        inertia = (distances.values**2).sum().item()
        if inertia < best_inertia:
            best_inertia, best_labels = inertia, distances.indices
    return best_labels


def _kl(p: torch.Tensor, r: torch.Tensor) -> float:
    support = p > 0
    return (p[support] * (p[support] / r[support]).log()).sum().item()


def mauve_from_histograms(p: torch.Tensor, q: torch.Tensor, points: int = 25, scaling: float = 5.0) -> float:
    """Area under the divergence frontier (exp(-c KL(Q|R)), exp(-c KL(P|R))), R = wP + (1-w)Q."""
    curve = [(1.0, 0.0)]
    for w in torch.linspace(1e-6, 1 - 1e-6, points, dtype=torch.float64).tolist():
        r = w * p + (1 - w) * q
        curve.append((math.exp(-scaling * _kl(q, r)), math.exp(-scaling * _kl(p, r))))
    curve.append((0.0, 1.0))
    area = sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in zip(curve, curve[1:]))
    return abs(area)


class MAUVE(Metric):
    """MAUVE score (0-1) of predictions against references, features from causal LM ``model``.

    Features: the last-layer hidden state at the last token of each text (BOS prepended
    when the tokenizer has one), as in the ``mauve-text`` package. Predictions and
    references are embedded jointly: L2-normalised, PCA to ``explained_variance``,
    quantised by k-means into ``num_buckets`` clusters (default: one per ten texts of the
    smaller side, at least 2), and MAUVE is the area under the divergence frontier of the
    two cluster histograms with scaling 5 and 25 mixture weights.

    Simplified: PCA and k-means are implemented here in torch (k-means++ seeding, fixed
    ``seed``, best of ``restarts``) instead of scikit-learn, so values are close to but not
    bit-identical with ``mauve-text``. ``model`` (name or local path) is required: there is
    no default, so nothing is downloaded. Under DDP the features are gathered in rank
    order, so k-means sees the same data on every rank.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        model: str | None = None,
        num_buckets: int | None = None,
        explained_variance: float = 0.9,
        restarts: int = 5,
        iterations: int = 500,
        seed: int = 25,
        max_length: int = 1024,
        batch_size: int = 16,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self._lm = LazyModel(require_model(model, "model", "MAUVE", "causal language model"), head="causal_lm")
        self.num_buckets = num_buckets
        self.explained_variance = explained_variance
        self.restarts = restarts
        self.iterations = iterations
        self.seed = seed
        self.max_length = max_length
        self.batch_size = batch_size
        # Features are stored flattened (1-D) so an empty rank's placeholder has the same rank.
        self.add_state("p_features", default=[], dist_reduce_fx="cat")
        self.add_state("q_features", default=[], dist_reduce_fx="cat")
        self.add_state("p_count", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("q_count", default=torch.tensor(0), dist_reduce_fx="sum")

    @torch.no_grad()
    def _features(self, texts: list[str]) -> torch.Tensor:
        tokenizer, model = self._lm.get(self.device)
        features = []
        for input_ids, attention_mask in causal_lm_batches(
            tokenizer, texts, self.max_length, self.batch_size, self.device
        ):
            out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
            hidden = out.hidden_states[-1]
            last = (attention_mask.sum(dim=1) - 1).clamp(min=0)
            features.append(hidden[torch.arange(len(hidden), device=hidden.device), last])
        return torch.cat(features).to(self.dtype).flatten()

    def update(self, predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]) -> None:
        """Predictions and references need not pair up: each side is a sample of its distribution."""
        references = [ref for refs in reference_lists(references) for ref in refs]
        if predictions:
            self.p_features.append(self._features(list(predictions)))
            self.p_count += len(predictions)
        if references:
            self.q_features.append(self._features(references))
            self.q_count += len(references)

    def compute(self) -> torch.Tensor:
        n_p, n_q = int(self.p_count), int(self.q_count)
        if n_p == 0 or n_q == 0:
            return torch.tensor(0.0, dtype=torch.float64)
        p = dim_zero_cat(self.p_features).double().cpu().view(n_p, -1)
        q = dim_zero_cat(self.q_features).double().cpu().view(n_q, -1)
        data = pca_project(F.normalize(torch.cat([p, q]), dim=1), self.explained_variance)
        k = min(self.num_buckets or max(2, round(min(n_p, n_q) / 10)), n_p + n_q)
        generator = torch.Generator().manual_seed(self.seed)
        labels = kmeans(data, k, self.restarts, self.iterations, generator)
        p_hist = torch.bincount(labels[:n_p], minlength=k).double() / n_p
        q_hist = torch.bincount(labels[n_p:], minlength=k).double() / n_q
        return torch.tensor(mauve_from_histograms(p_hist, q_hist), dtype=torch.float64)
