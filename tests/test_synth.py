import numpy as np

from agelab.data.synth import SynthSpec, generate, labels, make_sample
from agelab.groups import age_to_group


def test_same_seed_same_faces_other_seed_other_faces():
    a_img, a_rec = generate(SynthSpec(count=6, size=64, seed=3), workers=1)
    b_img, b_rec = generate(SynthSpec(count=6, size=64, seed=3), workers=1)
    c_img, c_rec = generate(SynthSpec(count=6, size=64, seed=4), workers=1)
    assert a_img.dtype == np.uint8 and a_img.shape == (6, 64, 64, 3)
    assert np.array_equal(a_img, b_img) and a_rec.equals(b_rec)
    assert not np.array_equal(a_img, c_img)
    assert not np.array_equal(a_rec["age"], c_rec["age"])
    # A sample does not depend on how many others are drawn with it.
    single, rec = make_sample(SynthSpec(count=1, size=64, seed=3), 4)
    assert np.array_equal(single, a_img[4]) and rec["age"] == a_rec["age"][4]


def test_parallel_generation_matches_serial():
    spec = SynthSpec(count=1100, size=32, seed=1)
    serial, _ = generate(spec, workers=1)
    parallel, _ = generate(spec, workers=2)
    assert np.array_equal(serial, parallel)


def test_ages_cover_0_to_100_evenly_with_small_label_noise():
    ages = labels(SynthSpec(count=3000, seed=0))
    assert ages.min() == 0 and ages.max() == 100
    counts, _ = np.histogram(ages, bins=10, range=(0, 100))
    assert counts.min() > 0.7 * counts.mean()
    _, rec = generate(SynthSpec(count=200, size=32, seed=0), workers=1)
    noise = rec["age"] - rec["true_age"]
    assert 0.5 < noise.std() < 3.0
    assert (rec["group"] == age_to_group(rec["age"])).all()


def test_age_changes_the_face():
    """Older faces differ from young ones in ways that hold across nuisance (mean images by age band)."""
    imgs, rec = generate(SynthSpec(count=400, size=48, seed=2), workers=1)
    young = imgs[rec["age"] < 15].astype(float).mean(0)
    old = imgs[rec["age"] > 70].astype(float).mean(0)
    mid_a = imgs[(rec["age"] > 30) & (rec["age"] < 45)].astype(float)
    half = len(mid_a) // 2
    between_ages = np.abs(young - old).mean()
    within_band = np.abs(mid_a[:half].mean(0) - mid_a[half:].mean(0)).mean()
    assert between_ages > 1.5 * within_band


def test_contact_sheet_command_writes_the_sheet_and_refuses_bad_arguments(tmp_path, capsys):
    import cv2
    import pytest

    from agelab.data.synth import main

    main(["--sheet", str(tmp_path / "sheet.png"), "--count", "3", "--size", "32"])
    assert cv2.imread(str(tmp_path / "sheet.png")) is not None and "wrote" in capsys.readouterr().out
    for argv, message in ((["--count", "0"], "--count must be >= 1"), (["--size", "0"], "--size >= 16"),
                          (["--sheet", str(tmp_path / "sheet.txt")], "not an image file name")):
        with pytest.raises(SystemExit) as stopped:
            main(["--sheet", str(tmp_path / "x.png"), *argv])
        assert stopped.value.code == 2 and message in capsys.readouterr().err
