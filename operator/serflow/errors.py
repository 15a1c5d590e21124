"""The one error type users see: a single line naming the source, the field and what was expected."""


class InputError(ValueError):
    """Bad input from a user: a file, a field, a trace line. Rendered as one line, exit code 2."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)

    def within(self, source: str) -> "InputError":
        """The same error, prefixed by the file (or object) it came from."""
        return InputError(f"{source}: {self.where}" if self.where else source, self.message)
