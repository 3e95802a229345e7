"""The failures a user can cause or fix; the CLI prints them as one line each.

Messages often quote what the user gave (a key, a loss name, a file name).
`shown` is how such a value is quoted: control characters escaped, so a file
name cannot move the terminal's cursor or change its colours, and cut to a
readable length, so a 5 MB name gives an 80-character message.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

# Longest user-supplied value echoed in a message, in characters.
SHOWN_LIMIT = 80
# C0 and C1 control characters (ESC among them) and DEL: never sent to a terminal.
# Also lone surrogates: Python's stand-ins for the bytes of a file name that is
# not UTF-8, which no terminal or UTF-8 file can take.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Python's stand-in for byte B (0x80..0xff) of an undecodable name is U+DC00 + B.
_SURROGATE_ESCAPES = range(0xDC80, 0xDD00)


def shown(value: object, limit: int = SHOWN_LIMIT) -> str:
    """`value` as text that is safe to echo: control characters written as
    escapes (\\x1b, \\n) and at most `limit` characters, with a marker if cut."""
    original = str(value)
    # Escape only what can be shown: a 15 MB name costs no more than an 80-character one.
    text = _escape_controls(original[: 4 * limit])
    if len(text) > limit or len(original) > 4 * limit:
        return f"{text[: limit - 1]}… ({len(original):,} characters)"
    return text


def shown_repr(value: str, limit: int = SHOWN_LIMIT) -> str:
    """A user-given name quoted as Python writes it (repr: quotes and escapes
    included), cut like `shown` to about `limit` characters."""
    text = repr(value[: 4 * limit])
    if len(text) > limit + 2 or len(value) > 4 * limit:
        return f"{text[: limit - 1]}… ({len(value):,} characters)"
    return text


def printable_lines(message: str) -> str:
    """A whole message made safe for a terminal: every control character but
    the newlines that separate its lines is escaped."""
    return "\n".join(_escape_controls(line) for line in message.split("\n"))


def file_kind(mode: int) -> str:
    """What a file of this st_mode is, in words: a FIFO, a character device, ..."""
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def _escaped(character: str) -> str:
    if ord(character) in _SURROGATE_ESCAPES:
        return f"\\x{ord(character) - 0xDC00:02x}"  # the byte the file name holds
    return character.encode("unicode_escape").decode("ascii")


def _escape_controls(text: str) -> str:
    return _CONTROL.sub(lambda match: _escaped(match.group()), text)


def is_text(name: str) -> bool:
    """Whether a name from the file system is UTF-8 text (Python keeps the
    bytes of one that is not as lone surrogates, which cannot be written out)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class LossbenchError(Exception):
    """Base class: the message says what is wrong and how to fix it."""


class ParamsError(LossbenchError):
    """Bad params.yaml: the message names the key path and what is allowed."""


class DatasetUnavailable(LossbenchError):
    """The dataset is neither on disk nor downloadable, or its files are damaged."""


class MissingInput(LossbenchError):
    """A stage's input is missing; the message names the stage that makes it."""


class DamagedInput(LossbenchError):
    """An input file exists but cannot be used: truncated, the wrong shape, non-finite numbers."""


class TrainingDiverged(LossbenchError):
    """The loss became NaN or infinite."""


class OutputWriteError(LossbenchError):
    """An output file could not be written (disk full, permissions, ...)."""


class TrainingInterrupted(LossbenchError):
    """Ctrl-C or SIGTERM during training; completed epochs are checkpointed."""


def read_utf8(path: Path, where: str, failure: type[LossbenchError], advice: str = "save it as UTF-8") -> str:
    """A text file, or `failure` naming it (`where`): unreadable or not UTF-8
    (then `advice` follows: a user saves their file again; a pipeline file is damaged)."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise failure(f"{where}: not UTF-8 text (byte {error.start}); {advice}") from None
    except OSError as error:
        raise failure(f"{where}: cannot read it ({error.strerror or error})") from None
