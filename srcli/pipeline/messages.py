"""One-line messages about a file, shared by the image and video jobs."""

from __future__ import annotations

from srcli.errors import SrcliError


def error_text(exc: BaseException) -> str:
    """The user-facing text of ``exc``: its message for srcli's own errors, else its type and message."""
    if isinstance(exc, SrcliError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def one_line(path: str, message: str) -> str:
    """``message`` about ``path`` on one line, naming the file once."""
    message = " ".join(message.split())
    return message if message.startswith(path) else f"{path}: {message}"
