"""A scripted fake of the Anthropic Messages API, served over real HTTP on loopback.

The real ``anthropic.AsyncAnthropic`` client can be pointed at it::

    async with FakeMessagesAPI([Reply([text("hi")])]) as server:
        client = anthropic.AsyncAnthropic(base_url=server.base_url, api_key="test-key")
        msg = await client.messages.create(model="m", max_tokens=10, messages=[...])

The server runs in a background thread (``http.server.ThreadingHTTPServer``), so it
works no matter which event loop the client runs in. It speaks the real wire format:

* ``GET /v1/models/{id}`` answers a model's record (its token limits), or a scripted
  error (``models=``), or a 404 for a model it does not know.
* ``POST /v1/messages`` answers a full Message JSON, or, when the body has
  ``"stream": true``, a ``text/event-stream`` with the real event sequence
  (``message_start``, ``ping``, ``content_block_start`` / ``content_block_delta`` /
  ``content_block_stop`` per block, ``message_delta``, ``message_stop``).
* With a :class:`PromptCache`, usage reports cache writes and reads as the API bills
  them, from the request's ``cache_control`` breakpoints.
* Errors are ``{"type": "error", "error": {"type": ..., "message": ...}}`` with the
  scripted HTTP status and headers.
* Every response carries a ``request-id`` header.

Things worth knowing about the SDK when scripting failures:

* ``retry-after: 0`` (or ``retry-after-ms: 0``) does NOT make the SDK retry at once: it
  only honours values ``> 0`` and otherwise falls back to its exponential backoff
  (about 0.5 s, then 1 s, ...). Use :data:`FAST_RETRY` (``retry-after-ms: 1``) for fast
  tests.
* anthropic 2.x sends the API key as ``authorization: Bearer <key>``, not ``x-api-key``
  (see :func:`sent_api_key`).
* ``x-should-retry: true|false`` overrides the SDK's status-code retry policy
  (by default 408, 409, 429 and every 5xx are retried).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "FAST_RETRY",
    "Broken",
    "Conversations",
    "Fail",
    "FakeMessagesAPI",
    "PromptCache",
    "Reply",
    "Responder",
    "first_user_text",
    "sent_api_key",
    "text",
    "tool_use",
]

# Response headers that make the SDK retry almost immediately (1 ms). Note that
# "retry-after: 0" is not enough: the SDK ignores non-positive values and backs off ~0.5 s.
FAST_RETRY: dict[str, str] = {"retry-after-ms": "1", "retry-after": "0"}


@dataclass
class Reply:
    """One assistant message."""

    content: list[dict]
    stop_reason: str = "end_turn"
    input_tokens: int = 10
    output_tokens: int = 5
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_1h_tokens: int = 0  # of the written tokens, those with the 1-hour TTL
    stop_details: dict | None = None  # a refusal's {"type": "refusal", "category": ...}


def _tokens(obj: Any) -> int:
    """A stand-in for the tokenizer: about four characters of JSON per token."""
    return max(1, len(json.dumps(obj, separators=(",", ":"), sort_keys=True)) // 4)


class PromptCache:
    """The prompt cache as the API bills it, modelled: a request's blocks (tools, system,
    then each message's content blocks) up to its last ``cache_control`` breakpoint form
    its cached prefix.  The longest prefix an earlier request wrote is read; the rest of
    the prefix is written; what follows the breakpoint is input at the full price.  A
    prefix shorter than ``min_tokens`` is not cached at all.  (TTLs never expire here.)"""

    def __init__(self, min_tokens: int = 0) -> None:
        self.min_tokens = min_tokens
        self._written: set[str] = set()
        self._lock = threading.Lock()

    @staticmethod
    def _blocks(body: dict) -> list[dict]:
        blocks = [dict(t) for t in body.get("tools") or []]
        system = body.get("system")
        if isinstance(system, str):
            blocks.append({"type": "text", "text": system})
        elif isinstance(system, list):
            blocks += [dict(b) for b in system]
        for message in body.get("messages") or []:
            content = message.get("content")
            if isinstance(content, str):
                blocks.append({"role": message.get("role"), "type": "text", "text": content})
            else:
                blocks += [{"role": message.get("role"), **b} for b in content or []]
        return blocks

    def usage(self, body: dict) -> dict[str, int]:
        blocks = self._blocks(body)
        marks = [i for i, b in enumerate(blocks) if "cache_control" in b]
        plain = [{k: v for k, v in b.items() if k != "cache_control"} for b in blocks]
        sizes = [_tokens(b) for b in plain]
        total = sum(sizes)
        if not marks:
            return {"input_tokens": total}
        end = marks[-1] + 1
        prefix_tokens = sum(sizes[:end])
        if prefix_tokens < self.min_tokens:
            return {"input_tokens": total}
        keys = [hashlib.sha256(json.dumps(plain[:k], sort_keys=True).encode()).hexdigest()
                for k in range(1, end + 1)]
        ttl = blocks[marks[-1]]["cache_control"].get("ttl", "5m")
        with self._lock:
            hit = max((k for k in range(1, end + 1) if keys[k - 1] in self._written),
                      default=0)
            self._written.add(keys[end - 1])
        read = sum(sizes[:hit])
        written = prefix_tokens - read
        return {"input_tokens": total - prefix_tokens, "cache_read_input_tokens": read,
                "cache_creation_input_tokens": written,
                "cache_creation_1h_tokens": written if ttl == "1h" else 0}


@dataclass
class Fail:
    """One error response.

    ``mid_stream=True`` only matters for streaming requests: the response then starts as
    a normal 200 event stream (``message_start``) and fails with an ``event: error``
    SSE, like the real API does when it becomes overloaded during generation.
    """

    status: int
    error_type: str = "api_error"
    message: str = "scripted failure"
    headers: dict[str, str] = field(default_factory=dict)
    mid_stream: bool = False


@dataclass
class Broken:
    """A streaming response that breaks (for a non-streaming request: a 200 JSON reply).

    ``kind`` is ``"drop"`` (the connection is reset after ``message_start``: the client
    sees the transport's error, not an API error), ``"cut"`` (the body ends cleanly after
    the first content block has started, with no ``message_delta`` or ``message_stop``)
    or ``"no_stop"`` (every event but the final ``message_stop``).
    """

    kind: str
    reply: Reply = field(default_factory=lambda: Reply([text("partial answer")]))


Step = Reply | Fail | Broken
Responder = Callable[[dict, int], Step]

_tool_ids = itertools.count(1)
_tool_ids_lock = threading.Lock()


def text(t: str) -> dict:
    """A text content block."""
    return {"type": "text", "text": t}


def tool_use(name: str, input: dict, id: str | None = None) -> dict:
    """A tool_use content block; ``id`` defaults to a process-unique ``toolu_...``."""
    if id is None:
        with _tool_ids_lock:
            n = next(_tool_ids)
        id = f"toolu_fake{n:04d}_{uuid.uuid4().hex[:8]}"
    return {"type": "tool_use", "id": id, "name": name, "input": input}


def fifteen_steps(slow: str, written: str, submitted: str) -> list[Reply]:
    """A 15-step run, the prompt cache's scenario: read ``slow``, write ``written`` (a
    whole file, e.g. the flagship's reference, about 24 KB) as draft.py, twelve small
    experiments, submit ``submitted``.  (The experiments name their argument
    ``expression``, not ``code``: each is answered with a validation error, as when the
    README's prompt-cache figures were measured.)"""
    return ([Reply([tool_use("read_file", {"path": slow})], "tool_use"),
             Reply([tool_use("write_file", {"path": "draft.py", "content": written})],
                   "tool_use", output_tokens=8000)]
            + [Reply([text(f"Trying idea {k}."),
                      tool_use("python_expression", {"expression": f"sum(range({k}))"})],
                     "tool_use", output_tokens=40) for k in range(12)]
            + [Reply([tool_use("submit_answer", {"path": submitted})], "tool_use")])


def first_user_text(body: dict) -> str:
    """Text of the first ``user`` message of a Messages request body ("" if none).

    String content is returned as is; for block content the text blocks are joined
    with newlines (non-text blocks are ignored).
    """
    for message in body.get("messages") or []:
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            parts = [
                b.get("text", "")
                for b in content
                if isinstance(b, dict) and b.get("type") == "text"
            ]
            return "\n".join(parts)
        return ""
    return ""


def sent_api_key(headers: dict[str, str]) -> str | None:
    """The API key a recorded request carried (lower-cased header names).

    anthropic 2.x sends ``api_key`` as ``authorization: Bearer <key>``, not as the
    ``x-api-key`` header older SDKs used; this accepts either.
    """
    if "x-api-key" in headers:
        return headers["x-api-key"]
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    return token if scheme.lower() == "bearer" and token else None


class _ScriptResponder:
    """Plays a fixed list of steps in order; past its end, a non-retryable 500."""

    def __init__(self, steps: list[Step]) -> None:
        self._steps = list(steps)
        self._next = 0
        self._lock = threading.Lock()

    def __call__(self, body: dict, index: int) -> Step:
        with self._lock:
            i = self._next
            self._next += 1
        if i < len(self._steps):
            return self._steps[i]
        return _ran_out(f"fake API script ran out: request #{i + 1}, script has {len(self._steps)}")


def _ran_out(message: str) -> Fail:
    # x-should-retry: false, so the SDK does not waste its retries on a script bug.
    return Fail(500, "api_error", message, headers={"x-should-retry": "false"})


class Conversations:
    """Responder playing a separate script per conversation.

    A conversation is identified by (a hash of) the text of the first user message of
    the request, so concurrent agent runs started with different prompts each follow
    their own script. ``scripts(first_user_text)`` is called once per new conversation
    and returns its list of steps. Past a script's end, a non-retryable 500 is returned.
    """

    def __init__(self, scripts: Callable[[str], list[Step]]) -> None:
        self._scripts = scripts
        self._lock = threading.Lock()
        self._steps: dict[str, list[Step]] = {}
        self._played: dict[str, int] = {}
        self._prompts: dict[str, str] = {}

    @staticmethod
    def key(prompt: str) -> str:
        return hashlib.sha256(prompt.encode("utf-8")).hexdigest()

    def __call__(self, body: dict, index: int) -> Step:
        prompt = first_user_text(body)
        key = self.key(prompt)
        with self._lock:
            if key not in self._steps:
                self._steps[key] = list(self._scripts(prompt))
                self._played[key] = 0
                self._prompts[key] = prompt
            steps = self._steps[key]
            i = self._played[key]
            self._played[key] = i + 1
        if i < len(steps):
            return steps[i]
        return _ran_out(
            f"fake API script ran out for conversation {prompt[:60]!r}: "
            f"request #{i + 1}, script has {len(steps)}"
        )

    def played(self, prompt: str) -> int:
        """How many steps were played (requests answered) for the conversation ``prompt``."""
        with self._lock:
            return self._played.get(self.key(prompt), 0)

    @property
    def counts(self) -> dict[str, int]:
        """Snapshot: first-user-message text -> number of steps played."""
        with self._lock:
            return {self._prompts[k]: n for k, n in self._played.items()}

    def __len__(self) -> int:
        """Number of distinct conversations seen."""
        with self._lock:
            return len(self._steps)


def _sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _split(s: str, parts: int = 3) -> list[str]:
    """Split ``s`` into up to ``parts`` non-empty chunks (at least 2 when len >= 2)."""
    if len(s) < 2:
        return [s] if s else []
    parts = min(parts, len(s))
    size = -(-len(s) // parts)
    return [s[i : i + size] for i in range(0, len(s), size)]


def _block_events(index: int, block: dict) -> list[bytes]:
    kind = block.get("type")
    out: list[bytes] = []
    deltas: list[dict] = []
    if kind == "text":
        start = {**block, "text": ""}
        deltas = [{"type": "text_delta", "text": c} for c in _split(block.get("text", ""))]
    elif kind in ("tool_use", "server_tool_use"):
        start = {**block, "input": {}}
        raw = json.dumps(block.get("input", {}), separators=(",", ":"))
        deltas = [{"type": "input_json_delta", "partial_json": c} for c in _split(raw)]
    elif kind == "thinking":
        start = {**block, "thinking": "", "signature": ""}
        deltas = [
            {"type": "thinking_delta", "thinking": c} for c in _split(block.get("thinking", ""))
        ]
        if block.get("signature"):
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
    else:  # redacted_thinking, tool results, ...: the whole block arrives at once
        start = block
    out.append(
        _sse(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": start},
        )
    )
    for d in deltas:
        out.append(
            _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
        )
    out.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # many concurrent agent runs; the default backlog of 5 stalls them

    def __init__(self, api: FakeMessagesAPI) -> None:
        self.api = api
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls between header and body
    server_version = "FakeAnthropic/1.0"
    timeout = 30  # idle keep-alive connections are dropped after this
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.sockets_lock:
            self.server.open_sockets.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.sockets_lock:
                self.server.open_sockets.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet

    # -- plumbing ---------------------------------------------------------------------

    def _send_json(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", self._request_id)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _send_error(self, fail: Fail) -> None:
        payload = {
            "type": "error",
            "error": {"type": fail.error_type, "message": fail.message},
            "request_id": self._request_id,
        }
        self._send_json(fail.status, payload, fail.headers)

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    # -- endpoints --------------------------------------------------------------------

    def do_GET(self) -> None:
        self._request_id = f"req_fake_{uuid.uuid4().hex[:20]}"
        path = self.path.split("?", 1)[0]
        if path.startswith("/v1/models/"):
            model = path[len("/v1/models/"):]
            headers = {k.lower(): v for k, v in self.headers.items()}
            self.server.api._record({"model": model}, headers, path)
            found = self.server.api.model_info(model)
            if isinstance(found, Fail):
                self._send_error(found)
            else:
                self._send_json(200, found)
            return
        self._send_error(Fail(404, "not_found_error", f"Not found: GET {self.path}"))

    def do_POST(self) -> None:
        self._request_id = f"req_fake_{uuid.uuid4().hex[:20]}"
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        if path != "/v1/messages":
            self._send_error(Fail(404, "not_found_error", f"Not found: POST {path}"))
            return
        try:
            body = json.loads(raw or b"null")
        except ValueError as e:
            self._send_error(Fail(400, "invalid_request_error", f"Body is not valid JSON: {e}"))
            return
        if not isinstance(body, dict):
            self._send_error(Fail(400, "invalid_request_error", "Body must be a JSON object"))
            return

        headers = {k.lower(): v for k, v in self.headers.items()}
        index = self.server.api._record(body, headers, path)
        try:
            step = self.server.api._responder(body, index)
        except Exception as e:  # a broken responder should fail the test, not hang it
            step = Fail(
                500,
                "api_error",
                f"fake API responder raised {type(e).__name__}: {e}",
                headers={"x-should-retry": "false"},
            )

        if isinstance(step, Fail):
            if step.mid_stream and body.get("stream"):
                self._stream_fail(body, step)
            else:
                self._send_error(step)
        elif isinstance(step, Broken):
            if body.get("stream"):
                self._stream_broken(body, step)
            else:
                self._send_json(200, self._message(body, step.reply))
        elif isinstance(step, Reply):
            if self.server.api.prompt_cache is not None:
                step = dataclasses.replace(step, **self.server.api.prompt_cache.usage(body))
            if body.get("stream"):
                self._stream_reply(body, step)
            else:
                self._send_json(200, self._message(body, step))
        else:
            self._send_error(
                Fail(
                    500,
                    "api_error",
                    f"responder returned {step!r}",
                    headers={"x-should-retry": "false"},
                )
            )

    # -- message rendering ------------------------------------------------------------

    def _message(self, body: dict, reply: Reply, *, empty: bool = False) -> dict:
        return {
            "id": f"msg_fake_{uuid.uuid4().hex[:20]}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "claude-fake"),
            "content": [] if empty else [dict(b) for b in reply.content],
            "stop_reason": None if empty else reply.stop_reason,
            "stop_sequence": None,
            "stop_details": None if empty else reply.stop_details,
            "usage": {
                "input_tokens": reply.input_tokens,
                "output_tokens": 1 if empty else reply.output_tokens,
                "cache_creation_input_tokens": reply.cache_creation_input_tokens,
                "cache_read_input_tokens": reply.cache_read_input_tokens,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": (reply.cache_creation_input_tokens
                                                  - reply.cache_creation_1h_tokens),
                    "ephemeral_1h_input_tokens": reply.cache_creation_1h_tokens,
                },
            },
        }

    def _start_stream(self) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("request-id", self._request_id)
        self.end_headers()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _stream_reply(self, body: dict, reply: Reply) -> None:
        self._start_stream()
        start = self._message(body, reply, empty=True)
        self._write_chunk(_sse("message_start", {"type": "message_start", "message": start}))
        self._write_chunk(_sse("ping", {"type": "ping"}))
        for i, block in enumerate(reply.content):
            for event in _block_events(i, block):
                self._write_chunk(event)
        self._write_chunk(
            _sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None,
                              "stop_details": reply.stop_details},
                    "usage": {"output_tokens": reply.output_tokens},
                },
            )
        )
        self._write_chunk(_sse("message_stop", {"type": "message_stop"}))
        self._end_stream()

    def _stream_broken(self, body: dict, broken: Broken) -> None:
        reply = broken.reply
        self._start_stream()
        start = self._message(body, reply, empty=True)
        self._write_chunk(_sse("message_start", {"type": "message_start", "message": start}))
        if broken.kind == "drop":
            self.close_connection = True
            try:  # a reset, mid-body: no terminating chunk
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           b"\x01\x00\x00\x00\x00\x00\x00\x00")
                self.connection.close()
            except OSError:
                pass
            return
        events = [e for i, block in enumerate(reply.content) for e in _block_events(i, block)]
        if broken.kind == "cut":
            events = events[:1]
        for event in events:
            self._write_chunk(event)
        if broken.kind == "no_stop":
            self._write_chunk(_sse("message_delta", {
                "type": "message_delta",
                "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": reply.output_tokens}}))
        self._end_stream()

    def _stream_fail(self, body: dict, fail: Fail) -> None:
        self._start_stream()
        start = self._message(body, Reply([]), empty=True)
        self._write_chunk(_sse("message_start", {"type": "message_start", "message": start}))
        self._write_chunk(_sse("ping", {"type": "ping"}))
        self._write_chunk(
            _sse(
                "error",
                {
                    "type": "error",
                    "error": {"type": fail.error_type, "message": fail.message},
                },
            )
        )
        self._end_stream()


class FakeMessagesAPI:
    """A fake Messages API on ``http://127.0.0.1:<ephemeral port>``.

    ``responder`` is either a list of steps played in order (past its end: a 500 saying
    the script ran out, with ``x-should-retry: false``) or a callable
    ``(request_body, request_index) -> Reply | Fail``, called from server threads.

    Use ``start()``/``stop()``, ``with FakeMessagesAPI(...) as server:`` or
    ``async with FakeMessagesAPI(...) as server:``.
    """

    def __init__(self, responder: Responder | list[Step],
                 models: dict[str, dict | Fail] | None = None,
                 prompt_cache: PromptCache | None = None) -> None:
        # with a PromptCache, each reply's usage is what that request would be billed
        self.prompt_cache = prompt_cache
        self._responder: Responder = (
            _ScriptResponder(responder) if isinstance(responder, list) else responder
        )
        # GET /v1/models/{id}: None knows every model; else these (a Fail to script an
        # error such as a 401), and a 404 for any other
        self._models = models
        self._lock = threading.Lock()
        self._requests: list[dict] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._clients: list = []
        self.base_url = ""

    def client(self, api_key: str = "test-key", **options: Any):
        """The real SDK's async client, pointed here; ``async with`` closes it on the way
        out, inside its test's loop (a client left to its finaliser schedules its
        ``aclose`` in whatever loop runs next, and logs a traceback if that loop ends
        first)."""
        import anthropic

        made = anthropic.AsyncAnthropic(base_url=self.base_url, api_key=api_key, **options)
        self._clients.append(made)
        return made

    def model_info(self, model: str) -> dict | Fail:
        """What GET /v1/models/{model} answers."""
        found = (self._models or {}).get(model)
        if isinstance(found, Fail):
            return found
        if found is None and self._models is not None:
            return Fail(404, "not_found_error", f"model: {model}")
        return {"type": "model", "id": model, "display_name": model,
                "created_at": "2025-10-01T00:00:00Z", "lifecycle": "active",
                "max_input_tokens": 200000, "max_tokens": 64000, **(found or {})}

    # -- recording --------------------------------------------------------------------

    def _record(self, body: dict, headers: dict[str, str], path: str) -> int:
        with self._lock:
            self._requests.append({"body": body, "headers": headers, "path": path})
            return len(self._requests) - 1

    @property
    def requests(self) -> list[dict]:
        """Requests received so far, in order: ``{"body": dict, "headers": dict, "path": str}``.

        Header names are lower-cased. Returns a snapshot copy of the list.
        """
        with self._lock:
            return list(self._requests)

    @property
    def bodies(self) -> list[dict]:
        return [r["body"] for r in self.requests]

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> FakeMessagesAPI:
        if self._server is not None:
            return self
        self._server = _Server(self)
        host, port = self._server.server_address[:2]
        self.base_url = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-anthropic-{port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.shutdown()
        # Drop idle keep-alive connections so their handler threads end now.
        with server.sockets_lock:
            sockets = list(server.open_sockets)
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> FakeMessagesAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeMessagesAPI:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        import asyncio

        for made in self._clients:
            await made.close()
        self._clients.clear()
        await asyncio.to_thread(self.stop)
