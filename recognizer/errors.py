"""The one error the domain raises for a request it refuses: a stable code and a message.

The domain speaks no HTTP: `recognizer/api/errors.py` maps each code to a status.
"""

from __future__ import annotations


class DomainError(ValueError):
    """Something a client must fix (bad input, a limit, a state that forbids the action).

    `code` is stable, clients branch on it; `message` is for people.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
