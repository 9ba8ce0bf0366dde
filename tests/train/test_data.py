import math

import cv2
import numpy as np
import pytest

from engines.meta import AGE_LABELS, GENDER_LABELS
from realtime.errors import RealtimeError
from train.data import assign_folds, holdout_mask, read_images, square
from train.formats import load_dataset
from train.labels import age_group_of, gender_index, parse_age

MALE, FEMALE = GENDER_LABELS.index("male"), GENDER_LABELS.index("female")


@pytest.mark.parametrize(
    "age, group",
    [
        (0, "0-2"), (2, "0-2"), (3, "0-2"),  # 3: one year from 0-2 and from 4-6, tie -> lower
        (4, "4-6"), (7, "4-6"), (8, "8-12"), (13, "8-12"), (14, "15-20"),
        (22, "15-20"), (23, "25-32"), (35, "25-32"), (36, "38-43"), (45, "38-43"),
        (46, "48-53"), (56, "48-53"), (57, "60-100"), (110, "60-100"),
        (15.5, "15-20"), (3.5, "4-6"), (33.5, "25-32"),
    ],
)  # fmt: skip
def test_age_group_nearest_ties_to_lower(age, group):
    assert AGE_LABELS[age_group_of(age)] == group


@pytest.mark.parametrize(
    "text, group, years",
    [
        ("(25, 32)", "25-32", None), ("(60, 100)", "60-100", None), ("(0, 2)", "0-2", None),
        ("(8, 23)", "15-20", None),  # odd range: midpoint 15.5
        ("(38, 48)", "38-43", None),  # midpoint 43
        ("(27, 32)", "25-32", None), ("35", "25-32", 35.0), ("57", "60-100", 57.0), ("25-32", "25-32", None),
    ],
)  # fmt: skip
def test_parse_age(text, group, years):
    g, y = parse_age(text)
    assert AGE_LABELS[g] == group
    assert (math.isnan(y) if years is None else y == years)


@pytest.mark.parametrize("text", ["None", "", "  ", "nan"])
def test_parse_age_unknown(text):
    g, y = parse_age(text)
    assert g == -1 and math.isnan(y)


@pytest.mark.parametrize("bad", ["old", "(a, b)", "25 to 32"])
def test_parse_age_rejects_garbage(bad):
    with pytest.raises(RealtimeError, match="age"):
        parse_age(bad, "x.csv:3")


@pytest.mark.parametrize("text, index", [("m", MALE), ("male", MALE), ("F", FEMALE), ("female", FEMALE), ("u", -1), ("", -1)])
def test_gender_index(text, index):
    assert gender_index(text) == index


def test_gender_index_rejects_unknown_word():
    with pytest.raises(RealtimeError, match="gender 'x'"):
        gender_index("x", "fold_0_data.txt:4")


def test_adience_loader_reads_official_folds(adience_dir):
    data = load_dataset(adience_dir, "adience")
    assert len(data) == 29 and data.skipped == 1  # 30 listed, one missing on disk
    assert sorted(np.unique(data.folds)) == [0, 1, 2, 3, 4]
    # subject-exclusive: every subject (user_id folder) sits in exactly one fold
    subject_folds = {}
    for path, fold in zip(data.files, data.folds):
        subject_folds.setdefault(path.parent.name, set()).add(int(fold))
    assert len(subject_folds) == 10 and all(len(f) == 1 for f in subject_folds.values())
    by_id = {p.name.split(".")[1]: i for i, p in enumerate(data.files)}
    assert data.gender[by_id["2"]] == -1  # 'u' masked
    assert data.age_group[by_id["3"]] == -1  # 'None' masked
    assert AGE_LABELS[data.age_group[by_id["4"]]] == "15-20"  # (8, 23) by midpoint
    assert data.age_years[by_id["5"]] == 35.0 and np.isnan(data.age_years[by_id["1"]])
    assert data.files[by_id["6"]].name.startswith("landmark_aligned_face.6.")  # aligned/ layout
    assert (assign_folds(data, 5) == data.folds).all()
    with pytest.raises(RealtimeError, match="official folds"):
        assign_folds(data, 6)


def test_adience_without_fold_files_is_a_user_error(tmp_path):
    with pytest.raises(RealtimeError, match="fold_0_data.txt"):
        load_dataset(tmp_path, "adience")


def test_utkface_filenames(utk_dir):
    data = load_dataset(utk_dir, "utkface")
    assert len(data) == 26 and data.skipped == 1  # 24 + duplicate + corrupt file listed; 'noage' skipped
    i = [p.name for p in data.files].index("28_0_4_20170100004.jpg.chip.jpg")
    assert data.gender[i] == MALE and data.race[i] == 4 and data.age_years[i] == 28 and AGE_LABELS[data.age_group[i]] == "25-32"
    j = [p.name for p in data.files].index("5_1_1_20170100001.jpg.chip.jpg")
    assert data.gender[j] == FEMALE
    kept, images = read_images(data)
    assert len(kept) == 25 and kept.skipped == 2 and images.shape == (25, 40, 40, 3)  # corrupt file skipped, counted
    for i, path in enumerate(kept.files):  # each row is its own file's pixels (no row skipped or shifted)
        assert np.array_equal(images[i], square(cv2.imread(str(path)), 40))
    from train.data import Rows

    rows = Rows(images, np.array([3, 0, 7]))  # a fold's training images: read through, never copied
    assert len(rows) == 3 and np.shares_memory(rows[0], images) and np.array_equal(rows[2], images[7])


def test_utkface_labels_csv(shared_faces):
    data = load_dataset(shared_faces, "utkface")
    assert len(data) == 12 and (data.gender >= 0).all() and np.isfinite(data.age_years).all() and (data.race >= 0).all()


def test_csv_loader_age_group_column(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((10, 10, 3), i * 50, np.uint8))
    (tmp_path / "labels.csv").write_text("file,age_group,gender\n0.png,25-32,f\n1.png,3,male\n2.png,,\nmissing.png,0-2,m\n")
    data = load_dataset(tmp_path / "labels.csv", "csv")
    assert len(data) == 2 and data.skipped == 2  # 2.png has no label, missing.png no file
    assert list(data.age_group) == [4, 3] and list(data.gender) == [FEMALE, MALE]
    assert np.isnan(data.age_years).all()


def test_unknown_format_and_missing_dir(tmp_path):
    with pytest.raises(RealtimeError, match="unknown data format 'imdb'"):
        load_dataset(tmp_path, "imdb")
    with pytest.raises(RealtimeError, match="not found"):
        load_dataset(tmp_path / "nope", "utkface")
    with pytest.raises(RealtimeError, match="no labelled images"):
        load_dataset(tmp_path, "utkface")


def test_identical_images_share_fold_and_holdout(utk_dir):
    data = load_dataset(utk_dir, "utkface")
    names = [p.name for p in data.files]
    a, b = names.index("28_0_4_20170100004.jpg.chip.jpg"), names.index("31_1_0_20170109999999.jpg.chip.jpg")
    for k in (2, 3, 5):
        folds = assign_folds(data, k)
        assert folds[a] == folds[b] and set(np.unique(folds)) <= set(range(k))
        assert (assign_folds(data, k) == folds).all()  # deterministic
    for fraction in (0.2, 0.5, 0.8):
        mask = holdout_mask(data, fraction)
        assert mask[a] == mask[b]
    assert 0 < holdout_mask(data, 0.5).sum() < len(data)
    with pytest.raises(RealtimeError, match="holdout"):
        holdout_mask(data, 1.5)


def test_square_matches_whole_image_framing():
    img = np.arange(20 * 10 * 3, dtype=np.uint8).reshape(20, 10, 3)
    out = square(img, 20)
    assert out.shape == (20, 20, 3)
    assert (out[:, 5:15] == img).all()  # centred, not stretched
    assert (out[:, :5] == img[:, :1]).all()  # replicated edge
