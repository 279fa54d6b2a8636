"""The one exception type for mistakes a user can fix.

Anything raised as `UserError` reaches the terminal as a single line (`error: ...`) and a non-zero
exit code, never as a traceback. Bugs in the harness are not UserErrors and keep their traceback.
"""


class UserError(Exception):
    """A bad input or an unusable environment, explained in one line."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
