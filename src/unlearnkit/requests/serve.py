"""`unlearn serve --home DIR`: the home's current version behind its guard, through the guard's
OpenAI-compatible server (`unlearnkit.guard.server.create_app`), plus two request routes:

* `POST /v1/forget` {name, aliases?, facts? [{question, answer} | {fact}], reason?} files a forget
  request in the ledger (the same flow as `unlearn request add`) and returns {id, status, merged};
* `GET /v1/requests/{id}` returns the request's status and times (never its name or facts).

Both need `Authorization: Bearer $UNLEARN_GUARD_TOKEN`. The guard server's own routes that list and
delete its targets are refused (405): the home's targets are its requests. Every other route goes to the guard's app
for the current version. The `current` pointer is read on each request; when it names a new version,
that version is checked against its manifest and loaded, and requests go to it from then on (no
restart). A version that fails its manifest check is never loaded: the server keeps the one it has.
"""
from __future__ import annotations

import logging
import os
import secrets
import threading
import time

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field

from ..guard.errors import error_response
from .home import Home, HomeError, open_home

log = logging.getLogger("unlearnkit.requests.serve")
RECHECK_S = 30.0  # how long a version that failed its check is not checked again (it is hashed whole)


class ForgetBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    aliases: list[str] = Field(default_factory=list, max_length=32)
    facts: list[dict] = Field(default_factory=list, max_length=256)
    reason: str | None = Field(default=None, max_length=2000)




class HomeServer:
    """An ASGI app: request routes here, everything else to the guard app of the current version."""

    def __init__(self, home: str | os.PathLike | Home | None, token: str | None = None):
        self.home = open_home(home)
        self.token = token if token is not None else os.environ.get("UNLEARN_GUARD_TOKEN") or None
        self._lock = threading.Lock()
        self._name: str | None = None
        self._app = None
        self._refused: tuple[str | None, float] = (None, 0.0)  # the version `current` named that failed, and when
        self.routes = self._request_routes()
        self.guard_app()  # load now: a broken current version fails at start, not on the first request

    @property
    def version(self) -> str | None:
        return self._name

    def guard_app(self):
        """The guard app for the current version, reloaded when `current` changed."""
        from ..guard.server import create_app
        from ..models.load import load_model
        from ..scoring import LM

        try:
            name = self.home.current_name()
        except HomeError as e:  # `current` missing or garbled: a 500 on every request until session 35
            if self._app is None:
                raise
            self._refuse(None, e)
            return self._app
        if name == self._name or (name == self._refused[0] and time.monotonic() < self._refused[1] + RECHECK_S):
            return self._app  # a refused version is checked again every RECHECK_S, not at every request
        with self._lock:
            if name != self._name:
                try:
                    v = self.home.check_version(name)
                except HomeError as e:
                    if self._app is None:
                        raise
                    self._refuse(name, e)
                    return self._app
                lm = LM(*load_model(str(v.path)))
                self._app = create_app(lm, self.home.guard(), model_name=name, token=self.token)
                self._name = name
                log.info("serving version %s", name)
        return self._app

    def _refuse(self, name: str | None, e: HomeError) -> None:
        """Keep serving the loaded version, and say why the pointer's is not served."""
        log.error("keeping version %s: %s", self._name, e)
        self._refused = (name, time.monotonic())

    def _admin(self, request: Request):
        if not self.token:
            return error_response(403, "admin routes are disabled: start the server with UNLEARN_GUARD_TOKEN set",
                                  "permission_error")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), self.token.encode()):
            return error_response(401, "missing or invalid bearer token", "authentication_error")
        return None

    def _request_routes(self) -> FastAPI:
        from ..data.io import DataError
        from .intake import add
        from .ledger import LedgerError
        from .person import Fact

        app = FastAPI(docs_url=None, redoc_url=None)

        @app.post("/v1/forget", status_code=201)
        async def forget(request: Request):
            if (denied := self._admin(request)) is not None:
                return denied
            try:
                body = ForgetBody.model_validate(await request.json())
                facts = [Fact.model_validate(f).model_dump(exclude_none=True) for f in body.facts]
            except ValueError as e:  # pydantic's ValidationError and JSON errors; never echo the values
                errs = getattr(e, "errors", None)
                msg = "; ".join(".".join(str(p) for p in x.get("loc", ())) + ": " + str(x.get("msg", ""))
                                for x in errs()[:3]) if errs else "request body is not valid JSON"
                return error_response(400, msg)
            try:
                r = add(self.home, body.name, body.aliases, facts, body.reason)
            except (DataError, LedgerError, ValueError) as e:
                return error_response(400, str(e).splitlines()[0])
            return {"id": r.id, "object": "forget_request", "status": r.status, "merged": r.merged,
                    **({"facts_not_kept": r.facts_not_kept} if r.facts_not_kept else {})}

        @app.api_route("/v1/forget", methods=["GET", "PUT", "PATCH", "DELETE"])
        @app.api_route("/v1/forget/{target_id:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
        def guard_targets(request: Request, target_id: str = ""):
            # the guard server's own target routes: here its targets are the ledger's requests, and
            # one deleted there would let a guarded person's facts out while the ledger still said
            # "guarded" (until session 34); the listing would give back the names the ledger dropped
            if (denied := self._admin(request)) is not None:
                return denied
            return error_response(405, "a deployment home's guard targets are its forget requests: POST /v1/forget "
                                       "files one, GET /v1/requests/{id} reads it (`unlearn request list` lists them)")

        @app.get("/v1/requests/{request_id}")
        def status(request_id: str, request: Request):
            if (denied := self._admin(request)) is not None:
                return denied
            with self.home.ledger() as led:
                try:
                    r = led.get(request_id)
                except LedgerError:
                    return error_response(404, f"no request with id '{request_id[:64]}'")
            return {"id": r.id, "object": "forget_request", "status": r.status, "received_at": r.received_at,
                    "guarded_at": r.guarded_at, "verified_at": r.verified_at, "failure": r.failure,
                    "certificate": r.certificate}

        return app

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == "/v1/forget" or path.startswith(("/v1/forget/", "/v1/requests/"))):
            await self.routes(scope, receive, send)
            return
        if scope["type"] == "lifespan":
            await self.routes(scope, receive, send)
            return
        import anyio

        app = await anyio.to_thread.run_sync(self.guard_app)
        await app(scope, receive, send)


def create_home_app(home, token: str | None = None) -> HomeServer:
    return HomeServer(home, token)


def serve(home, port: int = 8000, host: str = "127.0.0.1", log_level: str = "info") -> None:
    import uvicorn

    uvicorn.run(create_home_app(home), host=host, port=port, log_level=log_level)
