"""Hostile outputs and inputs on the command line: refused in words, nothing damaged."""

from __future__ import annotations

import os
import stat

from core.cli.entry import main


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
