"""Errors shared across the package."""


class UserFacingError(Exception):
    """An error whose message is written for the person at the terminal.

    The CLI prints it without a traceback and exits with status 2, so the message must say what
    went wrong and what to do about it.
    """
