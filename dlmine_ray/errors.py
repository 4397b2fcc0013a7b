"""User-facing errors: one clear line that names the problem."""


class DlmineError(Exception):
    """An error caused by the user's input (job, data, arguments).

    The CLI prints ``str(err)`` on one line and exits non-zero; no traceback is shown,
    because the message already says what to fix.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
