"""Operating-system errors as one-line messages that name the file, and bounded reads."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conceptlens.errors import ConceptlensError

__all__ = ["FileAccessError", "FileContentError", "atomic_write_text", "describe_os_error",
           "file_errors", "os_error_reason", "read_text_limited"]

#: Largest text file (vocabulary, YAML, JSON) read by default: 64 MiB.
DEFAULT_MAX_TEXT_BYTES = 64 * 1024 * 1024

_REASONS = {
    errno.EEXIST: "a file of that name exists where a folder is needed",
    errno.EISDIR: "is a folder, not a file",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or folder",
    errno.ENOSPC: "no space left on the device",
    errno.EROFS: "read-only file system",
    errno.ELOOP: "too many levels of symbolic links (a symlink loop?)",
    errno.ENAMETOOLONG: "file name too long",
}


class FileAccessError(ConceptlensError, OSError):
    """A file or folder the user named cannot be read or written.

    Also an :class:`OSError` (with ``errno`` and ``filename`` set) so that existing
    ``except OSError`` handlers keep working; ``str()`` is one line naming the path.
    """

    def __init__(self, message: str, *, errno_: int | None = None, filename: str | None = None):
        super().__init__(message)
        self.errno = errno_
        self.filename = filename
        self.message = message

    def __str__(self) -> str:
        return self.message


class FileContentError(ConceptlensError, ValueError):
    """A file the user named is readable but unusable as a whole (too large, not text).

    Attributes:
        reason: What is wrong, without the file name.
    """

    def __init__(self, path: str | os.PathLike, action: str, reason: str) -> None:
        super().__init__(f"cannot {action} {str(path)!r}: {reason}")
        self.reason = reason


def os_error_reason(error: OSError) -> str:
    """What went wrong, in words, without the path (``"permission denied"``)."""
    reason = _REASONS.get(error.errno or -1) or (error.strerror or str(error)).lower()
    if error.filename2 is not None:
        reason = f"{reason} ({error.filename2})"
    return reason


def describe_os_error(error: OSError, path: str | os.PathLike | None = None,
                      action: str | None = None) -> str:
    """``"cannot <action> '<path>': <reason>"`` for an :class:`OSError` (no ``[Errno N]``)."""
    name = path if path is not None else error.filename
    reason = os_error_reason(error)
    if name is None:
        return f"{action}: {reason}" if action else reason
    where = f"{str(name)!r}"
    if error.filename is not None and path is not None and str(error.filename) != str(path):
        where += f" (at {str(error.filename)!r})"
    return f"cannot {action} {where}: {reason}" if action else f"{where}: {reason}"


@contextmanager
def file_errors(path: str | os.PathLike, action: str) -> Iterator[None]:
    """Re-raise any :class:`OSError` inside the block as :class:`FileAccessError`.

    Errors that already are conceptlens errors pass through unchanged.

    Examples:
        >>> try:
        ...     with file_errors("/no/such/file.csv", "read labels file"):
        ...         open("/no/such/file.csv")
        ... except FileAccessError as err:
        ...     print(err)
        cannot read labels file '/no/such/file.csv': no such file or folder
    """
    try:
        yield
    except ConceptlensError:
        raise
    except OSError as error:
        raise FileAccessError(
            describe_os_error(error, path, action), errno_=error.errno, filename=str(path)
        ) from error


def read_text_limited(path: str | os.PathLike, *, what: str,
                      max_bytes: int = DEFAULT_MAX_TEXT_BYTES, encoding: str = "utf-8") -> str:
    """The text of a user file, refusing folders, oversized files and non-UTF-8 bytes.

    Raises:
        FileAccessError: The path is missing, a folder or unreadable.
        FileContentError: Larger than ``max_bytes`` or not valid text.
    """
    path = Path(path)
    with file_errors(path, f"read {what}"):
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileContentError(path, f"read {what}",
                               f"larger than the limit of {max_bytes:,} bytes")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        raise FileContentError(path, f"read {what}", f"not {encoding.upper()} text (bad byte "
                               f"at offset {error.start})") from None


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` through a temporary file in the
    same folder and an atomic rename: readers see the old file or the new one, never half."""
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
