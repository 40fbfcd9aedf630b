"""The error a test-hub handler raises to answer an HTTP error (shared by hub.py and its
Xet and bucket modules)."""


class HubError(Exception):
    """An HTTP error answer: status, message, optional X-Error-Code and extra headers."""

    def __init__(self, status, message, code=None, headers=None, body=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}
        self.body = body
