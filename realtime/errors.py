"""The one error type for mistakes a user can make."""


class RealtimeError(Exception):
    """A problem the user can fix: a missing file, a bad video, no camera, a wrong model.

    The message is one line that names the input and, where there is one, the fix.
    The CLI prints it on stderr and exits non-zero; anything else is a bug and keeps
    its traceback.
    """
