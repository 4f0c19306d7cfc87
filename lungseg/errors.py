"""Errors a user can act on: each carries one line that names the problem."""


class LungsegError(ValueError):
    """Bad input or an impossible request, explained in one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class InputError(LungsegError):
    """The input is not a usable chest CT (or contour) as given."""


class ContourError(LungsegError):
    """A manual contour cannot be placed on the CT."""
