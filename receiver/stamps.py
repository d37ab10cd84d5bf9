"""``second_text``: a whole unix second as ISO 8601 in UTC, without the zone, cached for the next
caller of the same second (the log lines' and the documents' timestamps share it).

The cache is one tuple, replaced whole: a thread that reads it never sees one second's number
with another's text.
"""

from __future__ import annotations

import time

_cached: tuple[int, str] = (-1, "")


def second_text(whole: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of ``whole`` (unix seconds, UTC)."""
    global _cached
    second, text = _cached
    if second != whole:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _cached = (whole, text)
    return text
