"""LFW protocol: pairs.txt parsing, the k-fold threshold procedure, TAR at FAR, ROC output."""

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from validate import lfw

SHARED_DIR = Path(os.environ.get("SHARED_DIR", Path(__file__).resolve().parents[1].parent / "shared"))


# ---------------------------------------------------------------------------------------------
# k-fold procedure


def constructed_scores() -> lfw.ScoreSet:
    """Ten folds of 2 matched and 2 mismatched pairs.

    Folds 1-9: matched 0.8, 0.7 and mismatched 0.2, 0.55. Fold 0: matched 0.8, 0.45 and
    mismatched 0.2, 0.3. Fold 0 alone is separable at any threshold in (0.3, 0.45). The other
    nine folds put their best threshold at 0.625, the midpoint of (0.55, 0.7), which rejects
    fold 0's matched pair at 0.45. So fold 0 scores 3/4 and the others 4/4.
    """
    scores, same, folds = [], [], []
    for fold in range(10):
        fold_scores = [0.8, 0.45, 0.2, 0.3] if fold == 0 else [0.8, 0.7, 0.2, 0.55]
        scores += fold_scores
        same += [True, True, False, False]
        folds += [fold] * 4
    return lfw.ScoreSet(np.array(scores), np.array(same), np.array(folds))


def test_k_fold_uses_other_folds_threshold():
    score_set = constructed_scores()

    accuracies, thresholds, cross_validated = lfw.k_fold_accuracy(score_set.scores, score_set.same, score_set.fold_ids)

    assert cross_validated
    np.testing.assert_allclose(accuracies, [0.75] + [1.0] * 9)
    # Fold 0 trains on nine identical folds: the only best cut lies between 0.55 and 0.7.
    assert thresholds[0] == pytest.approx(0.625)
    # Folds 1-9 train on fold 0 plus eight others: rejecting 0.45 costs 1 error, accepting
    # the eight 0.55 mismatched pairs would cost 8, so the threshold stays at 0.625.
    np.testing.assert_allclose(thresholds[1:], 0.625)


def test_k_fold_mean_and_std():
    result = lfw.score_result("constructed", constructed_scores())

    assert result.mean_accuracy == pytest.approx(0.975)
    # Deviations are -0.225 once and +0.025 nine times, so the sum of squares is 0.05625, over n - 1 = 9.
    assert result.std_accuracy == pytest.approx(np.sqrt(0.05625 / 9))
    assert result.standard_error == pytest.approx(np.sqrt(0.05625 / 9) / np.sqrt(10))


def test_single_fold_uses_own_threshold():
    score_set = constructed_scores()
    first_fold = score_set.fold_ids == 0

    accuracies, thresholds, cross_validated = lfw.k_fold_accuracy(
        score_set.scores[first_fold], score_set.same[first_fold], score_set.fold_ids[first_fold]
    )

    assert not cross_validated
    np.testing.assert_allclose(accuracies, [1.0])
    assert thresholds[0] == pytest.approx(0.375)


def test_best_threshold_ignores_cuts_between_ties():
    # The mismatched and matched pair share 0.5, so no threshold separates them: best is 2 of 3.
    scores = np.array([0.5, 0.5, 0.9])
    same = np.array([False, True, True])

    threshold = lfw.best_threshold(scores, same)

    assert lfw.accuracy(scores, same, threshold) == pytest.approx(2 / 3)


def test_best_threshold_all_matched_accepts_all():
    scores = np.array([0.1, 0.2, 0.3])
    same = np.ones(3, dtype=bool)

    threshold = lfw.best_threshold(scores, same)

    assert threshold < 0.1
    assert lfw.accuracy(scores, same, threshold) == 1.0


# ---------------------------------------------------------------------------------------------
# TAR at FAR


def test_tar_at_far_allows_floor_far_times_impostors():
    # 2,000 distinct impostor scores 0.0000 ... 0.1999: FAR 1e-3 allows floor(2) = 2 of them,
    # so the threshold is the third highest impostor score, 0.1997.
    impostor = np.arange(2000) / 10000
    genuine = np.array([0.1, 0.1997, 0.19975, 0.1998, 0.5])
    scores = np.concatenate([impostor, genuine])
    same = np.concatenate([np.zeros(len(impostor), bool), np.ones(len(genuine), bool)])

    tar, threshold, achieved_far = lfw.tar_at_far(scores, same, far=1e-3)

    assert threshold == pytest.approx(0.1997)
    assert achieved_far == pytest.approx(2 / 2000)
    # Accepted genuine pairs are strictly above 0.1997: 0.19975, 0.1998 and 0.5.
    assert tar == pytest.approx(3 / 5)


def test_tar_at_far_ties_never_exceed_target():
    # The four highest impostor scores tie at 0.9, so accepting any of them would accept all
    # four (FAR 4/1000 > 1e-3): the threshold is 0.9 and no impostor passes.
    impostor = np.concatenate([np.full(4, 0.9), np.linspace(0.0, 0.5, 996)])
    genuine = np.array([0.95, 0.9, 0.6])
    scores = np.concatenate([impostor, genuine])
    same = np.concatenate([np.zeros(len(impostor), bool), np.ones(len(genuine), bool)])

    tar, threshold, achieved_far = lfw.tar_at_far(scores, same, far=1e-3)

    assert threshold == pytest.approx(0.9)
    assert achieved_far == 0.0
    assert tar == pytest.approx(1 / 3)


def test_roc_curve_ends_at_origin_and_one():
    score_set = constructed_scores()

    far, tar = lfw.roc_curve(score_set.scores, score_set.same)

    assert (far[0], tar[0]) == (0.0, 0.0)
    assert (far[-1], tar[-1]) == (1.0, 1.0)
    assert np.all(np.diff(far) >= 0)
    assert np.all(np.diff(tar) >= 0)


# matplotlib 3.10.3 calls pyparsing APIs that pyparsing 3.3 deprecates when it draws log-scale tick labels.
@pytest.mark.filterwarnings("ignore::pyparsing.warnings.PyparsingDeprecationWarning")
def test_write_roc_png(tmp_path):
    score_set = constructed_scores()
    result = lfw.score_result("constructed", score_set)
    output = tmp_path / "reports" / "roc.png"

    lfw.write_roc_png(output, {"constructed": result, "raw scores": score_set})

    image = cv2.imread(str(output))
    assert image is not None
    assert image.shape[0] > 100
    assert image.shape[1] > 100
    assert sorted(path.name for path in output.parent.iterdir()) == ["roc.png"]


# ---------------------------------------------------------------------------------------------
# Preprocessing


def test_to_model_input_variants():
    crop = np.zeros((128, 128, 3), dtype=np.uint8)
    crop[..., 0] = 10  # blue
    crop[..., 2] = 250  # red

    reference = lfw.to_model_input([crop], lfw.REFERENCE_PREPROCESSING)
    rgb = lfw.to_model_input([crop], lfw.Preprocessing("rgb", channel_order="RGB"))
    unit = lfw.to_model_input([crop], lfw.Preprocessing("unit", pixel_scale=1 / 255))

    assert reference.shape == (1, 3, 128, 128)
    assert reference.dtype == np.float32
    assert reference[0, 0, 0, 0] == 10.0
    assert reference[0, 2, 0, 0] == 250.0
    assert rgb[0, 0, 0, 0] == 250.0
    assert rgb[0, 2, 0, 0] == 10.0
    assert unit[0, 2, 0, 0] == pytest.approx(250 / 255)


# ---------------------------------------------------------------------------------------------
# pairs.txt


def make_lfw_dir(root: Path, pairs_text: str, layout: str = "lfw-deepfunneled",
                 names: dict[str, int] | None = None) -> Path:
    """Write pairs.txt and small JPEG images named `<Name>/<Name>_<NNNN>.jpg` under `layout`."""
    names = names if names is not None else {"Alice_Example": 2, "Bob_Example": 1, "Carol_Example": 2}
    image = np.full((16, 16, 3), 128, dtype=np.uint8)
    for name, count in names.items():
        folder = root / layout / name
        folder.mkdir(parents=True)
        for number in range(1, count + 1):
            cv2.imwrite(str(folder / f"{name}_{number:04d}.jpg"), image)
    (root / "pairs.txt").write_text(pairs_text)
    return root


VALID_PAIRS = (
    "2\t1\n"
    "Alice_Example\t1\t2\n"
    "Alice_Example\t1\tBob_Example\t1\n"
    "Carol_Example\t1\t2\n"
    "Bob_Example\t1\tCarol_Example\t2\n"
)


@pytest.mark.parametrize("layout", ["lfw-deepfunneled", "lfw"])
def test_read_pairs_layouts(tmp_path, layout):
    lfw_dir = make_lfw_dir(tmp_path, VALID_PAIRS, layout)

    pairs = lfw.read_pairs(lfw_dir)

    assert pairs.folds == 2
    assert pairs.image_dir == lfw_dir / layout
    assert [pair.same for pair in pairs.pairs] == [True, False, True, False]
    assert [pair.fold for pair in pairs.pairs] == [0, 0, 1, 1]
    assert [pair.line for pair in pairs.pairs] == [2, 3, 4, 5]
    assert pairs.pairs[1].second == lfw_dir / layout / "Bob_Example" / "Bob_Example_0001.jpg"
    assert len(pairs.image_paths) == 5
    assert len(pairs.first_folds(1)) == 2


def test_read_pairs_missing_file(tmp_path):
    with pytest.raises(lfw.LfwDataError) as error:
        lfw.read_pairs(tmp_path)

    assert str(tmp_path / "pairs.txt") in str(error.value)
    assert "not found" in str(error.value)


def test_read_pairs_missing_image(tmp_path):
    text = VALID_PAIRS.replace("Carol_Example\t1\t2", "Carol_Example\t1\t3")
    lfw_dir = make_lfw_dir(tmp_path, text)

    with pytest.raises(lfw.LfwDataError) as error:
        lfw.read_pairs(lfw_dir)

    message = str(error.value)
    assert error.value.line == 4
    assert f"{lfw_dir / 'pairs.txt'}, line 4" in message
    assert "Carol_Example_0003.jpg" in message


@pytest.mark.parametrize(
    "bad_line, line_number",
    [
        ("Alice_Example\t1\n", 2),  # too few fields for a matched pair
        ("Alice_Example\tone\t2\n", 2),  # not a number
        ("Alice_Example\t1\tBob_Example\t1\n", 2),  # mismatched pair where a matched one belongs
    ],
)
def test_read_pairs_malformed_line(tmp_path, bad_line, line_number):
    lines = VALID_PAIRS.splitlines(keepends=True)
    lines[line_number - 1] = bad_line
    lfw_dir = make_lfw_dir(tmp_path, "".join(lines))

    with pytest.raises(lfw.LfwDataError) as error:
        lfw.read_pairs(lfw_dir)

    assert error.value.line == line_number
    assert f"{lfw_dir / 'pairs.txt'}, line {line_number}" in str(error.value)


def test_read_pairs_malformed_header(tmp_path):
    lfw_dir = make_lfw_dir(tmp_path, "ten 300\n")

    with pytest.raises(lfw.LfwDataError) as error:
        lfw.read_pairs(lfw_dir)

    assert error.value.line == 1
    assert "header" in str(error.value)


def test_read_pairs_truncated_file(tmp_path):
    lfw_dir = make_lfw_dir(tmp_path, "".join(VALID_PAIRS.splitlines(keepends=True)[:-1]))

    with pytest.raises(lfw.LfwDataError) as error:
        lfw.read_pairs(lfw_dir)

    assert error.value.line == 4
    assert "5 lines" in str(error.value)


def test_read_pairs_extra_line(tmp_path):
    lfw_dir = make_lfw_dir(tmp_path, VALID_PAIRS + "Alice_Example\t1\t2\nAlice_Example\t2\t1\n")

    with pytest.raises(lfw.LfwDataError) as error:
        lfw.read_pairs(lfw_dir)

    assert error.value.line == 6
    assert "7 lines" in str(error.value)


def test_read_pairs_missing_image_folder(tmp_path):
    (tmp_path / "pairs.txt").write_text(VALID_PAIRS)

    with pytest.raises(lfw.LfwDataError) as error:
        lfw.read_pairs(tmp_path)

    assert "lfw-deepfunneled" in str(error.value)


def test_read_pairs_real_lfw():
    pairs = lfw.read_pairs(SHARED_DIR / "lfw")

    assert pairs.folds == 10
    assert len(pairs) == 6000
    assert int(pairs.same.sum()) == 3000
    assert np.bincount(pairs.fold_ids).tolist() == [600] * 10
    assert len(pairs.image_paths) == 7701
    assert len(pairs.first_folds(1)) == 600
