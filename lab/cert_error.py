"""The error for lab certificate material: which file and field, what is wrong, the fix."""

from __future__ import annotations

from pathlib import Path

FIX = "run `tlslab certs` (or `make certs`) to regenerate the lab certificates"


class CertificateError(Exception):
    """A lab certificate file is missing, stale or unreadable; str() names path, field and fix."""

    def __init__(self, path: Path, field: str, problem: str, fix: str = FIX) -> None:
        """Record which file and field are wrong, what is wrong, and how to fix it."""
        self.path = path
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(f"{path} [{field}]: {problem}; fix: {fix}")

    def __reduce__(self) -> tuple[type[CertificateError], tuple[Path, str, str, str]]:
        """Pickle with all four constructor arguments so the error survives process boundaries."""
        return (type(self), (self.path, self.field, self.problem, self.fix))
