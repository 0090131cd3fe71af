"""The one error a request can have: a field that is out of range or malformed."""

from __future__ import annotations


class ValidationError(ValueError):
    """A request field is out of range or malformed; ``field`` names it."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name
