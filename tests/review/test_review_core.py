"""Worklists, review state, saving and resuming, edits and the corrected-mask readouts."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from core.display.planes import plane_axes, plane_volume
from core.io import read_image, read_mask
from core.review import (
    Edit,
    ReviewState,
    brush,
    delete_component,
    fill_region,
    mask_result,
    read_worklist,
)
from tests.review.cases import OBLIQUE_AFFINE, case_arrays, write_case_folder
from tests.review.killing import kill_after_lines

ROOT = Path(__file__).resolve().parents[2]


# --- worklists ---------------------------------------------------------------------------------
def test_folder_worklist_pairs_nnunet_images_with_labels_and_predictions(tmp_path):
    folder = write_case_folder(tmp_path / "wl", 4)
    (folder / "predictions" / "case002.nii.gz").unlink()
    worklist = read_worklist(folder)
    assert worklist.names == ["case000_0000", "case001_0000", "case002_0000", "case003_0000"]
    case = worklist.cases[1]
    assert case.image.name == "case001_0000.nii.gz"
    assert case.label == folder / "labels" / "case001.nii.gz"
    assert case.prediction == folder / "predictions" / "case001.nii.gz"
    assert worklist.cases[2].prediction is None
    assert worklist.review_dir == folder / "review"


def test_flat_folder_takes_tagged_files_as_ground_truths(tmp_path):
    image, truth, _ = case_arrays(0)
    for name in ("a", "b"):
        nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / f"{name}.nii.gz")
    nib.save(nib.Nifti1Image(truth, np.eye(4)), tmp_path / "a_seg.nii.gz")
    worklist = read_worklist(tmp_path)
    assert [(c.name, c.label and c.label.name) for c in worklist.cases] == [
        ("a", "a_seg.nii.gz"),
        ("b", None),
    ]


def test_csv_worklist_with_relative_paths_and_empty_cells(tmp_path):
    folder = write_case_folder(tmp_path / "wl", 2)
    table = tmp_path / "list.csv"
    table.write_text(
        "case,image,label,prediction\n"
        "first,wl/images/case000_0000.nii.gz,wl/labels/case000.nii.gz,\n"
        f"second,{folder}/images/case001_0000.nii.gz,,wl/predictions/case001.nii.gz\n"
    )
    worklist = read_worklist(table)
    assert worklist.names == ["first", "second"]
    assert worklist.cases[0].label == tmp_path / "wl/labels/case000.nii.gz"
    assert worklist.cases[0].prediction is None
    assert worklist.cases[1].label is None
    assert worklist.review_dir == tmp_path / "list_review"


@pytest.mark.parametrize(
    "text, words",
    [
        ("name,file\nx,y\n", "needs the columns"),
        ("case,image\nx,missing.nii.gz\n", "does not exist"),
        ("case,image\n", "no rows"),
    ],
)
def test_bad_csv_worklists_are_refused_in_words(tmp_path, text, words):
    table = tmp_path / "list.csv"
    table.write_text(text)
    with pytest.raises(ValueError, match=words) as info:
        read_worklist(table)
    assert str(table) in str(info.value)


# --- state -------------------------------------------------------------------------------------
def test_statuses_comments_and_times_survive_reopening(tmp_path):
    worklist = read_worklist(write_case_folder(tmp_path / "wl", 5, predictions=False))
    state = ReviewState(worklist)
    names = worklist.names
    state.set_status(names[0], "accepted", "Dr A")
    state.set_status(names[2], "rejected", "Dr A")
    state.set_comment(names[2], "missed the upper pole")
    state.add_seconds(names[2], 12.5)
    state.set_current(names[2])
    with pytest.raises(ValueError, match="unknown review status"):
        state.set_status(names[1], "maybe")
    again = ReviewState(read_worklist(tmp_path / "wl"))
    assert again.current == names[2]
    assert again.cases[names[0]].status == "accepted"
    assert again.cases[names[2]].comment == "missed the upper pole"
    assert again.cases[names[2]].seconds == 12.5
    assert again.cases[names[2]].reviewer == "Dr A"
    assert again.progress() == (2, 5)
    assert again.next_case(names[0], unreviewed=True) == names[1]
    assert again.next_case(names[4], unreviewed=True) == names[1]  # wraps round
    assert again.next_case(names[4]) is None and again.next_case(names[1], -1) == names[0]


def test_corrected_mask_is_saved_with_the_image_geometry_and_exported(tmp_path):
    worklist = read_worklist(write_case_folder(tmp_path / "wl", 3, affine=OBLIQUE_AFFINE))
    case = worklist.cases[1]
    image = read_image(case.image)
    corrected = read_mask(case.prediction, reference=image).array.copy()
    corrected[0, 0, 0] = 1
    state = ReviewState(worklist)
    path = state.save_corrected(
        case.name, corrected, image, edit_dice=0.9, volumes={"lesion": 2.5}, reviewer="Dr B"
    )
    saved = nib.load(path)
    np.testing.assert_allclose(saved.affine, OBLIQUE_AFFINE, atol=1e-5)
    again = ReviewState(read_worklist(tmp_path / "wl"))
    np.testing.assert_array_equal(again.load_corrected(case.name, image), corrected)
    assert again.cases[case.name].status == "corrected"
    again.export(tmp_path / "review.csv")
    again.export(tmp_path / "review.json")
    lines = (tmp_path / "review.csv").read_text().splitlines()
    assert lines[0].split(",")[:6] == [
        "case",
        "status",
        "comment",
        "reviewer",
        "seconds",
        "edit_dice",
    ]
    assert lines[2].startswith(f"{case.name},corrected,,Dr B,0.0,0.9,")
    assert lines[2].endswith(",2.5")
    data = json.loads((tmp_path / "review.json").read_text())
    assert data["reviewed"] == 1 and data["total"] == 3
    assert data["cases"][1]["lesion ml"] == 2.5


def test_resume_after_sigkill_in_the_middle_of_a_review(tmp_path):
    folder = write_case_folder(tmp_path / "wl", 20, predictions=False)
    done = kill_after_lines(
        "tests.review.review_writer", str(folder), lines=8, data_dir=tmp_path / "data"
    )
    assert len(done) == 8
    state = ReviewState(read_worklist(folder))
    for index, name in enumerate(done):
        review = state.cases[name]
        expected = ("accepted", "rejected", "corrected")[index % 3]
        assert review.status == expected, name
        assert review.comment == f"seen {name}"
        if expected == "corrected":
            image = read_image(next(c.image for c in state.worklist.cases if c.name == name))
            np.testing.assert_array_equal(
                state.load_corrected(name, image), (image.array > 50).astype(np.uint8)
            )
    # The state names the last case it saved: never before what was printed.
    assert state.worklist.names.index(state.current) >= 7
    # No file under a final name is torn: every file in the folder reads.
    for path in (folder / "review").rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            if path.suffix == ".json":
                json.loads(path.read_text())
            else:
                nib.load(path).get_fdata()


# --- edits -------------------------------------------------------------------------------------
def _planes(mask, view="axial"):
    axes = plane_axes(OBLIQUE_AFFINE, view)
    return axes, plane_volume(mask, axes)


@pytest.mark.parametrize("view", ["axial", "coronal", "sagittal"])
def test_brush_lands_on_the_plane_pixels_under_it_in_every_view(view):
    mask = np.zeros((12, 10, 6), np.uint8)
    axes, planes = _planes(mask, view)
    spacing = (0.7, 1.3, 2.9)
    pixel_mm = (spacing[axes.row_axis], spacing[axes.col_axis])
    edit = brush(mask, axes, 2, (4, 3), radius_mm=3.0, pixel_mm=pixel_mm, label=2)
    # Brute force: every plane pixel whose centre is within 3 mm of (4, 3) on slice 2.
    rows, cols = planes.shape[1:3]
    expected = np.zeros((rows, cols), bool)
    for r in range(rows):
        for c in range(cols):
            expected[r, c] = ((r - 4) * pixel_mm[0]) ** 2 + ((c - 3) * pixel_mm[1]) ** 2 <= 9.0
    np.testing.assert_array_equal(planes[2] == 2, expected)
    assert mask.sum() == 2 * expected.sum() and edit.count == expected.sum()
    assert np.count_nonzero(np.delete(planes, 2, axis=0)) == 0
    edit.revert(mask)
    assert not mask.any()
    edit.apply(mask)
    np.testing.assert_array_equal(planes[2] == 2, expected)


def test_erase_removes_only_the_chosen_label_and_merged_edits_undo_a_drag():
    mask = np.zeros((12, 10, 6), np.uint8, order="F")
    mask[2:8, 2:8, 3] = 1
    mask[5:8, 5:8, 3] = 2
    original = mask.copy()
    axes, planes = _planes(mask)
    edits = [
        brush(mask, axes, 3, center, radius_mm=2.0, pixel_mm=(1, 1), label=1, erase=True)
        for center in ((5, 5), (6, 6), (7, 7))
    ]
    assert (mask == 2).sum() == (original == 2).sum()
    assert (mask == 1).sum() < (original == 1).sum()
    merged = Edit.merged(edits, mask)
    assert merged.count == int(((original == 1) & (mask == 0)).sum())
    merged.revert(mask)
    np.testing.assert_array_equal(mask, original)


def test_fill_closes_a_hole_and_refuses_an_open_region():
    mask = np.zeros((12, 10, 6), np.uint8)
    axes, planes = _planes(mask)
    plane = planes[1]
    plane[2:7, 2:7] = 1
    plane[3:6, 3:6] = 0  # a hole inside the outline
    edit = fill_region(mask, axes, 1, (4, 4), label=1)
    assert edit.count == 9 and (planes[1][2:7, 2:7] == 1).all()
    with pytest.raises(ValueError, match="not closed"):
        fill_region(mask, axes, 1, (0, 0), label=1)


def test_delete_component_removes_only_the_clicked_blob():
    mask = np.zeros((12, 10, 6), np.uint8)
    mask[1:3, 1:3, 1:3] = 1
    mask[6:9, 6:9, 2:4] = 1
    edit = delete_component(mask, (7, 7, 3))
    assert edit.count == 18 and mask[1:3, 1:3, 1:3].all() and not mask[6:9, 6:9, 2:4].any()
    with pytest.raises(ValueError, match="no labelled voxel"):
        delete_component(mask, (0, 0, 0))


def test_mask_result_dice_against_the_model_mask_by_brute_force():
    _, truth, prediction = case_arrays(3)
    result = mask_result(
        truth,
        spacing=(0.5, 2.0, 3.0),
        class_names=["bg", "lesion"],
        model_name="m",
        decision="corrected",
        reference=prediction,
    )
    tp = np.sum((truth == 1) & (prediction == 1))
    dice = 2 * tp / (np.sum(truth == 1) + np.sum(prediction == 1))
    assert result.rows[1].dice == pytest.approx(dice)
    assert result.rows[1].volume_ml == pytest.approx(np.sum(truth == 1) * 3.0 / 1000)
    assert result.rule_label == "corrected"


def test_joint_counts_follow_edits_and_undo_without_a_recount():
    from core.review import joint_counts, update_joint

    rng = np.random.default_rng(1)
    model = rng.integers(0, 3, size=(12, 10, 6)).astype(np.uint8)
    mask = np.asfortranarray(model.copy())
    joint = joint_counts(mask, model, 4)
    axes, _ = _planes(mask)
    edits = [
        brush(mask, axes, 2, (4, 3), radius_mm=3.0, pixel_mm=(0.7, 1.3), label=3),
        brush(mask, axes, 2, (6, 5), radius_mm=2.0, pixel_mm=(0.7, 1.3), label=1, erase=True),
    ]
    for edit in edits:
        update_joint(joint, edit, model)
    recount = np.zeros((4, 4), np.int64)
    for a, b in zip(mask.ravel(), model.ravel(), strict=True):
        recount[a, b] += 1
    np.testing.assert_array_equal(joint, recount)
    for edit in reversed(edits):
        edit.revert(mask)
        update_joint(joint, edit, model, undo=True)
    np.testing.assert_array_equal(joint, np.diag(np.bincount(model.ravel(), minlength=4)))
