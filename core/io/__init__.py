"""Medical and natural image input/output with explicit world geometry (RAS+ millimetres).

See ``docs/IO_IMPL.md`` for the axis conventions and the LPS/RAS conversion.
"""

from core.io.dicom import DicomSeries, list_dicom_series
from core.io.errors import ImageReadError, VolumeChoiceRequired, VolumeOutOfRange
from core.io.image import Image
from core.io.mask import Mask, read_mask, write_mask
from core.io.reader import read_image

__all__ = [
    "DicomSeries",
    "Image",
    "ImageReadError",
    "Mask",
    "VolumeChoiceRequired",
    "VolumeOutOfRange",
    "list_dicom_series",
    "read_image",
    "read_mask",
    "write_mask",
]
