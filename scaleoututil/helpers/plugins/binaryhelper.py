"""Parameters as raw float64 bytes: for models that are one flat vector (e.g. exported by non-Python clients)."""

from __future__ import annotations

from scaleoututil.helpers.plugins import numpyhelper


class Helper(numpyhelper.Helper):
    """numpyhelper arithmetic; save writes every array flattened as little-endian float64, back to back;
    load returns the whole file as a one-element list holding a 1-D float64 array."""

    name = "binaryhelper"
    default_file_type = "raw_binary"
