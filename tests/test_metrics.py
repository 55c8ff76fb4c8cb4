"""AgeMetrics on hand-made predictions with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agelab.groups import age_to_group
from agelab.metrics import (NOMINAL_COVERAGE, SPREAD_MULTIPLES, AgeMetrics, CumulativeScore, ages_to_groups,
                            gender_tensor, spread_multiple)

NAN = float("nan")
TARGETS = [0, 1, 2, 3, 4, 5, 6, 7, 4, 4]
PREDS = [0, 2, 2, 3, 5, 5, 3, 7, 4, 1]  # 6 exact, 2 more within one group, 2 off by three


def group_batch(preds, targets):
    return {"group": torch.tensor(preds)}, {"group": torch.tensor(targets), "age": torch.full((len(targets),), NAN)}


def test_group_accuracy_one_off_and_confusion_matrix():
    metrics = AgeMetrics()
    metrics.update(*group_batch(PREDS[:4], TARGETS[:4]))  # two batches accumulate
    metrics.update(*group_batch(PREDS[4:], TARGETS[4:]))
    out = metrics.compute()
    assert out["acc"].item() == pytest.approx(0.6)
    assert out["one_off"].item() == pytest.approx(0.8)
    confusion = out["confusion"]
    assert confusion.shape == (8, 8) and confusion.sum() == 10 and out["n_group"] == 10
    assert confusion[4].tolist() == [0, 1, 0, 0, 1, 1, 0, 0]  # true 25-32: one right, one to 4-6, one to 38-43
    assert confusion[6, 3] == 1 and confusion.diagonal().sum() == 6
    assert torch.allclose(out["confusion_normalized"][4], torch.tensor([0, 1, 0, 0, 1, 1, 0, 0]) / 3.0)
    # Per class (true rows / predicted columns), by hand:
    recall = [1, 0, 1, 1, 1 / 3, 1, 0, 1]
    precision = [1, 0, 1 / 2, 1 / 2, 1, 1 / 2, 0, 1]
    f1 = [2 * p * r / (p + r) if p + r else 0 for p, r in zip(precision, recall)]
    assert out["recall"].item() == pytest.approx(np.mean(recall), rel=1e-5)
    assert out["precision"].item() == pytest.approx(np.mean(precision), rel=1e-5)
    assert out["f1"].item() == pytest.approx(np.mean(f1), rel=1e-5)
    assert "mae" not in out and "cs_curve" not in out  # no ages known

    metrics.reset()
    assert metrics.compute() == {}


def test_an_age_head_on_group_data_is_scored_through_age_to_group():
    metrics = AgeMetrics()
    # 14 lies half way between 8-13 and 15-20: ties go to the older group, as in agelab.groups.
    metrics.update({"age": torch.tensor([1.0, 30.0, 70.0, 14.0, 34.0])},
                   {"age": torch.full((5,), NAN), "group": torch.tensor([0, 4, 7, 3, 5])})
    out = metrics.compute()
    assert out["acc"].item() == pytest.approx(0.8)  # 34 -> 25-32, one group off
    assert out["one_off"].item() == pytest.approx(1.0)


def test_ages_to_groups_agrees_with_agelab_groups():
    ages = np.arange(0, 101, 0.25)
    assert ages_to_groups(torch.tensor(ages)).tolist() == list(age_to_group(ages))


def test_mae_cs_curve_and_mae_per_band_gender_race():
    metrics = AgeMetrics()
    preds = torch.tensor([5.0, 12.0, 30.0, 75.0, 40.0, 50.0])
    batch = {"age": torch.tensor([3.0, 10.0, 31.0, 70.0, 50.0, NAN]),  # errors 2, 2, 1, 5, 10; last unknown
             "group": torch.full((6,), -1), "gender": torch.tensor([0, 1, 1, -1, 0, 1]),
             "race": torch.tensor([0, 0, 1, 2, -1, 0])}
    metrics.update({"age": preds}, batch)
    out = metrics.compute()
    assert out["n_age"] == 5 and out["mae"].item() == pytest.approx(4.0)
    curve = out["cs_curve"]
    assert curve.shape == (16,)
    assert curve[[0, 1, 2, 4, 5, 9, 10, 15]].tolist() == pytest.approx([0, 0.2, 0.6, 0.6, 0.8, 0.8, 1.0, 1.0])
    assert out["cs5"].item() == pytest.approx(0.8)
    bands = {k: round(v.item(), 4) for k, v in out.items() if k.startswith("mae_age_")}
    assert bands == {"mae_age_0-9": 2, "mae_age_10-19": 2, "mae_age_30-39": 1, "mae_age_50-59": 10, "mae_age_70plus": 5}
    assert out["mae_gender_f"].item() == pytest.approx(6.0) and out["mae_gender_m"].item() == pytest.approx(1.5)
    assert {k: v.item() for k, v in out.items() if k.startswith("mae_race_")} == {
        "mae_race_white": 2.0, "mae_race_black": 1.0, "mae_race_asian": 5.0}
    # The faces behind each breakdown, so folds can be pooled per band (agelab.results.pooled).
    assert {k: v.item() for k, v in out.items() if k.startswith("n_") and k != "n_age"} == {
        "n_age_0-9": 1, "n_age_10-19": 1, "n_age_30-39": 1, "n_age_50-59": 1, "n_age_70plus": 1,
        "n_gender_f": 2, "n_gender_m": 2, "n_race_white": 2, "n_race_black": 1, "n_race_asian": 1}
    assert "acc" not in out  # no groups known
    lean = AgeMetrics(breakdowns=False)  # train and val: the headline figures only
    lean.update({"age": preds}, batch)
    assert not any(k.startswith(("mae_", "n_age_", "n_gender", "n_race")) for k in lean.compute())
    assert lean.compute()["mae"].item() == pytest.approx(4.0)


def test_gender_accuracy_for_multitask_predictions():
    metrics = AgeMetrics()
    metrics.update({"age": torch.tensor([20.0, 30.0, 40.0]), "gender": torch.tensor([1, 0, 0])},
                   {"age": torch.tensor([20.0, 30.0, 40.0]), "gender": ["m", "m", "?"]})
    assert metrics.compute()["gender_acc"].item() == pytest.approx(0.5)


def test_gender_codes_from_tensors_and_strings():
    assert gender_tensor(torch.tensor([0, 1, -1, 5])).tolist() == [0, 1, -1, -1]
    assert gender_tensor(["f", "M", "", None]).tolist() == [0, 1, -1, -1]


def test_spread_coverage_counts_true_ages_within_k_std_and_reads_the_calibrating_multiple():
    metrics = AgeMetrics()
    # errors 0, 1, 2, 3 and 4 years against a spread of 2 years (one age unknown, one spread NaN: left out)
    decoded = {"age": torch.tensor([30.0, 31, 32, 33, 34, 50, 60]), "std": torch.tensor([2.0, 2, 2, 2, 2, 2, NAN])}
    metrics.update(decoded, {"age": torch.tensor([30.0, 30, 30, 30, 30, NAN, 60])})
    out = metrics.compute()
    curve = dict(zip(SPREAD_MULTIPLES, out["spread_curve"].tolist()))
    assert out["spread_coverage"].item() == pytest.approx(0.6) == curve[1.0]  # within 2 years: 0, 1, 2
    assert curve[0.5] == pytest.approx(0.4) and curve[2.0] == pytest.approx(1.0) and curve[0.05] == pytest.approx(0.2)
    skipped = AgeMetrics(spread=False)  # training steps: no coverage kernels
    skipped.update(decoded, {"age": torch.tensor([30.0, 30, 30, 30, 30, NAN, 60])})
    assert "spread_curve" not in skipped.compute() and skipped.compute()["mae"] == out["mae"]
    # 68.27 % is first reached at k = 1.5 (80 %; 60 % at 1.45): read linearly between those two points
    assert spread_multiple(out["spread_curve"]) == pytest.approx(1.45 + 0.05 * (NOMINAL_COVERAGE - 0.6) / 0.2)
    # Normal errors with the spread they were drawn with cover 68 % at one std: the multiple is ~1.
    gen = torch.Generator().manual_seed(0)
    std = torch.rand(20000, generator=gen) * 8 + 1
    truth = torch.randn(20000, generator=gen) * std + 40
    normal = AgeMetrics()
    normal.update({"age": torch.full((20000,), 40.0), "std": std}, {"age": truth})
    calibrated = normal.compute()
    assert calibrated["spread_coverage"].item() == pytest.approx(NOMINAL_COVERAGE, abs=0.01)
    assert spread_multiple(calibrated["spread_curve"]) == pytest.approx(1.0, abs=0.03)


def test_cumulative_score_alone_keeps_its_interface():
    cs = CumulativeScore(max_theta=3)
    cs.update(torch.tensor([1.0, 5.0]), torch.tensor([1.0, 3.0]))
    assert cs.compute().tolist() == pytest.approx([0.5, 0.5, 1.0, 1.0])


def test_group_scores_agree_with_torchmetrics_on_random_data_with_missing_classes():
    from torchmetrics.functional.classification import (
        multiclass_accuracy, multiclass_confusion_matrix, multiclass_f1_score, multiclass_precision, multiclass_recall,
    )

    gen = torch.Generator().manual_seed(0)
    preds = torch.randint(0, 6, (300,), generator=gen)  # groups 6 and 7 never predicted
    target = torch.randint(-1, 7, (300,), generator=gen)  # -1 unknown, group 7 never true
    metrics = AgeMetrics()
    for part in range(3):
        metrics.update(*group_batch(preds[part::3], target[part::3]))
    out = metrics.compute()
    args = {"num_classes": 8, "ignore_index": -1}
    assert torch.equal(out["confusion"], multiclass_confusion_matrix(preds, target, **args))
    assert out["acc"].item() == pytest.approx(multiclass_accuracy(preds, target, average="micro", **args).item())
    for name, reference in (("precision", multiclass_precision), ("recall", multiclass_recall),
                            ("f1", multiclass_f1_score)):
        assert out[name].item() == pytest.approx(reference(preds, target, average="macro", **args).item(), rel=1e-6)
