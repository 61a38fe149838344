"""The proxy's own refusals: raised anywhere in the core, answered as JSON by the addon."""


class RequestRejected(Exception):
    """The proxy answers this request itself; it is never forwarded."""

    def __init__(self, status: int, error: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.headers = headers or {}
