"""How much of the daemon its streaming readers may hold: a cap on their number and a byte
budget for the replay pages they hold.

A reader that stops reading (``telemetry tail ... | less`` left paused) keeps, until it reads
again, the replay page it was being sent and what gRPC has buffered for its connection. A
page is therefore cut by bytes, not records, and the bytes one page may hold shrink as readers
multiply: ``page_bytes()`` is the total budget shared by the readers open now, kept between a
floor (a reader always makes progress) and a ceiling (one reader alone gains nothing beyond
it). With ``n`` readers, their pages hold at most ``max(total, n * floor)`` bytes, plus one
record each where a single record is larger than its page. Past ``max_readers`` a new stream
is refused with RESOURCE_EXHAUSTED, so that bound holds for every ``n`` the daemon accepts.
The live half of a stream is bounded separately, by ``telemetry.hub``'s queue bounds.
"""
from __future__ import annotations

DEFAULT_MAX_READERS = 1000
DEFAULT_TOTAL_PAGE_BYTES = 8 * 1024 * 1024
MAX_PAGE_BYTES = 1024 * 1024
MIN_PAGE_BYTES = 16 * 1024


class TooManyReaders(Exception):
    """The daemon serves ``max_readers`` streams already."""


class ReaderBudget:
    """Counts open streams and sizes their replay pages."""

    def __init__(self, max_readers: int = DEFAULT_MAX_READERS, total_page_bytes: int = DEFAULT_TOTAL_PAGE_BYTES,
                 max_page_bytes: int = MAX_PAGE_BYTES, min_page_bytes: int = MIN_PAGE_BYTES) -> None:
        if max_readers < 1 or min_page_bytes < 1 or max_page_bytes < min_page_bytes:
            raise ValueError("reader budget: need max_readers >= 1 and 1 <= min_page_bytes <= max_page_bytes")
        self.max_readers = max_readers
        self.total_page_bytes = total_page_bytes
        self.max_page_bytes = max_page_bytes
        self.min_page_bytes = min_page_bytes
        self.active = 0

    def admit(self) -> None:
        """Count one more open stream, or raise ``TooManyReaders`` (with the message to show)."""
        if self.active >= self.max_readers:
            raise TooManyReaders(f"this daemon already serves {self.active} streams, its limit: close some "
                                 f"(viewers, tails, dashboards) or start the daemon with a higher --max-readers")
        self.active += 1

    def leave(self) -> None:
        """One stream ended."""
        self.active -= 1

    def page_bytes(self) -> int:
        """How many bytes the next replay page may hold, given the streams open now."""
        share = self.total_page_bytes // max(1, self.active)
        return max(self.min_page_bytes, min(self.max_page_bytes, share))
