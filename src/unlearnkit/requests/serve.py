"""`unlearn serve --home DIR`: the home's current version behind its guard, through the guard's
OpenAI-compatible server (`unlearnkit.guard.server.create_app`), plus three request routes:

* `POST /v1/forget` {name, aliases?, facts? [{question, answer} | {fact}], reason?} files a forget
  request in the ledger (the same flow as `unlearn request add`) and returns {id, status, merged};
* `GET /v1/requests/{id}` returns the request's status and times (never its name or facts);
* `DELETE /v1/requests/{id}` withdraws a request no batch holds (`unlearn request withdraw`): 404
  for an unknown id, 409 for one being processed or verified.

All three need `Authorization: Bearer $UNLEARN_GUARD_TOKEN`, and answer as the guard server's routes do
(its body limit, bearer check and error shape: a 4xx whose one-line message names the field); a
damaged guard directory or a ledger another process holds past its busy timeout is a 503. The
guard server's own routes that list and delete its targets are refused (405): the home's targets
are its requests. Every other route goes to the guard's app for the current version. The
`current` pointer is read on each request; when it names a new version, that version is checked
against its manifest and loaded, and requests go to it from then on (no restart). A version that
fails its manifest check, or whose model does not load, is never served: the server keeps the one
it has. The model is named after its version ("v0003"), and answers to `CURRENT_MODEL` too.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from typing import Annotated

from fastapi import FastAPI, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ..data.schema import valid_unicode
from .home import Home, HomeError, open_home
from .person import Fact

log = logging.getLogger("unlearnkit.requests.serve")
CURRENT_MODEL = "current"  # the model name that follows `current`: a client that pins it never gets a 404 after a deployment
RECHECK_S = 30.0  # how long a version that failed its check is not checked again (it is hashed whole)


Text = Annotated[str, AfterValidator(valid_unicode)]  # JSON may carry a lone surrogate ("\\ud800")


class ForgetBody(BaseModel):
    """`POST /v1/forget`'s body, validated where it enters: an error names the field (`facts.0.answer`),
    as the guard server's do (a fact's error named no field, and a body that was no JSON object
    named the model's class, until session 40)."""
    model_config = ConfigDict(extra="forbid")
    name: Text = Field(min_length=1, max_length=200)
    aliases: list[Text] = Field(default_factory=list, max_length=32)
    facts: list[Fact] = Field(default_factory=list, max_length=256)
    reason: Text | None = Field(default=None, max_length=2000)


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
        from ..models.load import ModelLoadError, load_model
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
                try:  # a version that loads no model is refused as a damaged one is (it failed every
                    # request, and was loaded again at each, until session 40)
                    lm = LM(*load_model(str(self.home.check_version(name).path)))
                except (HomeError, ModelLoadError) as e:
                    if self._app is None:
                        raise
                    self._refuse(name, e)
                    return self._app
                self._app = create_app(lm, self.home.guard(), model_name=name, token=self.token,
                                       aliases=(CURRENT_MODEL,))
                self._name = name
                log.info("serving version %s", name)
        return self._app

    def _refuse(self, name: str | None, e: Exception) -> None:
        """Keep serving the loaded version, and say why the pointer's is not served."""
        log.error("keeping version %s: %s", self._name, e)
        self._refused = (name, time.monotonic())

    def _request_routes(self) -> FastAPI:
        """The home's routes, with the guard server's body limit, bearer check and error shape. They are
        plain functions, run in the worker threads: `add` waits on the ledger's lock and hashes names,
        and on the event loop it held up every other request meanwhile (until session 40)."""
        import anyio

        from ..guard.errors import error_response
        from ..guard.server import APIError, add_limits_and_errors, check_admin
        from .intake import add, withdraw
        from .ledger import LedgerError, UnknownRequest

        app = FastAPI(docs_url=None, redoc_url=None)
        add_limits_and_errors(app)

        @app.middleware("http")  # added last, so run first: before the body is read or its size counted
        async def admin_first(request: Request, call_next):
            try:  # a thread: the first request may load the current version
                await anyio.to_thread.run_sync(lambda: check_admin(request, self.guard_app().state.guard, self.token))
            except APIError as e:  # a body that was no JSON, sent without the token, was a 400 until session 40
                return error_response(e.status, e.message, e.type, e.param,
                                      headers={"WWW-Authenticate": "Bearer"} if e.status == 401 else None)
            return await call_next(request)

        @app.post("/v1/forget", status_code=201)
        def forget(body: ForgetBody):
            facts = [f.model_dump(exclude_none=True) for f in body.facts]
            try:
                r = add(self.home, body.name, body.aliases, facts, body.reason)
            except sqlite3.OperationalError as e:  # another process held the ledger past its busy timeout; a
                # request filed again merges into the one a half-done add left, and is guarded then
                raise APIError(503, f"the ledger is busy ({e}): send the request again", "server_error") from None
            except (LedgerError, ValueError) as e:
                raise APIError(400, str(e).splitlines()[0]) from None
            return {"id": r.id, "object": "forget_request", "status": r.status, "merged": r.merged,
                    **({"follows": r.follows} if r.follows else {})}

        @app.api_route("/v1/forget", methods=["GET", "PUT", "PATCH", "DELETE"])
        @app.api_route("/v1/forget/{target_id:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
        def guard_targets(target_id: str = ""):
            # the guard server's own target routes: here its targets are the ledger's requests, and
            # one deleted there would let a guarded person's facts out while the ledger still said
            # "guarded" (until session 34); the listing would give back the names the ledger dropped
            raise APIError(405, "a deployment home's guard targets are its forget requests: POST /v1/forget "
                                "files one, GET /v1/requests/{id} reads it (`unlearn request list` lists them)")

        @app.get("/v1/requests/{request_id}")
        def status(request_id: str):
            try:
                with self.home.ledger() as led:
                    r = led.get(request_id)
            except LedgerError:
                raise APIError(404, f"no request with id '{request_id[:64]}'", param="id") from None
            except sqlite3.OperationalError as e:
                raise APIError(503, f"the ledger is busy ({e}): try again", "server_error") from None
            return {"id": r.id, "object": "forget_request", "status": r.status, "received_at": r.received_at,
                    "guarded_at": r.guarded_at, "verified_at": r.verified_at, "failure": r.failure,
                    "certificate": r.certificate}

        @app.delete("/v1/requests/{request_id}")
        def withdraw_request(request_id: str):
            try:
                res = withdraw(self.home, request_id)
            except sqlite3.OperationalError as e:
                raise APIError(503, f"the ledger is busy ({e}): try again", "server_error") from None
            except UnknownRequest:
                raise APIError(404, f"no request with id '{request_id[:64]}'", param="id") from None
            except LedgerError as e:  # being processed, or verified
                raise APIError(409, str(e).splitlines()[0], param="id") from None
            return {"id": res["id"], "object": "forget_request", "status": res["status"],
                    **({"followed": res["followed"]} if res["followed"] else {})}

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
