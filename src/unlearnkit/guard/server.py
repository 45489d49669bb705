"""An OpenAI-compatible server for a guarded model (FastAPI + uvicorn).

Model routes (no auth, as a local OpenAI-compatible endpoint): `GET /v1/models`,
`POST /v1/completions`, `POST /v1/chat/completions`. Decoding is greedy (temperature and top_p
are accepted and ignored); `n` must be 1. Every answer passes the output check before any of it
leaves the server (`GuardedLM.respond`); with `stream: true` the checked answer is sent as
server-sent events, OpenAI's chunk format.

Bounded cost per request: a body over `MAX_BODY_BYTES` is refused with 413 before it is parsed,
and so is a request whose prompts or messages hold more than `MAX_TOTAL_CHARS` characters or more
than `MAX_MESSAGES` messages. There is no lock across a generation: requests run in the worker
threadpool side by side, at most `MAX_CONCURRENT` generations at once (the rest wait their turn
for a short, bounded piece of work, not behind one long request).

A guard directory damaged from outside (a `targets.jsonl` that no longer parses) does not stop
the guard: the last good index stays in force, so targets are still caught, and the admin routes
answer 503 with the file and line until it is repaired.

Admin routes, which need `Authorization: Bearer $UNLEARN_GUARD_TOKEN` (they are disabled, 403,
when the variable is unset): `POST /v1/forget` (a target: `subject` and optionally `aliases`,
`facts`, `qa` [{question, answer}], `documents`, `forbidden`, `action`; returns its `id`),
`GET /v1/forget` (ids, subjects, actions and counts, never the facts themselves) and
`DELETE /v1/forget/{id}`. A change takes effect on the next request.

Errors are OpenAI-style `{"error": {"message", "type", "param", "code"}}` (`param` the field at fault,
`code` null) with a 4xx status for
anything the client got wrong. Messages name the field and the problem, never the value sent,
so no error can carry a forgotten fact back out.
"""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
import threading
import time
import uuid
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..data.schema import valid_unicode
from .errors import error_response
from .guarded import Guard, GuardedLM
from .targets import Target

log = logging.getLogger("unlearnkit.guard.server")

MAX_PROMPT_CHARS = 16000  # one prompt or message
MAX_TOTAL_CHARS = 32000  # all prompts, or all messages, of one request
MAX_MESSAGES = 64
MAX_PROMPTS = 16
MAX_BODY_BYTES = 1_000_000
MAX_NEW_TOKENS = 512
MAX_CONCURRENT = 4  # generations at once; more only share the same cores


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None):
        self.status, self.message, self.type, self.param = status, message, type_, param




def _describe(errors) -> str:
    """'body.qa.0.answer: Field required; ...' without the offending input values."""
    parts = []
    for e in errors[:5]:
        # union members show up in the location as tags ("function-after[...]", "list[...]")
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body" and "[" not in str(p)) or "body"
        msg = str(e.get("msg", "invalid"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if e.get("type") == "json_invalid":
            loc, msg = "body", "request body is not valid JSON"
        if e.get("type") == "string_unicode":  # a lone surrogate, caught by a length-limited field
            msg = "text is not valid Unicode (a lone surrogate)"
        parts.append(f"{loc}: {msg}")
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


# -- request bodies ---------------------------------------------------------------------------

Text = Annotated[str, AfterValidator(valid_unicode)]  # a JSON string may carry a lone surrogate ("\\ud800")


class TextPart(BaseModel):
    """A content part of a chat message; only text parts are understood."""
    model_config = ConfigDict(extra="allow")
    type: Literal["text"] = "text"
    text: Annotated[Text, Field(strict=True)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")  # unknown OpenAI options are accepted and ignored, but
    # not those that change the reply's form (`UNSUPPORTED`): they were ignored as if honoured until
    # session 36, and a client reading logprobs or a usage chunk found none

    def unsupported(self) -> None:
        """A 400 naming an option this server cannot honour, when it is asked for."""
        extra = self.model_extra or {}
        for name, asks in UNSUPPORTED.items():
            if name in extra and asks(extra[name]):
                raise APIError(400, f"{name}: not supported by this server (greedy text only)", param=name)


def _format_asked(v) -> bool:
    return not (isinstance(v, dict) and v.get("type") in (None, "text"))


# options that change what a reply holds, and when a request asks for them (null, false, 0 or an
# empty list asks for nothing)
UNSUPPORTED = {"logprobs": bool, "top_logprobs": bool, "echo": bool, "suffix": bool,
               "best_of": lambda v: v not in (None, 1), "tools": bool, "functions": bool,
               "response_format": lambda v: v is not None and _format_asked(v)}


class CompletionRequest(_Body):
    model: str | None = None
    # token ids are taken in only to be refused in one line (four stacked union errors until session 36)
    prompt: Text | Annotated[list[Text], Field(max_length=MAX_PROMPTS)] | list[int] | list[list[int]]
    max_tokens: int | None = Field(default=16, ge=1, le=MAX_NEW_TOKENS)  # null: 16 (a 400 until session 36)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=1, ge=1, le=1)
    stream: bool | None = False
    stream_options: dict | None = None
    stop: Text | list[Text] | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Text | list[TextPart] | None = None


class ChatRequest(_Body):
    model: str | None = None
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=1, ge=1, le=1)
    stream: bool | None = False
    stream_options: dict | None = None
    stop: Text | list[Text] | None = None


def _text(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.text for p in content)


def _cut_stop(text: str, stop) -> tuple[str, bool]:
    stops = [stop] if isinstance(stop, str) else (stop or [])
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


ERRORS = {  # documented in the OpenAPI spec, one shape for all
    400: "malformed JSON, or a missing or invalid field (the field and the problem, never the value)",
    401: "missing or wrong bearer token (admin routes)",
    403: "admin routes disabled: the server was started without UNLEARN_GUARD_TOKEN",
    404: "unknown route, model or target id",
    409: "a target with this id exists",
    413: "request too large (body bytes, characters, messages or prompts)",
    503: "the guard directory is damaged; the last good index is in force (admin routes)",
}
_ERROR_SCHEMA = {"type": "object", "properties": {"error": {"type": "object", "properties": {
    "message": {"type": "string"}, "type": {"type": "string"}, "param": {"type": ["string", "null"]},
    "code": {"type": ["string", "null"]}}}}}


def _responses(*codes: int) -> dict:
    return {c: {"description": ERRORS[c], "content": {"application/json": {"schema": _ERROR_SCHEMA}}} for c in codes}


def _sse(chunks) -> StreamingResponse:
    def gen():
        for c in chunks:
            yield f"data: {json.dumps(c)}\n\n"
        yield "data: [DONE]\n\n"
    return StreamingResponse(gen(), media_type="text/event-stream")


def _pieces(text: str) -> list[str]:
    """The checked answer in word-sized pieces, for streaming: joined, they are the answer, trailing
    whitespace included (dropped until session 36, so a stream and a plain reply differed)."""
    return re.findall(r"\s*\S+(?:\s+$)?", text) or ([text] if text else [])


def _usage_chunk(req, head: dict, usage: dict) -> list[dict]:
    """OpenAI's last chunk before [DONE] when `stream_options.include_usage` asks for it."""
    return [{**head, "choices": [], "usage": usage}] if (req.stream_options or {}).get("include_usage") else []


def create_app(lm, guard: Guard, model_name: str = "guarded", token: str | None = None,
               aliases: tuple[str, ...] = ()) -> FastAPI:
    """The app for `lm` (an `unlearnkit.scoring.LM`) behind `guard`, named `model_name` (and answering
    to `aliases` too, while answers name `model_name`). `token` defaults to the environment variable
    UNLEARN_GUARD_TOKEN, read when the app is created."""
    token = token if token is not None else os.environ.get("UNLEARN_GUARD_TOKEN") or None
    app = FastAPI(title="unlearnkit guard", version="1", docs_url=None, redoc_url=None)
    serving = _Serving(lm, guard, model_name, aliases)
    app.state.guard, app.state.glm = guard, serving.glm
    add_limits_and_errors(app)
    _add_openai_routes(app, serving)
    _add_forget_routes(app, guard, _admin(guard, token))
    app.openapi = lambda: _openapi_400(app)
    return app


def add_limits_and_errors(app: FastAPI) -> None:
    """The body-size limit, and every error in OpenAI's one shape (`error_response`): validation as 400
    (413 for too many prompts or messages), routes and methods that do not exist, and crashes as 500.
    A deployment home's request routes (`unlearnkit.requests.serve`) take the same."""
    @app.middleware("http")
    async def _limit_body(request: Request, call_next):
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > MAX_BODY_BYTES:
            return error_response(413, f"request body of {int(size)} bytes; the limit is {MAX_BODY_BYTES}")
        if request.method == "POST":
            body = await request.body()  # cached: the route reads it again
            if size is None and len(body) > MAX_BODY_BYTES:  # chunked upload: measure what arrived
                return error_response(413, f"request body over {MAX_BODY_BYTES} bytes")
            try:  # FastAPI's own "There was an error parsing the body" until session 41
                body.decode("utf-8")
            except UnicodeDecodeError as e:
                return error_response(400, f"request body is not valid UTF-8 (at byte offset {e.start}): "
                                           "JSON is UTF-8 text")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        too_many = [(f, e) for e in errors for f in ("messages", "prompt")
                    if e.get("type") == "too_long" and tuple(e.get("loc", ()))[1:2] == (f,)]
        if too_many:  # more prompts or messages than one request may carry
            f, e = too_many[0]
            return error_response(413, f"{f}: more than {e.get('ctx', {}).get('max_length')} items", param=f)
        loc = errors[0].get("loc", ()) if errors and errors[0].get("type") != "json_invalid" else ()  # not its offset
        first = [str(p) for p in loc if p != "body" and "[" not in str(p)]
        return error_response(400, _describe(errors), param=".".join(first) or None)  # None until session 36

    @app.exception_handler(APIError)
    async def _api(request: Request, exc: APIError):
        return error_response(exc.status, exc.message, exc.type, exc.param,
                              headers={"WWW-Authenticate": "Bearer"} if exc.status == 401 else None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        msg = {404: f"no route {request.method} {request.url.path}",
               405: f"method {request.method} not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return error_response(exc.status_code, msg,
                              "invalid_request_error" if exc.status_code < 500 else "server_error")

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        log.exception("internal error on %s", request.url.path)
        return error_response(500, "internal error", "server_error")


class _Serving:
    """What the OpenAI routes share: the guarded model, its tokenizer, the generation slots, and the
    checks every request goes through."""

    def __init__(self, lm, guard: Guard, model_name: str, aliases: tuple[str, ...] = ()):
        self.glm, self.guard, self.model_name = GuardedLM(lm, guard), guard, model_name
        self.names = {model_name, *aliases}
        self.tok = lm.tokenizer
        self.has_template = bool(getattr(self.tok, "chat_template", None))
        self.slots = threading.BoundedSemaphore(MAX_CONCURRENT)
        self.created = int(time.time())

    def check_model(self, name) -> None:
        if name is not None and name not in self.names:
            also = "".join(f" (or '{a}')" for a in sorted(self.names - {self.model_name}))
            raise APIError(404, f"model '{name[:100]}' not found; this server serves '{self.model_name}'{also}",
                           param="model")

    @staticmethod
    def check_size(texts: list[str], param: str) -> None:
        for t in texts:
            if len(t) > MAX_PROMPT_CHARS:
                raise APIError(413, f"{param}: one is longer than {MAX_PROMPT_CHARS} characters", param=param)
        total = sum(len(t) for t in texts)
        if total > MAX_TOTAL_CHARS:
            raise APIError(413, f"{param}: {total} characters in all; the limit is {MAX_TOTAL_CHARS}", param=param)

    def respond(self, prompts: list[str], max_tokens: int, detect_texts: list[list[str]] | None = None,
                contexts: list[str] | None = None):
        """The guarded replies; with `detect_texts` (chat), a hit in any of a prompt's texts counts."""
        detections = None
        if detect_texts is not None:
            dets = self.guard.detect([t for ts in detect_texts for t in ts])
            detections, k = [], 0
            for ts in detect_texts:
                ds = dets[k:k + len(ts)]
                k += len(ts)
                hits = [d for d in ds if d.hit]
                detections.append(max(hits, key=lambda d: d.score) if hits else ds[-1])
        with self.slots:
            return self.glm.respond(prompts, max_new_tokens=max_tokens, detections=detections, contexts=contexts)

    def tokens(self, text: str) -> int:
        return len(self.tok(text, add_special_tokens=False)["input_ids"])

    def usage(self, prompts: list[str], texts: list[str]) -> dict:
        pt, ct = sum(map(self.tokens, prompts)), sum(map(self.tokens, texts))
        return {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}

    def finish(self, text: str, stopped: bool, max_tokens: int, refused: bool = False) -> str:
        """Why a reply ended: "length" where generation ran into `max_tokens`. A guard's refusal is
        not generated and is given whole, whatever `max_tokens` (docs/guard.md): "stop" (a refusal
        longer than `max_tokens` was marked "length", as if cut, until session 34)."""
        return "stop" if refused or stopped or self.tokens(text) < max_tokens else "length"

    def chat_prompt(self, messages, texts: list[str]) -> tuple[str, str]:
        """(prompt, earlier turns as context): the chat template's prompt, or without one (the embedded
        model) the last user message as is, with the other messages as the context."""
        if self.has_template:
            msgs = [{"role": m.role, "content": t} for m, t in zip(messages, texts)]
            prompt = self.tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            if self.tok.bos_token and prompt.startswith(self.tok.bos_token):
                prompt = prompt[len(self.tok.bos_token):]  # LM.generate adds bos itself
            return prompt, ""
        last = max(i for i, m in enumerate(messages) if m.role == "user")
        return texts[last], "\n".join(t for i, t in enumerate(texts) if i != last and t)


def _add_openai_routes(app: FastAPI, sv: _Serving) -> None:
    """/v1/models, /v1/completions and /v1/chat/completions, streamed or not."""
    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": sv.model_name, "object": "model", "created": sv.created,
                                            "owned_by": "unlearnkit"}]}

    @app.get("/v1/models/{model_id}", responses=_responses(404))
    def model(model_id: str):  # a 404 "no route" until session 36
        sv.check_model(model_id)
        return {"id": sv.model_name, "object": "model", "created": sv.created, "owned_by": "unlearnkit"}

    @app.post("/v1/completions", responses=_responses(400, 404, 413))
    def completions(req: CompletionRequest):
        sv.check_model(req.model)
        req.unsupported()
        prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
        if not prompts:
            raise APIError(400, "prompt: must not be an empty list", param="prompt")
        if not all(isinstance(p, str) for p in prompts):
            raise APIError(400, "prompt: token ids are not supported; send the prompt as text", param="prompt")
        max_tokens = req.max_tokens or 16
        if req.stream and len(prompts) > 1:
            raise APIError(400, "stream: send one prompt per streamed request", param="stream")
        sv.check_size(prompts, "prompt")
        choices = []
        for i, r in enumerate(sv.respond(prompts, max_tokens)):
            t, stopped = _cut_stop(r.text, req.stop)
            choices.append({"index": i, "text": t, "logprobs": None,
                            "finish_reason": sv.finish(t, stopped, max_tokens, r.action == "refuse")})
        cid, now = "cmpl-" + uuid.uuid4().hex[:24], int(time.time())
        if req.stream:
            head = {"id": cid, "object": "text_completion", "created": now, "model": sv.model_name}
            c = choices[0]
            return _sse([{**head, "choices": [{"index": 0, "text": piece, "logprobs": None, "finish_reason": None}]}
                         for piece in _pieces(c["text"])]
                        + [{**head, "choices": [{"index": 0, "text": "", "logprobs": None,
                                                 "finish_reason": c["finish_reason"]}]}]
                        + _usage_chunk(req, head, sv.usage(prompts, [c["text"]])))
        return {"id": cid, "object": "text_completion", "created": now,
                "model": sv.model_name, "choices": choices, "usage": sv.usage(prompts, [c["text"] for c in choices])}

    @app.post("/v1/chat/completions", responses=_responses(400, 404, 413))
    def chat(req: ChatRequest):
        sv.check_model(req.model)
        req.unsupported()
        texts = [_text(m.content) for m in req.messages]
        sv.check_size(texts, "messages")
        users = [t for m, t in zip(req.messages, texts) if m.role == "user"]
        if not users or not users[-1].strip():
            raise APIError(400, "messages: needs at least one non-empty user message", param="messages")
        prompt, earlier = sv.chat_prompt(req.messages, texts)
        max_tokens = req.max_completion_tokens or req.max_tokens or 64
        # every message counts: system prompts and earlier turns (any role) can name a target
        reply = sv.respond([prompt], max_tokens, detect_texts=[[t for t in texts if t.strip()]], contexts=[earlier])[0]
        text, stopped = _cut_stop(reply.text, req.stop)
        finish = sv.finish(text, stopped, max_tokens, reply.action == "refuse")
        cid, now = "chatcmpl-" + uuid.uuid4().hex[:24], int(time.time())
        if req.stream:
            head = {"id": cid, "object": "chat.completion.chunk", "created": now, "model": sv.model_name}
            return _sse([{**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                               "finish_reason": None}]}]
                        + [{**head, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                           for piece in _pieces(text)]
                        + [{**head, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}]
                        + _usage_chunk(req, head, sv.usage([prompt], [text])))
        return {"id": cid, "object": "chat.completion", "created": now,
                "model": sv.model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": finish}],
                "usage": sv.usage([prompt], [text])}


def check_admin(request: Request, guard: Guard, token: str | None) -> None:
    """APIError unless the request carries `Authorization: Bearer <token>` (none set: 403, the admin
    routes are off) and the guard directory is not damaged (503). The guard's admin routes and a
    deployment home's request routes both ask it."""
    if not token:
        raise APIError(403, "admin routes are disabled: start the server with UNLEARN_GUARD_TOKEN set",
                       "permission_error")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise APIError(401, "missing bearer token: send 'Authorization: Bearer <UNLEARN_GUARD_TOKEN>'",
                       "authentication_error")
    if not secrets.compare_digest(given.strip().encode(), token.encode()):
        raise APIError(401, "invalid bearer token", "authentication_error")
    guard.refresh()
    if guard.damage:
        raise APIError(503, f"guard directory damaged, last good index in force: {guard.damage}", "server_error")


def _admin(guard: Guard, token: str | None):
    """The admin routes' dependency (`check_admin`)."""
    def check(request: Request) -> None:
        check_admin(request, guard, token)
    return check


def _add_forget_routes(app: FastAPI, guard: Guard, admin) -> None:
    """/v1/forget: add, list and delete the guard's targets, behind the admin token."""
    @app.post("/v1/forget", status_code=201, dependencies=[Depends(admin)],
              responses=_responses(400, 401, 403, 409, 413, 503))
    def forget_add(target: Target):  # the body is a Target, validated once, where it enters
        try:
            guard.add(target)
        except KeyError:
            raise APIError(409, f"a target with id '{target.id}' already exists", param="id") from None
        return {"id": target.id, "object": "forget_target", "action": guard.action_for(target),
                "created_at": target.created_at}

    @app.get("/v1/forget", dependencies=[Depends(admin)], responses=_responses(401, 403, 503))
    def forget_list():
        return {"object": "list", "data": [
            {"id": t.id, "object": "forget_target", "subject": t.subject, "action": guard.action_for(t),
             "n_aliases": len(t.aliases), "n_facts": len(t.facts), "n_qa": len(t.qa),
             "n_documents": len(t.documents), "created_at": t.created_at} for t in guard.list()]}

    @app.delete("/v1/forget/{target_id}", dependencies=[Depends(admin)], responses=_responses(401, 403, 404, 503))
    def forget_delete(target_id: str):
        try:
            t = guard.remove(target_id)
        except KeyError:
            raise APIError(404, f"no forget target with id '{target_id[:128]}'", param="id") from None
        return {"id": t.id, "object": "forget_target", "deleted": True}


def _openapi_400(app: FastAPI) -> dict:
    """FastAPI's spec, with its default 422 replaced by the 400 this server answers."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
        for path in spec.get("paths", {}).values():
            for op in path.values():
                resp = op.get("responses", {})
                if resp.pop("422", None) is not None and "400" not in resp:
                    resp["400"] = _responses(400)[400]
        app.openapi_schema = spec
    return app.openapi_schema


def serve(model: str, port: int = 8000, host: str = "127.0.0.1", guard_dir: str | None = None,
          model_name: str | None = None, log_level: str = "info", template=None) -> None:
    """Load `model`, open the guard in `guard_dir` (in memory if None) and serve until stopped;
    prompts reach the model in `template`'s format (raw | chat | a format string with {question})."""
    import uvicorn

    from ..models.load import load_model
    from ..scoring import LM

    m, tok = load_model(model)
    guard = Guard(guard_dir)
    if guard_dir is None:
        log.warning("no --guard-dir: forget targets live in memory and are lost when the server stops")
    guard.store.embedder  # load MiniLM before the first request, not during it
    from ..data.templates import parse_template

    app = create_app(LM(m, tok, template=parse_template(template)), guard, model_name=model_name or os.path.basename(os.path.normpath(str(model))))
    uvicorn.run(app, host=host, port=port, log_level=log_level)
