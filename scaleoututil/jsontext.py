"""Lenient JSON for free-text wire fields (`ActivityReport.response`, record payloads, `data`).

Clients fill these fields with JSON by convention only, so a value that is not JSON is kept
as the text it is rather than dropped or raised on.
"""

from __future__ import annotations

import json
from typing import Any


def loads_lenient(text: str) -> Any:
    """The JSON value of `text`; None for empty text; the text itself when it is not JSON."""
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text
