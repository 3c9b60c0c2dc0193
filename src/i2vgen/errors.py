"""Exceptions with one-line, user-facing messages.

Every error the command line turns into a single line and a non-zero exit derives from `I2VGenError`.
"""


class I2VGenError(Exception):
    """Base class: the message is shown to the user as it is, on one line."""


class InputError(I2VGenError, ValueError):
    """Bad user input: an unreadable image or video, a size or a setting the model cannot take."""


class CheckpointError(I2VGenError):
    """A checkpoint or model folder that cannot be loaded: missing, corrupt, or not matching the model."""
