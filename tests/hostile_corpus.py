"""A corpus of odd and hostile image files, made at test time in a temporary folder.

Each file says what a reader must do with it: be refused (a clear error, no exit 0), ask for a
volume, or be read (possibly with warnings). The CLI and GUI tests run every file through
``info``, ``segment`` and the GUI's open path and compare against this expectation. Nothing here
is large on disk: the "huge" files are headers that only claim a huge size.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import PIL.Image
import SimpleITK as sitk
import skimage.data
import tifffile

__all__ = ["CorpusFile", "make_corpus"]

#: What a reader must do with a file.
REFUSE = "refuse"  # error, exit status 1
CHOOSE = "choose"  # asks for a volume/page: exit status 2 without one
READ = "read"  # read, maybe with warnings
READ_NOT_SEGMENT = "read-not-segment"  # info reads it, segment refuses (NaN voxels)


@dataclass(frozen=True)
class CorpusFile:
    """One file of the corpus and what must happen to it."""

    path: Path
    expect: str
    why: str


def _nifti(path: Path, array: np.ndarray) -> Path:
    nib.Nifti1Image(array, np.diag([0.8, 0.8, 2.5, 1.0])).to_filename(path)
    return path


def _header_only_nifti(path: Path, shape: tuple[int, ...], dtype=np.int16) -> Path:
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header["vox_offset"] = 352
    data = header.binaryblock + b"\0" * 4 + b"\0" * 256
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` RGB pixels, with almost no data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\0" * 1024)
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data)
    path.write_bytes(png + _png_chunk(b"IEND", b""))
    return path


def _dicom_claiming(path: Path, rows: int, columns: int, frames: int) -> Path:
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    dataset = dcmread(get_testdata_file("CT_small.dcm"))
    dataset.Rows, dataset.Columns, dataset.NumberOfFrames = rows, columns, frames
    dataset.save_as(path)
    return path


def make_corpus(folder: Path) -> list[CorpusFile]:
    """Write the corpus into ``folder`` (created) and return its files with their expectations.

    FIFOs are made with ``os.mkfifo`` inside ``folder``; the machine's ``/dev`` is only named
    by a header's data-file field, never opened.
    """
    folder.mkdir(parents=True, exist_ok=True)
    files: list[CorpusFile] = []

    def add(name: str, expect: str, why: str) -> Path:
        path = folder / name
        files.append(CorpusFile(path, expect, why))
        return path

    camera = skimage.data.camera()[200:248, 200:264]  # 48 x 64 grey
    volume = (camera[:, :, None] * np.ones(3)).astype(np.int16)

    # NIfTI
    add("empty.nii", REFUSE, "zero bytes").write_bytes(b"")
    add("noise.nii.gz", REFUSE, "random bytes").write_bytes(os.urandom(2048))
    whole = gzip.compress(_nifti(folder / "whole.tmp.nii", volume).read_bytes())
    (folder / "whole.tmp.nii").unlink()
    add("truncated.nii.gz", REFUSE, "gzip stream cut in half").write_bytes(whole[: len(whole) // 2])
    # Claims no machine can meet (64 TiB), so the corpus means the same on any machine.
    huge = (32767, 32767, 32767)
    _header_only_nifti(add("bomb.nii", REFUSE, "header claims 64 TiB"), huge)
    _header_only_nifti(add("bomb.nii.gz", REFUSE, "gz header claims 64 TiB"), huge)
    _nifti(add("complex.nii", REFUSE, "complex voxels"), volume.astype(np.complex64))
    _nifti(add("all_inf.nii", REFUSE, "every voxel infinite"), np.full((8, 8, 3), np.inf, "f4"))
    nan = volume.astype(np.float32)
    nan[5, 5, 1] = np.nan
    _nifti(add("some_nan.nii.gz", READ_NOT_SEGMENT, "one NaN voxel"), nan)
    rgb = np.zeros(volume.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"] = camera[:, :, None]
    _nifti(add("rgb24.nii.gz", READ, "RGB24 voxels"), rgb)
    _nifti(add("five_d.nii", REFUSE, "5-D"), np.zeros((4, 4, 3, 2, 2), np.int16))
    _nifti(add("four_d.nii.gz", CHOOSE, "two volumes"), np.stack([volume, volume], axis=-1))

    # NRRD / MetaImage
    header = "ObjectType = Image\nNDims = 3\nDimSize = 64 48 3\nElementType = MET_SHORT\n"
    os.mkfifo(folder / "fifo.raw")
    add("fifo.mhd", REFUSE, "data file is a FIFO").write_text(
        header + "ElementDataFile = fifo.raw\n"
    )
    add("device.mhd", REFUSE, "data file is /dev/zero").write_text(
        header + "ElementDataFile = /dev/zero\n"
    )
    sitk.WriteImage(sitk.GetImageFromArray(volume.T.copy()), str(folder / "whole.tmp.mha"))
    whole_mha = (folder / "whole.tmp.mha").read_bytes()
    (folder / "whole.tmp.mha").unlink()
    add("truncated.mha", REFUSE, "voxel data cut short").write_bytes(whole_mha[:-100])
    add("bomb.nrrd", REFUSE, "header claims 512 TiB").write_bytes(
        b"NRRD0004\ntype: short\ndimension: 3\nsizes: 65536 65536 65536\nendian: little\n"
        b"encoding: raw\n\n" + b"\0" * 64
    )
    add("noise.mha", REFUSE, "random bytes").write_bytes(os.urandom(512))

    # Natural images
    add("noise.png", REFUSE, "random bytes").write_bytes(os.urandom(300))
    add("noise.jpg", REFUSE, "random bytes").write_bytes(b"\xff\xd8\xff" + os.urandom(300))
    _png_claiming(add("bomb.png", REFUSE, "header claims 3.6 G pixels"), 60000, 60000)
    _png_claiming(add("big_empty.png", REFUSE, "81 M pixels claimed, no data"), 9000, 9000)
    pages = np.stack([camera[:, :3], camera[:, 3:6], camera[:, 6:9]])
    tifffile.imwrite(
        add("three_pages.tif", CHOOSE, "3 grey pages"), pages, photometric="minisblack"
    )
    cmyk = PIL.Image.fromarray(skimage.data.astronaut()[:48, :64]).convert("CMYK")
    cmyk.save(add("cmyk.jpg", READ, "CMYK JPEG"), quality=90)
    deep = camera.astype(np.uint16) * 257
    PIL.Image.fromarray(deep).save(add("deep.png", READ, "16-bit grey"))

    # DICOM
    add("noise.dcm", REFUSE, "random bytes").write_bytes(b"\0" * 128 + b"DICM" + os.urandom(200))
    _dicom_claiming(add("bomb.dcm", REFUSE, "header claims 65535^2 x 1000"), 65535, 65535, 1000)
    return files
