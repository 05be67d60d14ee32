"""Safe writes: files and model folders are built beside the target and swapped in at the end.

A crash, a full disk, a kill or a cancelled job never leaves half a file (or a folder mixing an
old spec with new weights) under the final name: the new content is written to a hidden
temporary sibling, fsynced, and renamed over the target, so the target holds either the old
content or the new one. Masks (``core.io``), reports (``core.report_files``), model folders
(``core.models.loading``) and the GUI's exports all write through here.

Outputs must be regular files (or folders for model folders). An existing device node, FIFO,
socket, a link to one, or anything under ``/proc``, ``/sys`` or ``/dev`` is refused before
anything is written: replacing a FIFO by a file, or writing a report into ``/dev/sda``, is
never what the user meant. A symbolic link to a regular file (or folder) is written through:
its target is replaced and the link stays.

Temporaries are named ``.NAME.PID-XXXX.partial...`` (hidden, so folder scans skip them). Those
left by a process that no longer runs are removed on the next write to the same path.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Collection
from pathlib import Path

__all__ = [
    "atomic_write",
    "atomic_write_folder",
    "new_file_mode",
    "output_folder",
    "output_target",
    "same_file",
    "step_hook",
    "write_text_atomic",
]

#: Called with the name of each step of a write ("temp-written", "synced", "swapped", ...).
#: Tests set it to stop a write at every point and check what a kill there would leave.
step_hook: Callable[[str], None] | None = None

#: Paths whose files are kernel interfaces, never places to save results.
_SYSTEM_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))

_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _step(name: str) -> None:
    if step_hook is not None:
        step_hook(name)


def same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name the same file or folder (links and ``..`` resolved)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _kind(mode: int) -> str | None:
    return next((words for test, words in _KINDS if test(mode)), None)


def output_target(path: str | os.PathLike[str], *, folder: bool = False) -> Path:
    """The path a write to ``path`` really replaces, or a ValueError saying why it must not.

    Parameters
    ----------
    path : path-like
        An output the user named (a mask, a report, a model folder).
    folder : bool
        The output is a folder (a model folder) rather than a file.

    Returns
    -------
    pathlib.Path
        ``path`` itself, or for a symbolic link the file or folder it points to (written
        through, so the link keeps working).

    Raises
    ------
    ValueError
        ``path`` lies under /proc, /sys or /dev, is (or links to) a device, FIFO or socket, is
        a dangling link, or is a folder where a file is expected (and the reverse).
    """
    given = Path(path)
    resolved = given.resolve()
    for root in _SYSTEM_ROOTS:
        if given.absolute().is_relative_to(root) or resolved.is_relative_to(root):
            raise ValueError(f"{given}: is a system path under {root}, not a place to save files")
    try:
        mode = os.stat(given).st_mode  # follows links: the kind of what would be written
    except FileNotFoundError:
        if given.is_symlink():
            raise ValueError(
                f"{given}: is a link to {os.readlink(given)}, which does not exist; "
                "refusing to write through it"
            ) from None
        return given
    except OSError as error:
        raise ValueError(f"{given}: cannot check it ({error.strerror})") from None
    kind = _kind(mode)
    if kind is not None:
        what = f"links to {kind}" if given.is_symlink() else f"is {kind}"
        raise ValueError(f"{given}: {what}, not a regular file; refusing to write to it")
    if folder and not stat.S_ISDIR(mode):
        raise ValueError(f"{given}: exists and is not a folder")
    if not folder and stat.S_ISDIR(mode):
        raise ValueError(f"{given}: is a folder, not a file")
    return resolved if given.is_symlink() else given


_TEMP_PATTERN = r"^\.{name}\.(\d+)-[^/]*\.(partial|old)(\..*)?$"


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: it exists
    return True


def _stale_temporaries(target: Path) -> list[tuple[Path, str]]:
    """Temporaries of ended writes to ``target``, each with its kind ("partial" or "old")."""
    pattern = re.compile(_TEMP_PATTERN.format(name=re.escape(target.name)))
    stale = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return []
    for entry in entries:
        match = pattern.match(entry.name)
        if match and not _process_alive(int(match.group(1))):
            stale.append((Path(entry.path), match.group(2)))
    return sorted(stale)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _clean_up(target: Path) -> None:
    """Remove what interrupted writes to ``target`` left; bring back a folder a kill moved away.

    Without an atomic exchange, replacing a folder takes two renames (old away, new in); a kill
    between them leaves the old folder under its ``.old`` name and nothing at the target.
    """
    for stale, kind in _stale_temporaries(target):
        if kind == "old" and not target.exists() and stale.is_dir():
            os.rename(stale, target)
        else:
            _remove(stale)


def _fsync_path(path: Path) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    handle = os.open(path, flags)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _umask() -> int:
    """The process's file-creation mask, read without changing it where the system allows."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: read by setting it, and put it back at once
    os.umask(mask)
    return mask


def new_file_mode(*, folder: bool = False) -> int:
    """The permission bits a plain ``open()`` (or ``mkdir``) would give a new file (or folder).

    Temporaries are owner-only (``mkstemp``, ``mkdtemp``, and safetensors' writer make them
    0600/0700); what is saved must follow the user's umask like any other file they create.
    """
    return (0o777 if folder else 0o666) & ~_umask()


def _temp_prefix(target: Path) -> str:
    return f".{target.name}.{os.getpid()}-"


def atomic_write(target: Path, write: Callable[[Path], None], *, suffix: str = "") -> Path:
    """Write ``target`` through ``write(temp_path)``, then rename the temporary file over it.

    Parameters
    ----------
    target : Path
        The final file (see :func:`output_target` for what is refused); its folder must exist.
    write : callable
        Writes the content to the temporary path it is given.
    suffix : str
        Ending of the temporary file (writers such as nibabel pick the format by it).

    Returns
    -------
    pathlib.Path
        ``target`` as given.

    Raises
    ------
    ValueError
        The folder does not exist, or ``target`` is a folder or not a regular file.
    """
    given = Path(target)
    target = output_target(given)
    if not target.parent.is_dir():
        raise ValueError(f"{given}: folder {target.parent} does not exist")
    _clean_up(target)
    handle, temp_name = tempfile.mkstemp(
        prefix=_temp_prefix(target), suffix=f".partial{suffix}", dir=target.parent
    )
    os.close(handle)
    temp = Path(temp_name)
    try:
        _step("temp-created")
        write(temp)
        _step("temp-written")
        # mkstemp makes the file owner-only; a saved file should be as readable as any other.
        os.chmod(temp, target.stat().st_mode & 0o777 if target.exists() else new_file_mode())
        _fsync_path(temp)  # the data is on disk before the name points to it
        _step("synced")
        os.replace(temp, target)
        _step("swapped")
        _fsync_path(target.parent)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return given


def write_text_atomic(text: str, path: str | os.PathLike[str]) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_write`)."""

    def write(temp: Path) -> None:
        with open(temp, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)

    return atomic_write(Path(path), write)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # the filesystem cannot exchange
        return False
    raise OSError(code, os.strerror(code), str(second))


def _swap_in(temp: Path, target: Path) -> None:
    """Put the finished folder ``temp`` at ``target``; the old folder goes only after that."""
    if not target.exists():
        os.rename(temp, target)
        _step("swapped")
        return
    if _exchange(temp, target):
        _step("swapped")
        _remove(temp)  # now holds the old content
        return
    old = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=".old", dir=target.parent))
    os.rename(target, old)  # replaces the empty placeholder folder
    _step("moved-away")
    os.rename(temp, target)
    _step("swapped")
    _remove(old)


def output_folder(path: str | os.PathLike[str], *, replaceable: Collection[str] = ()) -> Path:
    """The folder a folder write to ``path`` replaces, or a ValueError saying why it must not.

    Parameters
    ----------
    path : path-like
        The folder to write (a link to a folder is written through).
    replaceable : collection of str
        Names an existing folder may hold; anything else (the user's own files) would be lost
        when the new folder is swapped in, so it is refused (hidden files included).

    Returns
    -------
    pathlib.Path
        The folder to replace (see :func:`output_target`).

    Raises
    ------
    ValueError
        As :func:`output_target`, or the folder holds files outside ``replaceable``.
    """
    folder = output_target(path, folder=True)
    if folder.is_dir():
        # Hidden files count too: the swap would drop them with the rest of the old folder.
        foreign = sorted(
            entry.name for entry in os.scandir(folder) if entry.name not in replaceable
        )
        if foreign:
            listed = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise ValueError(
                f"{path}: holds other files ({listed}); save into an empty folder or a model folder"
            )
    return folder


def atomic_write_folder(
    target: str | os.PathLike[str],
    write: Callable[[Path], None],
    *,
    replaceable: Collection[str] = (),
) -> Path:
    """Write a whole folder through ``write(temp_folder)`` and swap it in when complete.

    The folder is built as a hidden sibling of ``target``, every file in it is fsynced, and it
    replaces ``target`` in one rename (an atomic exchange where the filesystem supports it), so a
    kill at any moment leaves the old folder or the new one, never an empty or mixed folder.

    Parameters
    ----------
    target : path-like
        The folder to write; its parent folder is created if missing.
    write : callable
        Writes every file of the new folder into the empty folder it is given.
    replaceable : collection of str
        Names an existing ``target`` may hold (an earlier model's files). Anything else there
        (the user's own files) would be lost by the swap, so it is refused.

    Returns
    -------
    pathlib.Path
        ``target`` as given.

    Raises
    ------
    ValueError
        ``target`` is not a folder, is a system path, or holds files outside ``replaceable``.
    """
    given = Path(target)
    folder = output_folder(given, replaceable=replaceable)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _clean_up(folder)
    temp = Path(tempfile.mkdtemp(prefix=_temp_prefix(folder), suffix=".partial", dir=folder.parent))
    try:
        _step("temp-created")
        write(temp)
        _step("temp-written")
        # mkdtemp makes the folder owner-only and some writers (safetensors) their files too:
        # every file of the saved folder gets the mode the user's umask gives other outputs.
        os.chmod(temp, new_file_mode(folder=True))
        for path in sorted(temp.rglob("*")):
            if path.is_dir() and not path.is_symlink():
                os.chmod(path, new_file_mode(folder=True))
            elif path.is_file() and not path.is_symlink():
                os.chmod(path, new_file_mode())
                _fsync_path(path)
        _fsync_path(temp)
        _step("synced")
        _swap_in(temp, folder)
        with contextlib.suppress(OSError):
            _fsync_path(folder.parent)
    except BaseException:
        _remove(temp)
        raise
    return given
