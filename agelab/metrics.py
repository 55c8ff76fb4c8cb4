"""Metrics shared by training and evaluation.

``AgeMetrics`` takes a head's decoded predictions and the batch, and computes everything the
data allows: MAE, the cumulative-score curve CS(0..15) and MAE per age band / gender / race where
ages are known; exact and one-off accuracy, macro precision / recall / F1 and the 8x8 confusion
matrix where Adience groups are known. An age head evaluated on group data has its predicted
ages mapped to groups (``agelab.groups.age_to_group``).

Every update is free of data-dependent shapes (masks and scatter-adds, no boolean indexing,
bincount or one-hot), so a training step never waits for the GPU to finish; the classification
scores are derived from one confusion matrix for that reason (torchmetrics' classification
updates read their inputs back to the host).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn
from torchmetrics import Metric

from agelab.data.attributes import GENDER_CODES, RACE_NAMES
from agelab.groups import GROUP_BOUNDS, NUM_GROUPS

# Age bands for the per-band MAE: 0-9, 10-19, ..., 60-69, 70+.
BAND_EDGES = (10, 20, 30, 40, 50, 60, 70)
BAND_NAMES = tuple(f"{lo}-{lo + 9}" for lo in (0, *BAND_EDGES[:-1])) + (f"{BAND_EDGES[-1]}plus",)
GENDER_NAMES = tuple(GENDER_CODES)  # ("f", "m"): batch["gender"] 0 female, 1 male, -1 unknown
# Multiples k of the predicted spread (std) for the coverage curve: 0.05, 0.10, ..., 4.00.
SPREAD_MULTIPLES = tuple(round(0.05 * i, 2) for i in range(1, 81))
ONE_STD = SPREAD_MULTIPLES.index(1.0)
NOMINAL_COVERAGE = math.erf(1 / math.sqrt(2))  # 0.6827: a normal error within one standard deviation


def expected_coverage(k: float) -> float:
    """Share of a normal error within k standard deviations: what ``± k std`` promises."""
    return math.erf(k / math.sqrt(2))


@functools.lru_cache(maxsize=None)
def _constant(values: tuple, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A small constant on the device, copied there once: torch.tensor(..., device=cuda) each step
    would be a blocking copy from pageable memory (the CPU waits for the GPU)."""
    return torch.tensor(values, device=device, dtype=dtype)


def ages_to_groups(ages: torch.Tensor) -> torch.Tensor:
    """Adience group index of each age (a torch version of agelab.groups.age_to_group)."""
    return torch.bucketize(ages.double(), _constant(GROUP_BOUNDS, ages.device, torch.float64), right=True)


def gender_tensor(values, device=None) -> torch.Tensor:
    """Gender codes 0 (f) / 1 (m) / -1 (unknown) from a tensor of codes or a list of "f"/"m" strings."""
    if isinstance(values, torch.Tensor):
        codes = values.to(device=device, dtype=torch.long)
        return torch.where((codes == 0) | (codes == 1), codes, torch.full_like(codes, -1))
    lookup = {**GENDER_CODES, 0: 0, 1: 1}
    return torch.tensor([lookup.get(str(v).lower() if isinstance(v, str) else v, -1) for v in values],
                        device=device, dtype=torch.long)


class CumulativeScore(Metric):
    """CS(theta): share of faces with |predicted - true age| <= theta, for theta = 0..max_theta."""

    full_state_update = False

    def __init__(self, max_theta: int = 15):
        super().__init__()
        self.max_theta = max_theta
        self.add_state("hits", default=torch.zeros(max_theta + 1, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, known: torch.Tensor | None = None) -> None:
        err = (preds.double() - target.double()).abs()
        weight = torch.ones_like(err) if known is None else known.double()
        err = torch.where(weight > 0, err, torch.zeros_like(err))
        thetas = torch.arange(self.max_theta + 1, device=err.device, dtype=err.dtype)
        self.hits += ((err[:, None] <= thetas[None, :]) * weight[:, None]).sum(0)
        self.total += weight.sum()

    def compute(self) -> torch.Tensor:
        """The whole curve: element theta is CS(theta)."""
        return (self.hits / self.total.clamp_min(1)).float()


class SpreadCoverage(Metric):
    """Coverage of the predicted spread: the share of faces whose true age lies within k predicted
    standard deviations of the predicted age, for each k in SPREAD_MULTIPLES."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("hits", default=torch.zeros(len(SPREAD_MULTIPLES), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, abs_error: torch.Tensor, std: torch.Tensor, known: torch.Tensor) -> None:
        valid = known & torch.isfinite(std)
        weight = valid.double()
        ks = _constant(SPREAD_MULTIPLES, abs_error.device, torch.float64)
        inside = abs_error.double()[:, None] <= torch.where(valid, std.double(), torch.zeros_like(weight))[:, None] * ks
        self.hits += (inside * weight[:, None]).sum(0)
        self.total += weight.sum()

    def compute(self) -> torch.Tensor:
        """The curve: element i is the observed coverage at SPREAD_MULTIPLES[i] standard deviations."""
        return (self.hits / self.total.clamp_min(1)).float()


def spread_multiple(curve: torch.Tensor, share: float = NOMINAL_COVERAGE) -> float:
    """The multiple of the predicted std within which ``share`` of the true ages lie, read off a
    coverage curve (linear between its points; its last multiple when even that covers less)."""
    ks, observed = [0.0, *SPREAD_MULTIPLES], [0.0, *curve.tolist()]
    for i in range(1, len(ks)):
        if observed[i] >= share:
            step = observed[i] - observed[i - 1]
            return ks[i - 1] + (ks[i] - ks[i - 1]) * ((share - observed[i - 1]) / step if step > 0 else 1.0)
    return ks[-1]


class GroupedAbsoluteError(Metric):
    """Sum of |error| and count per category (age band, gender, race): MAE per category."""

    full_state_update = False

    def __init__(self, num_categories: int):
        super().__init__()
        self.num_categories = num_categories
        self.add_state("error_sum", default=torch.zeros(num_categories, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros(num_categories, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, abs_error: torch.Tensor, category: torch.Tensor, known: torch.Tensor) -> None:
        valid = known & (category >= 0) & (category < self.num_categories)
        index = torch.where(valid, category, torch.zeros_like(category)).long()
        weight = valid.double()
        error = torch.where(valid, abs_error.double(), torch.zeros_like(abs_error, dtype=torch.float64))
        self.error_sum.scatter_add_(0, index, error * weight)
        self.count.scatter_add_(0, index, weight)

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(MAE per category, NaN where a category had no faces; faces per category)."""
        mae = torch.where(self.count > 0, self.error_sum / self.count.clamp_min(1), torch.full_like(self.count, float("nan")))
        return mae, self.count.clone()


class ConfusionCounts(Metric):
    """Counts of (true class, predicted class) pairs; targets outside 0..num_classes-1 are ignored."""

    full_state_update = False

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.add_state("counts", default=torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        n = self.num_classes
        preds, target = preds.long().reshape(-1), target.long().reshape(-1)
        valid = (target >= 0) & (target < n) & (preds >= 0) & (preds < n)
        cell = torch.where(valid, target * n + preds, torch.zeros_like(target))
        self.counts.view(-1).scatter_add_(0, cell, valid.long())

    def compute(self) -> torch.Tensor:
        """(num_classes, num_classes) counts, rows = true class."""
        return self.counts.clone()


def classification_scores(confusion: torch.Tensor) -> dict[str, torch.Tensor]:
    """Accuracy and macro precision / recall / F1 from confusion counts (rows = true class).

    Macro averages run over the classes that occur in the targets or the predictions, and a score
    with a zero denominator counts as 0 (the conventions of torchmetrics and scikit-learn).
    """
    counts = confusion.double()
    tp = counts.diagonal()
    predicted, actual = counts.sum(0), counts.sum(1)

    def ratio(num, den):
        return torch.where(den > 0, num / den.clamp_min(1e-12), torch.zeros_like(num))

    precision, recall = ratio(tp, predicted), ratio(tp, actual)
    f1 = ratio(2 * tp, predicted + actual)
    present = ((predicted + actual) > 0).double()

    def macro(score):
        return (score * present).sum() / present.sum().clamp_min(1)

    return {"acc": (tp.sum() / counts.sum().clamp_min(1)).float(), "precision": macro(precision).float(),
            "recall": macro(recall).float(), "f1": macro(f1).float()}


class AgeMetrics(nn.Module):
    """All metrics of one stage: ``update(decoded, batch)`` per batch, ``compute()`` once, ``reset()``.

    ``compute()`` returns only what the data allowed (keys with no faces behind them are left out):
    scalars ``mae``, ``cs5``, ``mae_age_<band>``, ``mae_gender_<f|m>``, ``mae_race_<name>`` (RACE_NAMES),
    ``n_age`` and the faces behind each breakdown (``n_age_<band>``, ``n_gender_<f|m>``, ``n_race_<name>``),
    ``acc``, ``one_off``, ``precision``, ``recall``, ``f1`` (macro), ``n_group``, ``gender_acc``,
    ``spread_coverage`` (the share of true ages within ± one predicted std; 0.68 when the spread is
    calibrated); and ``spread_curve`` (that share at each of SPREAD_MULTIPLES), ``cs_curve`` (CS(0..max_theta)), ``confusion`` (8x8 counts, rows = true group) and
    ``confusion_normalized`` (rows sum to 1). ``spread=False`` leaves out the spread's coverage; ``breakdowns=False`` leaves out the MAE by age band, gender
    and race (and their counts).
    """

    def __init__(self, max_theta: int = 15, breakdowns: bool = True, spread: bool = True):
        super().__init__()
        self.breakdowns = breakdowns  # MAE by age band, gender, race (off: a few kernels less per batch)
        self.with_spread = spread  # the spread's coverage (off: training steps skip its kernels)
        self.abs_error = GroupedAbsoluteError(1)  # overall MAE (with the count of known ages)
        self.cs = CumulativeScore(max_theta)
        self.spread = SpreadCoverage()
        self.by_band = GroupedAbsoluteError(len(BAND_NAMES))
        self.by_gender = GroupedAbsoluteError(len(GENDER_NAMES))
        self.by_race = GroupedAbsoluteError(len(RACE_NAMES))
        self.confusion = ConfusionCounts(NUM_GROUPS)
        self.gender_confusion = ConfusionCounts(len(GENDER_NAMES))

    @torch.no_grad()
    def update(self, decoded: dict, batch: dict) -> None:
        pred_age = decoded.get("age")
        if pred_age is not None and batch.get("age") is not None:
            pred_age = pred_age.detach().float()
            age = torch.as_tensor(batch["age"], device=pred_age.device).float()
            known = torch.isfinite(age)
            age = torch.where(known, age, torch.zeros_like(age))
            error = (pred_age - age).abs()
            self.abs_error.update(error, torch.zeros_like(age, dtype=torch.long), known)
            self.cs.update(pred_age, age, known)
            if self.with_spread and decoded.get("std") is not None:
                self.spread.update(error, decoded["std"].detach().float(), known)
            if self.breakdowns:
                bands = torch.bucketize(age, _constant(BAND_EDGES, age.device, age.dtype), right=True)
                self.by_band.update(error, bands, known)
                if batch.get("gender") is not None:
                    self.by_gender.update(error, gender_tensor(batch["gender"], age.device), known)
                if isinstance(batch.get("race"), torch.Tensor):
                    self.by_race.update(error, batch["race"].to(age.device).long(), known)

        if batch.get("group") is not None:
            if "group" in decoded:
                pred_group = decoded["group"].detach().long()
            elif pred_age is not None:
                pred_group = ages_to_groups(pred_age)
            else:
                pred_group = None
            if pred_group is not None:
                self.confusion.update(pred_group, torch.as_tensor(batch["group"], device=pred_group.device))

        if "gender" in decoded and batch.get("gender") is not None:
            self.gender_confusion.update(decoded["gender"].detach(), gender_tensor(batch["gender"], decoded["gender"].device))

    def compute(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        # (torchmetrics squeezes one-element results, hence the reshapes)
        mae, n_age = self.abs_error.compute() if self.abs_error.update_count else (torch.zeros(1), torch.zeros(1))
        mae, n_age = mae.reshape(-1)[0], n_age.reshape(-1)[0]
        if n_age > 0:
            out["n_age"] = n_age
            out["mae"] = mae.float()
            out["cs_curve"] = self.cs.compute()
            out["cs5"] = out["cs_curve"][min(5, len(out["cs_curve"]) - 1)]
            if self.spread.update_count and self.spread.total > 0:
                out["spread_curve"] = self.spread.compute()
                out["spread_coverage"] = out["spread_curve"][ONE_STD]
            for prefix, metric, names in (("mae_age", self.by_band, BAND_NAMES),
                                          ("mae_gender", self.by_gender, GENDER_NAMES),
                                          ("mae_race", self.by_race, RACE_NAMES)):
                if not metric.update_count:
                    continue
                values, counts = (t.reshape(-1) for t in metric.compute())
                for name, value, count in zip(names, values, counts):
                    if count > 0:  # with its face count, so folds can be pooled per band (see results.pooled)
                        out[f"{prefix}_{name}"] = value.float()
                        out[f"n_{prefix[len('mae_'):]}_{name}"] = count
        confusion = self.confusion.compute() if self.confusion.update_count else torch.zeros(1)
        n_group = confusion.sum()
        if n_group > 0:
            out["n_group"] = n_group.double()
            out.update(classification_scores(confusion))
            rows, cols = torch.meshgrid(torch.arange(NUM_GROUPS), torch.arange(NUM_GROUPS), indexing="ij")
            near = ((rows - cols).abs() <= 1).to(confusion.device)
            out["one_off"] = (confusion * near).sum().float() / n_group
            out["confusion"] = confusion
            out["confusion_normalized"] = confusion.float() / confusion.sum(1, keepdim=True).clamp_min(1)
        gender = self.gender_confusion.compute() if self.gender_confusion.update_count else torch.zeros(1)
        if gender.sum() > 0:
            out["gender_acc"] = classification_scores(gender)["acc"]
        return out

    def reset(self) -> None:
        for metric in (self.abs_error, self.cs, self.spread, self.by_band, self.by_gender, self.by_race, self.confusion,
                       self.gender_confusion):
            metric.reset()
