"""Medical and natural image input/output with explicit world geometry (RAS+ millimetres).

See ``docs/IO_IMPL.md`` for the axis conventions and the LPS/RAS conversion.
"""

from core.io.errors import ImageReadError
from core.io.image import Image

__all__ = ["Image", "ImageReadError"]
