"""Hostile outputs and inputs on the command line: refused in words, nothing damaged."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import nibabel as nib
import numpy as np

from core.cli.entry import main
from tests.hostile_corpus import CHOOSE, READ, READ_NOT_SEGMENT, REFUSE, make_corpus


def test_special_outputs_are_refused_before_any_work(tmp_path, cli_data, capsys):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link.nii.gz"
    link.symlink_to(fifo)
    for option, target in (("--out", link), ("--report", fifo)):
        argv = ["segment", str(cli_data.image), "--model", str(cli_data.model), option, str(target)]
        assert main(argv) == 2
        error = capsys.readouterr().err
        assert f"{option} {target}" in error and "FIFO" in error
        assert stat.S_ISFIFO(os.stat(fifo).st_mode)


EXIT_CODES = {
    # (info, segment) exit status per expectation of the corpus
    REFUSE: (1, 1),
    CHOOSE: (0, 2),
    READ: (0, 0),
    READ_NOT_SEGMENT: (0, 1),
}


def _fingerprint(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Kind and content of every entry (FIFOs by their kind only: reading one would block)."""
    prints = {}
    for path in sorted(folder.iterdir()):
        mode = os.lstat(path).st_mode
        content = path.read_bytes() if stat.S_ISREG(mode) else b""
        prints[path.name] = (stat.S_IFMT(mode), hashlib.sha256(content).digest())
    return prints


def test_corpus_of_bad_files_through_info_and_segment(tmp_path, cli_data, capfd):
    corpus = make_corpus(tmp_path / "corpus")
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    before = _fingerprint(tmp_path / "corpus")
    model_before = _fingerprint(cli_data.model)
    for item in corpus:
        mask = outputs / ("mask.png" if item.path.suffix in (".png", ".jpg") else "mask.nii.gz")
        report = outputs / "report.json"
        commands = {
            "info": ["info", str(item.path)],
            "segment": [
                "segment", str(item.path), "--model", str(cli_data.model),
                "--out", str(mask), "--report", str(report),
            ],
        }  # fmt: skip
        for (name, argv), expected in zip(commands.items(), EXIT_CODES[item.expect], strict=True):
            code = main(["--quiet", *argv])
            captured = capfd.readouterr()
            what = f"{name} {item.path.name} ({item.why})"
            assert code == expected, f"{what}: exit {code}: {captured.err}"
            assert "Traceback" not in captured.err, what
            lines = captured.err.splitlines()
            # Only the app's own lines: no library warning leaks beside them.
            assert all(line.startswith(f"main.py {name}: ") for line in lines), (what, lines)
            if code:
                assert len(lines) == 1 and str(item.path) in lines[0], (what, lines)
                assert not mask.exists() and not report.exists(), what
            for written in (mask, report):
                written.unlink(missing_ok=True)
    assert _fingerprint(tmp_path / "corpus") == before
    assert _fingerprint(cli_data.model) == model_before
    assert sorted(p.name for p in outputs.iterdir()) == []


def test_ground_truth_labels_the_model_lacks_are_warned_with_counts(tmp_path, cli_data, capfd):
    label = nib.load(cli_data.label)
    truth = np.asarray(label.dataobj).astype(np.uint8)
    truth[:3, :4, 0] = 7  # a lesion labelled 7 for a 4-class model: 12 voxels
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    (images / "case.nii.gz").symlink_to(cli_data.image)
    nib.Nifti1Image(truth, label.affine).to_filename(labels / "case.nii.gz")
    report = tmp_path / "segment.json"
    argv = ["segment", str(cli_data.image), "--model", str(cli_data.model), "--decision", "argmax"]
    assert (
        main(["--quiet", *argv, "--gt", str(labels / "case.nii.gz"), "--report", str(report)]) == 0
    )
    said = "ground truth has labels the model does not have: 7 (12 voxels)"
    assert said in capfd.readouterr().err
    assert any(said in w for w in json.loads(report.read_text())["ground_truth_warnings"])

    report = tmp_path / "evaluate.json"
    argv = ["evaluate", "--model", str(cli_data.model), "--images", str(images)]
    assert main(["--quiet", *argv, "--labels", str(labels), "--report", str(report)]) == 0
    err = capfd.readouterr().err
    assert err.count(said) == 1  # once per model and case, not once per decision rule
    warnings = json.loads(report.read_text())["warnings"]
    assert [w["case"] for w in warnings] == ["case"] and said in warnings[0]["warning"]


def test_quantize_on_nan_calibration_stops_and_writes_nothing(tmp_path, cli_data, capfd):
    volume = np.asarray(nib.load(cli_data.image).dataobj).astype(np.float32)
    volume[10, 10, 1] = np.nan
    calib = tmp_path / "nan.nii.gz"
    nib.Nifti1Image(volume, np.eye(4)).to_filename(calib)
    out, report = tmp_path / "q", tmp_path / "q.json"
    argv = ["quantize", "--model", str(cli_data.model), "--calib", str(calib), "--out", str(out)]
    assert main(["--quiet", *argv, "--method", "rtn", "--report", str(report)]) == 1
    err = capfd.readouterr().err
    assert f"{calib}: 1 of" in err and "NaN or infinite" in err
    assert not out.exists() and not report.exists()


def test_library_warnings_become_the_commands_own_lines(capsys):
    import argparse
    import warnings

    from core.cli.errors import handle_errors

    @handle_errors("probe")
    def succeeds(args):
        warnings.warn("overflow encountered\nin cast", RuntimeWarning, stacklevel=1)
        warnings.warn("overflow encountered\nin cast", RuntimeWarning, stacklevel=1)
        return 0

    @handle_errors("probe")
    def fails(args):
        warnings.warn("overflow encountered in cast", RuntimeWarning, stacklevel=1)
        raise ValueError("x.nii: broken")

    assert succeeds(argparse.Namespace()) == 0
    assert capsys.readouterr().err == "main.py probe: warning: overflow encountered in cast\n"
    assert fails(argparse.Namespace()) == 1
    assert capsys.readouterr().err == "main.py probe: error: x.nii: broken\n"


def test_quantize_out_holding_other_files_or_special_is_refused_first(tmp_path, cli_data, capfd):
    own = tmp_path / "own"
    own.mkdir()
    (own / "notes.txt").write_text("mine")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for out, words in ((own, "holds other files (notes.txt)"), (fifo, "FIFO")):
        argv = ["quantize", "--model", str(cli_data.model), "--calib", str(cli_data.image)]
        assert main(["--quiet", *argv, "--out", str(out), "--method", "rtn"]) == 2
        assert words in capfd.readouterr().err
    assert sorted(p.name for p in own.iterdir()) == ["notes.txt"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
