"""The one exception type for user errors: the CLI prints its message on one line and exits 2."""


class SgeoError(Exception):
    """Bad input or environment that the user can fix; the message says what is wrong and what to do."""


def one_line(text: object, limit: int | None = None, *, first: bool = False, ellipsis: bool = False) -> str:
    """`text` (a message, or an exception) as one line, to put inside an error message.

    Every run of whitespace, newlines included, becomes one space; with `first`, only the first non-blank line
    is kept (for errors whose later lines are a traceback or a dump). Cut to `limit` characters (`ellipsis`:
    the cut text ends in "..."). An exception with no text gives its type's name."""
    raw = str(text)
    line = next((ln.strip() for ln in raw.splitlines() if ln.strip()), "") if first else " ".join(raw.split())
    if limit is not None and len(line) > limit:
        line = line[: limit - 3] + "..." if ellipsis else line[:limit]
    return line or (type(text).__name__ if isinstance(text, BaseException) else "")
