"""The one exception type for user errors: the CLI prints its message on one line and exits 2."""


class SgeoError(Exception):
    """Bad input or environment that the user can fix; the message says what is wrong and what to do."""
