"""The one error shape of every OpenAI-style route (the guard's server and a deployment home's):
`{"error": {"message", "type", "param", "code"}}`. Here, apart from `server.py`, so that the home's
server uses it without importing the model side (torch)."""
from __future__ import annotations

from fastapi.responses import JSONResponse


def error_response(status: int, message: str, type_: str = "invalid_request_error", param=None,
                   headers=None) -> JSONResponse:
    """`code` is a string or null in OpenAI's errors (the HTTP status as a number until session 36,
    and still so on the home's routes, a copy of this, until that session's review)."""
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": None}},
                        status_code=status, headers=headers)
