"""An OpenAI-compatible server for a guarded model (FastAPI + uvicorn).

Model routes (no auth, as a local OpenAI-compatible endpoint): `GET /v1/models`,
`POST /v1/completions`, `POST /v1/chat/completions`. Decoding is greedy (temperature and top_p
are accepted and ignored); `n` must be 1 and `stream` false.

Admin routes, which need `Authorization: Bearer $UNLEARN_GUARD_TOKEN` (they are disabled, 403,
when the variable is unset): `POST /v1/forget` (a target: `subject` and optionally `aliases`,
`facts`, `qa` [{question, answer}], `documents`, `forbidden`, `action`; returns its `id`),
`GET /v1/forget` (ids, subjects, actions and counts, never the facts themselves) and
`DELETE /v1/forget/{id}`. A change takes effect on the next request.

Errors are OpenAI-style `{"error": {"message", "type", "param", "code"}}` with a 4xx status for
anything the client got wrong. Messages name the field and the problem, never the value sent,
so no error can carry a forgotten fact back out.
"""
from __future__ import annotations

import logging
import os
import secrets
import threading
import time
import uuid
from typing import Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .guarded import Guard, GuardedLM
from .index import Action, QAPair, Target

log = logging.getLogger("unlearnkit.guard.server")

MAX_PROMPT_CHARS = 16000
MAX_NEW_TOKENS = 512


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None):
        self.status, self.message, self.type, self.param = status, message, type_, param


def _err(status: int, message: str, type_: str = "invalid_request_error", param=None, headers=None):
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": status}},
                        status_code=status, headers=headers)


def _describe(errors) -> str:
    """'body.qa.0.answer: Field required; ...' without the offending input values."""
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        msg = str(e.get("msg", "invalid"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if e.get("type") == "json_invalid":
            loc, msg = "body", "request body is not valid JSON"
        parts.append(f"{loc}: {msg}")
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


# -- request bodies ---------------------------------------------------------------------------

class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")  # unknown OpenAI options are accepted and ignored


class CompletionRequest(_Body):
    model: str | None = None
    prompt: str | list[str] = Field(max_length=64)
    max_tokens: int = Field(default=16, ge=1, le=MAX_NEW_TOKENS)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    stop: str | list[str] | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict] | None = None


class ChatRequest(_Body):
    model: str | None = None
    messages: list[Message] = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    stop: str | list[str] | None = None


class ForgetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    subject: str | None = None
    aliases: list[str] = Field(default_factory=list)
    facts: list[str] = Field(default_factory=list)
    qa: list[QAPair] = Field(default_factory=list)
    documents: list[str] = Field(default_factory=list)
    forbidden: list[str] = Field(default_factory=list)
    action: Action | None = None


def _text(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type", "text") == "text")


def _cut_stop(text: str, stop) -> tuple[str, bool]:
    stops = [stop] if isinstance(stop, str) else (stop or [])
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def create_app(lm, guard: Guard, model_name: str = "guarded", token: str | None = None) -> FastAPI:
    """The app for `lm` (an `unlearnkit.scoring.LM`) behind `guard`. `token` defaults to the
    environment variable UNLEARN_GUARD_TOKEN, read when the app is created."""
    token = token if token is not None else os.environ.get("UNLEARN_GUARD_TOKEN") or None
    glm = GuardedLM(lm, guard)
    tok = lm.tokenizer
    has_template = bool(getattr(tok, "chat_template", None))
    model_lock = threading.Lock()  # one generation at a time: torch modules are not re-entrant
    created = int(time.time())
    app = FastAPI(title="unlearnkit guard", version="1", docs_url=None, redoc_url=None)
    app.state.guard, app.state.glm = guard, glm

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return _err(400, _describe(exc.errors()))

    @app.exception_handler(APIError)
    async def _api(request: Request, exc: APIError):
        return _err(exc.status, exc.message, exc.type, exc.param,
                    headers={"WWW-Authenticate": "Bearer"} if exc.status == 401 else None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        msg = {404: f"no route {request.method} {request.url.path}",
               405: f"method {request.method} not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return _err(exc.status_code, msg, "invalid_request_error" if exc.status_code < 500 else "server_error")

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        log.exception("internal error on %s", request.url.path)
        return _err(500, "internal error", "server_error")

    def _admin(request: Request) -> None:
        if not token:
            raise APIError(403, "admin routes are disabled: start the server with UNLEARN_GUARD_TOKEN set",
                           "permission_error")
        auth = request.headers.get("authorization", "")
        scheme, _, given = auth.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise APIError(401, "missing bearer token: send 'Authorization: Bearer <UNLEARN_GUARD_TOKEN>'",
                           "authentication_error")
        if not secrets.compare_digest(given.strip().encode(), token.encode()):
            raise APIError(401, "invalid bearer token", "authentication_error")

    def _check_model(name):
        if name is not None and name != model_name:
            raise APIError(404, f"model '{name[:100]}' not found; this server serves '{model_name}'",
                           param="model")

    def _check_common(req):
        if req.stream:
            raise APIError(400, "streaming is not supported; send stream=false", param="stream")

    def _generate(prompts: list[str], max_tokens: int, detect_texts: list[list[str]] | None = None):
        for p in prompts:
            if len(p) > MAX_PROMPT_CHARS:
                raise APIError(400, f"prompt longer than {MAX_PROMPT_CHARS} characters", param="prompt")
        detections = None
        if detect_texts is not None:  # chat: a hit in any user message counts
            flat = [t for ts in detect_texts for t in ts]
            dets = guard.detect(flat)
            detections, k = [], 0
            for ts in detect_texts:
                ds = dets[k:k + len(ts)]
                k += len(ts)
                hits = [d for d in ds if d.hit]
                detections.append(max(hits, key=lambda d: d.score) if hits else ds[-1])
        with model_lock:
            texts = glm.generate(prompts, max_new_tokens=max_tokens, detections=detections)
        return texts

    def _usage(prompts, texts):
        pt = sum(len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts)
        ct = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
        return {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}

    def _finish(text: str, stopped: bool, max_tokens: int) -> str:
        if stopped:
            return "stop"
        return "length" if len(tok(text, add_special_tokens=False)["input_ids"]) >= max_tokens else "stop"

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created,
                                            "owned_by": "unlearnkit"}]}

    @app.post("/v1/completions")
    def completions(req: CompletionRequest):
        _check_model(req.model)
        _check_common(req)
        prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
        if not prompts:
            raise APIError(400, "prompt: must not be an empty list", param="prompt")
        texts = _generate(prompts, req.max_tokens)
        choices = []
        for i, t in enumerate(texts):
            t, stopped = _cut_stop(t, req.stop)
            choices.append({"index": i, "text": t, "logprobs": None,
                            "finish_reason": _finish(t, stopped, req.max_tokens)})
        return {"id": "cmpl-" + uuid.uuid4().hex[:24], "object": "text_completion", "created": int(time.time()),
                "model": model_name, "choices": choices, "usage": _usage(prompts, [c["text"] for c in choices])}

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest):
        _check_model(req.model)
        _check_common(req)
        users = [_text(m.content) for m in req.messages if m.role == "user"]
        if not users or not users[-1].strip():
            raise APIError(400, "messages: needs at least one non-empty user message", param="messages")
        if has_template:
            msgs = [{"role": m.role, "content": _text(m.content)} for m in req.messages]
            prompt = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            if tok.bos_token and prompt.startswith(tok.bos_token):
                prompt = prompt[len(tok.bos_token):]  # LM.generate adds bos itself
        else:
            prompt = users[-1]  # no chat template (the embedded model): the last user message as is
        max_tokens = req.max_completion_tokens or req.max_tokens or 64
        text = _generate([prompt], max_tokens, detect_texts=[users])[0]
        text, stopped = _cut_stop(text, req.stop)
        return {"id": "chatcmpl-" + uuid.uuid4().hex[:24], "object": "chat.completion", "created": int(time.time()),
                "model": model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": _finish(text, stopped, max_tokens)}],
                "usage": _usage([prompt], [text])}

    @app.post("/v1/forget", status_code=201, dependencies=[Depends(_admin)])
    def forget_add(req: ForgetRequest):
        data = req.model_dump(exclude_none=True)
        try:
            target = Target.model_validate(data)
        except ValidationError as e:
            raise APIError(400, _describe(e.errors())) from None
        try:
            guard.add(target)
        except KeyError:
            raise APIError(409, f"a target with id '{target.id}' already exists", param="id") from None
        return {"id": target.id, "object": "forget_target", "action": guard.action_for(target),
                "created_at": target.created_at}

    @app.get("/v1/forget", dependencies=[Depends(_admin)])
    def forget_list():
        return {"object": "list", "data": [
            {"id": t.id, "object": "forget_target", "subject": t.subject, "action": guard.action_for(t),
             "n_aliases": len(t.aliases), "n_facts": len(t.facts), "n_qa": len(t.qa),
             "n_documents": len(t.documents), "created_at": t.created_at} for t in guard.list()]}

    @app.delete("/v1/forget/{target_id}", dependencies=[Depends(_admin)])
    def forget_delete(target_id: str):
        try:
            t = guard.remove(target_id)
        except KeyError:
            raise APIError(404, f"no forget target with id '{target_id[:128]}'", param="id") from None
        return {"id": t.id, "object": "forget_target", "deleted": True}

    return app


def serve(model: str, port: int = 8000, host: str = "127.0.0.1", guard_dir: str | None = None,
          model_name: str | None = None, log_level: str = "info") -> None:
    """Load `model`, open the guard in `guard_dir` (in memory if None) and serve until stopped."""
    import uvicorn

    from ..models.load import load_model
    from ..scoring import LM

    m, tok = load_model(model)
    guard = Guard(guard_dir)
    if guard_dir is None:
        log.warning("no --guard-dir: forget targets live in memory and are lost when the server stops")
    guard.store.embedder  # load MiniLM before the first request, not during it
    app = create_app(LM(m, tok), guard, model_name=model_name or os.path.basename(os.path.normpath(str(model))))
    uvicorn.run(app, host=host, port=port, log_level=log_level)
