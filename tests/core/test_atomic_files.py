"""Outputs never damage what is there: non-regular targets refused, kills leave old or new."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from core import atomic_files
from core.atomic_files import (
    atomic_write,
    atomic_write_folder,
    output_target,
    write_text_atomic,
)
from core.io import Image, read_mask, write_mask
from core.models import load_model, save_model, save_quantized_model
from core.report_files import write_csv_atomic, write_json_atomic
from tests.tiny_models import tiny_unet

#: Every step a file or folder write announces; a kill may come at any of them.
STEPS = ("temp-created", "temp-written", "synced", "swapped")
KILLED = 86  # exit status of a child stopped by the hook


def _special_files(folder: Path) -> dict[str, Path]:
    """A FIFO, a socket, a character device and links to them, all made under ``folder``."""
    made = {}
    fifo = folder / "fifo"
    os.mkfifo(fifo)
    made["fifo"] = fifo
    sock = folder / "sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock))
    server.close()
    made["socket"] = sock
    if os.geteuid() == 0:
        device = folder / "null-device"
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # like /dev/null, made here
        made["device"] = device
    for name, target in list(made.items()):
        link = folder / f"link-to-{name}"
        link.symlink_to(target)
        made[f"link to {name}"] = link
    dangling = folder / "dangling"
    dangling.symlink_to(folder / "nowhere")
    made["dangling link"] = dangling
    return made


def _snapshot(path: Path) -> tuple[int, int, int]:
    info = os.lstat(path)
    return info.st_mode, info.st_ino, info.st_size


def test_non_regular_outputs_are_refused_and_left_alone(tmp_path):
    specials = _special_files(tmp_path)
    assert "fifo" in specials and "socket" in specials
    for kind, path in specials.items():
        before = _snapshot(path)
        with pytest.raises(ValueError, match=str(path.name)) as error:
            write_text_atomic("report", path)
        assert "refus" in str(error.value), kind
        assert _snapshot(path) == before, kind
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_proc_fd_and_dev_paths_are_refused(tmp_path):
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(ValueError, match="system path"):
            output_target(f"/proc/self/fd/{write_end}")
        with pytest.raises(ValueError, match="system path"):
            output_target("/dev/null")
    finally:
        os.close(read_end)
        os.close(write_end)
    link = tmp_path / "to-proc"
    link.symlink_to("/proc/self/status")
    with pytest.raises(ValueError, match="system path"):
        output_target(link)


def test_link_to_a_regular_file_is_written_through(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_text_atomic("new", link)
    assert link.is_symlink() and real.read_text() == "new"


def test_folder_and_file_kinds_are_checked(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a folder"):
        write_text_atomic("x", tmp_path)
    with pytest.raises(ValueError, match="not a folder"):
        atomic_write_folder(tmp_path / "file", lambda temp: None)
    own = tmp_path / "own"
    own.mkdir()
    (own / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"holds other files \(notes.txt\)"):
        atomic_write_folder(own, lambda temp: None, replaceable={"model.json"})
    assert (own / "notes.txt").read_text() == "mine"


# --- kills at every step ----------------------------------------------------------------------
def _killed_at(step: str, write) -> None:
    """Run ``write`` in a forked child that dies (no clean-up) when the write reaches ``step``."""
    pid = os.fork()
    if pid == 0:  # child

        def hook(name: str) -> None:
            if name == step:
                os._exit(KILLED)

        atomic_files.step_hook = hook
        try:
            write()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == KILLED, f"the write never reached {step}"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _mask_image() -> Image:
    return Image(array=np.zeros((6, 5, 3), np.int16), affine=np.diag([0.5, 0.5, 2.0, 1.0]))


@pytest.mark.parametrize("step", STEPS)
def test_kill_during_mask_report_and_csv_writes_leaves_old_or_new(tmp_path, step):
    image = _mask_image()
    old_mask, new_mask = np.zeros(image.shape3, np.uint8), np.ones(image.shape3, np.uint8)
    cases = {
        tmp_path / "mask.nii.gz": (
            lambda p: write_mask(old_mask, p, reference=image),
            lambda p: write_mask(new_mask, p, reference=image),
            lambda p: int(read_mask(p, reference=image).array.max()),
        ),
        tmp_path / "report.json": (
            lambda p: write_json_atomic({"v": 0}, p),
            lambda p: write_json_atomic({"v": 1}, p),
            lambda p: json.loads(p.read_text())["v"],
        ),
        tmp_path / "cases.csv": (
            lambda p: write_csv_atomic([{"v": 0}], ["v"], p),
            lambda p: write_csv_atomic([{"v": 1}], ["v"], p),
            lambda p: int(p.read_text().split()[1]),
        ),
    }
    for path, (write_old, write_new, version) in cases.items():
        write_old(path)
        _killed_at(step, lambda path=path, write_new=write_new: write_new(path))
        assert version(path) == (1 if step == "swapped" else 0), path.name
        write_new(path)  # the next write finds the dead writer's temporary and removes it
        assert version(path) == 1
    assert _leftovers(tmp_path) == []


def _quantized(seed: int):
    from core import quant

    base = tiny_unet()
    torch.manual_seed(seed)
    calib = torch.randn(4, 1, 8, 8)
    config = quant.QuantConfig(method="rtn", bits=4 if seed else 8, device="cpu")
    return quant.quantize_model(base.module, calib, config), base


#: (step, whether the filesystem can exchange two folders in one rename); without an exchange
#: the old folder is first moved away, a step of its own.
FOLDER_KILLS = [(step, True) for step in STEPS] + [(step, False) for step in (*STEPS, "moved-away")]


@pytest.mark.parametrize(("step", "exchange"), FOLDER_KILLS)
def test_kill_during_model_folder_writes_leaves_old_or_new(tmp_path, monkeypatch, step, exchange):
    if not exchange:
        monkeypatch.setattr(atomic_files, "_exchange", lambda first, second: False)
    w8, base = _quantized(0)
    w4, _ = _quantized(1)
    folder = tmp_path / "q"
    save_quantized_model(w8, base, folder, label="old W8")
    _killed_at(step, lambda: save_quantized_model(w4, base, folder, overwrite=True, label="new"))
    if step == "moved-away":
        assert not folder.exists()  # the one gap without an exchange: repaired on the next write
        atomic_files._clean_up(folder)
    label = load_model(folder).spec.quantization["label"]
    assert label == ("new" if step == "swapped" else "old W8")
    save_quantized_model(w4, base, folder, overwrite=True, label="new")
    assert load_model(folder).spec.quantization["label"] == "new"
    assert _leftovers(tmp_path) == []

    plain = tmp_path / "float"
    first, second = tiny_unet("first"), tiny_unet("second")
    save_model(first.module, first.spec, plain)
    _killed_at(step, lambda: save_model(second.module, second.spec, plain, overwrite=True))
    if step == "moved-away":
        atomic_files._clean_up(plain)
    assert load_model(plain).spec.name == ("second" if step == "swapped" else "first")
    assert sorted(p.name for p in plain.iterdir()) == ["model.json", "model.safetensors"]


def test_failed_folder_write_keeps_the_old_folder(tmp_path):
    folder = tmp_path / "m"
    model = tiny_unet()
    save_model(model.module, model.spec, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def broken(temp: Path) -> None:
        (temp / "model.json").write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write_folder(folder, broken, replaceable={"model.json", "model.safetensors"})
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert _leftovers(tmp_path) == []


def test_atomic_write_keeps_permissions_of_the_file_it_replaces(tmp_path):
    target = tmp_path / "r.txt"
    target.write_text("x")
    target.chmod(0o640)
    atomic_write(target, lambda temp: temp.write_text("y"))
    assert stat.S_IMODE(target.stat().st_mode) == 0o640 and target.read_text() == "y"


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_new_outputs_follow_the_umask_like_a_plain_file(tmp_path, umask):
    """Weights (written owner-only by safetensors), masks, reports and folders: one mode."""
    old = os.umask(umask)
    try:
        reference = tmp_path / "plain.txt"
        reference.write_text("x")  # what any program of the user would create
        (tmp_path / "plain_folder").mkdir()
        file_mode = stat.S_IMODE(reference.stat().st_mode)
        folder_mode = stat.S_IMODE((tmp_path / "plain_folder").stat().st_mode)
        w4, base = _quantized(1)
        save_quantized_model(w4, base, tmp_path / "q")
        save_model(base.module, base.spec, tmp_path / "float")
        image = Image(array=np.zeros((4, 4, 2), np.int16), affine=np.eye(4))
        write_mask(np.zeros((4, 4, 2), np.uint8), tmp_path / "m.nii.gz", reference=image)
        write_json_atomic({"a": 1}, tmp_path / "r.json")
    finally:
        os.umask(old)
    written = [*(tmp_path / "q").iterdir(), *(tmp_path / "float").iterdir()]
    assert {p.name for p in written} >= {"model.safetensors", "quantized.safetensors"}
    written += [tmp_path / "m.nii.gz", tmp_path / "r.json"]
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in written} == {
        p.name: file_mode for p in written
    }
    for folder in ("q", "float"):
        assert stat.S_IMODE((tmp_path / folder).stat().st_mode) == folder_mode
