"""Who is calling: a client's token -> its user.  One check for every REST route (``Auth`` as a
FastAPI dependency: ``user: str = Depends(auth)``) and for the kernel websocket (``Auth.user_of``).

A token comes as ``Authorization: token T`` (or ``bearer T``) or ``?token=T`` and is compared by
hash (``BackendConfig.user_of``).  A REST call without a right one is answered 401
``{"error": "missing or wrong token"}``; a kernel websocket is closed with 1008 and that reason.
A worker has no token: it proves itself with the one-time secret its runtime gave it (workers.py).
"""
from __future__ import annotations

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse

from jupyter_gpu_backend.config import BackendConfig

WRONG_TOKEN = "missing or wrong token"


def token_of(headers, query) -> str:
    auth = headers.get("authorization", "")
    for scheme in ("token ", "bearer "):
        if auth.lower().startswith(scheme):
            return auth[len(scheme) :].strip()
    return query.get("token", "")


class Unauthorized(Exception):
    """A REST call without a right token (answered by ``unauthorized``)."""


async def unauthorized(request: Request, exc: Unauthorized | None) -> JSONResponse:
    return JSONResponse({"error": WRONG_TOKEN}, status_code=401)


class Auth:
    def __init__(self, config: BackendConfig):
        self.config = config

    def user_of(self, conn: HTTPConnection) -> str | None:
        """The user of a request's or a websocket's token, or None."""
        return self.config.user_of(token_of(conn.headers, conn.query_params))

    async def __call__(self, request: Request) -> str:
        """The dependency: the caller's user name, or ``Unauthorized``."""
        user = self.user_of(request)
        if not user:  # an empty user name too (the kernel websocket refuses only None)
            raise Unauthorized()
        return user
