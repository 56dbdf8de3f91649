"""Greylisting in memory: defer the first attempts of each message (triplet), accept the rest."""

from __future__ import annotations

import threading

GREYLIST_LIMIT = 100_000  # triplets remembered; past it the oldest is forgotten
GREYLISTED = "451 4.7.1 Recipient address rejected: Greylisted, try again later"


class GreylistTracker:
    """Counts delivery attempts per (client IP, MAIL FROM, RCPT TO) triplet in this process."""

    def __init__(self, first_attempts: int) -> None:
        """Defer the first `first_attempts` attempts of every triplet."""
        self.first_attempts = first_attempts
        self._seen: dict[tuple[str, str, str], int] = {}
        self._lock = threading.Lock()

    def defers(self, client_ip: str, mail_from: str, rcpt: str) -> bool:
        """Count one attempt of the triplet; return True while it is among the first attempts."""
        key = (client_ip, mail_from.lower(), rcpt.lower())
        with self._lock:
            count = self._seen.pop(key, 0) + 1
            self._seen[key] = count  # re-inserted last: the oldest triplet is first in the dict
            while len(self._seen) > GREYLIST_LIMIT:
                del self._seen[next(iter(self._seen))]
        return count <= self.first_attempts
