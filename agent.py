"""The tool-use loop of one agent run: model call, tool calls, repeat.

:func:`run_agent` drives an ``AsyncAnthropic``-shaped client (the real SDK client, or
the offline scripted one in ``scripted_agent``) until the agent submits, stops calling
tools, or runs out of steps.  A step is one model call.  What to do after each
response is decided by one table, :data:`STOP_ACTIONS`.

It records the conversation in a transcript and counts tokens and tool calls; grading
the answer and writing the run's records are the batch's job (``batch``).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx2

import safe_files
import tools

log = logging.getLogger(__name__)


class Action(enum.Enum):
    RUN_TOOLS = "run_tools"
    FINISH = "finish"
    CONTINUE = "continue"  # the answer was cut by max_tokens: ask for the rest
    RESUME = "resume"  # pause_turn: send the conversation back as it is
    REFUSED = "refused"


STOP_ACTIONS: dict[str | None, Action] = {
    "tool_use": Action.RUN_TOOLS,
    "end_turn": Action.FINISH,
    "stop_sequence": Action.FINISH,
    "max_tokens": Action.CONTINUE,
    "model_context_window_exceeded": Action.FINISH,
    "pause_turn": Action.RESUME,
    "refusal": Action.REFUSED,
}


@dataclass(frozen=True)
class AgentSettings:
    model: str
    max_steps: int
    max_tokens: int
    stream: bool = True
    # The conversation's prompt cache: "1h" (outlives a grading, which takes minutes),
    # "5m" (the API's default TTL) or None (off).
    cache_ttl: str | None = "1h"
    thinking_budget: int | None = None  # extended thinking: tokens it may use per reply


def with_cache_breakpoint(messages: list[dict], ttl: str | None) -> list[dict]:
    """The messages as sent: the last block of the last user message (text or tool
    results) marks the end of the cached prefix: one breakpoint, moved forward each
    step, so each request reads what the previous one wrote.  The conversation itself
    is left unmarked."""
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if ttl is None or not users:
        return messages
    at = users[-1]
    content = messages[at]["content"]
    blocks = ([{"type": "text", "text": content}] if isinstance(content, str)
              else [dict(b) for b in content])
    if not blocks:
        return messages
    marker = {"type": "ephemeral"} if ttl == "5m" else {"type": "ephemeral", "ttl": ttl}
    blocks[-1] = {**blocks[-1], "cache_control": marker}
    return [*messages[:at], {**messages[at], "content": blocks}, *messages[at + 1:]]


@dataclass
class AgentOutcome:
    steps: int = 0
    ended_by: str = ""  # submitted | no_tool_calls | max_steps | refusal | api_error | ...
    input_tokens: int = 0  # billed at the full input price
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0  # written to the prompt cache
    cache_creation_1h_tokens: int = 0  # of those, with the 1-hour TTL
    cache_read_input_tokens: int = 0  # read from it
    tool_calls: Counter = field(default_factory=Counter)
    tool_errors: int = 0
    api_error: str = ""
    api_error_transient: bool = False  # the API was unavailable (not the request refused)
    stream_retries: int = 0  # response streams that failed and were sent again
    refusal: dict[str, Any] | None = None  # the refusal's category and explanation


class Transcript:
    """Appends one JSON object per line: every request's new messages and every response.

    The file is in the run directory, where the agent's code writes too: a link, FIFO
    or directory it left at the name is never followed or written through; the line is
    then lost, with a warning (``lost`` counts them)."""

    def __init__(self, path: Path, scrub: Callable[[str], str] = lambda text: text):
        self.path = path
        self.scrub = scrub  # the batch's redaction of secrets, applied to every line
        self.lost = 0

    def write(self, **record: Any) -> None:
        line = self.scrub(json.dumps(record, default=str)) + "\n"
        try:
            safe_files.append_bytes(self.path.parent, self.path.name, line.encode("utf-8"))
        except OSError as exc:
            self.lost += 1
            log.warning("a transcript line was not written to %s: %s", self.path,
                        exc.strerror or exc)


STREAM_RETRIES = 3  # attempts after the first, for faults the SDK does not retry itself
STREAM_BACKOFF = 0.5  # seconds before the first of them, doubling (with 20 % jitter)
_RETRYABLE_IN_STREAM = frozenset({"overloaded_error", "api_error", "rate_limit_error"})


class IncompleteStream(Exception):
    """A response stream that ended cleanly but without its ``message_stop`` event."""


# What can go wrong while a stream's body is read, after the SDK's own retries are
# over: the SDK converts only errors raised while the request is sent, so a reset or a
# cut connection arrives as the transport's own exception (the SDK's ``lib/_retry.py``
# counts these as transient, too).
STREAM_FAULTS: tuple[type[BaseException], ...] = (httpx2.HTTPError, IncompleteStream)


def _retryable_in_stream(exc: anthropic.APIStatusError) -> bool:
    """An error event inside a 200 stream: the SDK cannot retry it, so the loop does."""
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    return exc.status_code == 200 and error.get("type") in _RETRYABLE_IN_STREAM


def is_transient(exc: BaseException) -> bool:
    """Whether a fault is the API's being unavailable (a connection, a timeout, 408, 409,
    429, 5xx, overloaded), as opposed to a request it refused (400 "prompt is too long",
    401, 403, 404, 413): only the first is outside the agent's reach."""
    if isinstance(exc, anthropic.APIStatusError):
        return (exc.status_code in (408, 409, 429) or exc.status_code >= 500
                or _retryable_in_stream(exc))
    return isinstance(exc, (anthropic.APIConnectionError, *STREAM_FAULTS))


def describe_fault(exc: BaseException) -> str:
    """One line for a fault the run could not get past."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if not text and isinstance(exc, httpx2.HTTPError):
        text = "the connection failed while the response was read"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _count_partial(stream: Any, outcome: AgentOutcome | None) -> None:
    """A failed attempt's usage, as far as its stream got (its input is billed)."""
    if outcome is None:
        return
    try:
        usage = stream.current_message_snapshot.usage
    except (AssertionError, AttributeError):  # it failed before message_start
        return
    count_usage(outcome, usage)


async def _stream_once(client: Any, request: dict, outcome: AgentOutcome | None) -> Any:
    async with client.messages.stream(**request) as stream:
        stopped = False
        try:
            async for event in stream:
                stopped = stopped or event.type == "message_stop"
        except (anthropic.APIError, *STREAM_FAULTS):
            _count_partial(stream, outcome)
            raise
        if not stopped:
            _count_partial(stream, outcome)
            raise IncompleteStream("the response stream ended without message_stop")
        return await stream.get_final_message()


async def _call_model(client: Any, settings: AgentSettings, messages: list[dict],
                      tool_defs: list[dict], outcome: AgentOutcome | None = None) -> Any:
    request = dict(model=settings.model, max_tokens=settings.max_tokens,
                   messages=with_cache_breakpoint(messages, settings.cache_ttl),
                   tools=tool_defs)
    if settings.thinking_budget:
        # Thinking blocks come back in the reply and are sent back unchanged (with their
        # signatures) as the assistant's turn: the API requires them with tool use.
        request["thinking"] = {"type": "enabled", "budget_tokens": settings.thinking_budget}
    if not settings.stream:
        return await client.messages.create(**request)
    for attempt in range(STREAM_RETRIES + 1):
        try:
            return await _stream_once(client, request, outcome)
        except anthropic.APIStatusError as exc:
            if attempt == STREAM_RETRIES or not _retryable_in_stream(exc):
                raise
            fault = describe_fault(exc)
        except STREAM_FAULTS as exc:
            if attempt == STREAM_RETRIES:
                raise
            fault = describe_fault(exc)
        wait = STREAM_BACKOFF * 2**attempt * random.uniform(0.8, 1.2)
        if outcome is not None:
            outcome.stream_retries += 1
        log.warning("the response stream failed (%s); retrying in %.1f s", fault, wait)
        await asyncio.sleep(wait)
    raise AssertionError("unreachable")


def count_usage(outcome: AgentOutcome, usage: Any) -> None:
    """Add one response's usage: the total input is ``input_tokens +
    cache_creation_input_tokens + cache_read_input_tokens``, each billed differently."""
    outcome.input_tokens += usage.input_tokens or 0
    outcome.output_tokens += usage.output_tokens or 0
    outcome.cache_creation_input_tokens += getattr(usage, "cache_creation_input_tokens",
                                                   None) or 0
    outcome.cache_read_input_tokens += getattr(usage, "cache_read_input_tokens", None) or 0
    split = getattr(usage, "cache_creation", None)
    outcome.cache_creation_1h_tokens += getattr(split, "ephemeral_1h_input_tokens", None) or 0


class PreflightError(Exception):
    """The API cannot serve this batch: the credentials, the model or the connection."""


async def preflight(client: Any, model: str) -> dict[str, Any]:
    """One cheap call before anything slow or destructive: the credentials are accepted
    and the model exists (``models.retrieve``, whose answer also gives its token limits).
    Transient failures get the SDK's own retries; what remains raises PreflightError
    with the cause in one line."""
    try:
        info = await client.models.retrieve(model)
    except anthropic.AuthenticationError as exc:
        raise PreflightError(f"the API refused the credentials (401: {_api_message(exc)}); "
                             "check ANTHROPIC_API_KEY or the credentials in use") from exc
    except anthropic.PermissionDeniedError as exc:
        raise PreflightError(f"the credentials may not use the API or this model (403: "
                             f"{_api_message(exc)})") from exc
    except anthropic.NotFoundError as exc:
        raise PreflightError(f"unknown model {model!r} (404: {_api_message(exc)}); pass "
                             "--model with a model this key can use") from exc
    except anthropic.APIStatusError as exc:
        raise PreflightError(f"the API answered {exc.status_code} to a check of the model "
                             f"({_api_message(exc)})") from exc
    except (anthropic.APIError, httpx2.HTTPError) as exc:
        raise PreflightError(f"the API could not be reached ({describe_fault(exc)})") from exc
    return {"model": getattr(info, "id", model),
            "max_tokens": getattr(info, "max_tokens", None),
            "max_input_tokens": getattr(info, "max_input_tokens", None)}


def _api_message(exc: anthropic.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    kind, message = error.get("type"), error.get("message")
    return f"{kind}: {message}" if kind and message else describe_fault(exc)


async def _answer_tools(response: Any, allowed: list[str], outcome: AgentOutcome,
                        action: Action | None, max_tokens: int) -> list[dict]:
    """One tool_result per tool_use block, in order.  They run when the reply asked for
    tools; a reply cut at max_tokens runs its complete calls and answers the last one,
    the call it was cut in, with what happened.  ``tool_calls`` counts calls that ran."""
    uses = [b for b in response.content if b.type == "tool_use"]
    results = []
    for i, block in enumerate(uses):
        cut = action is Action.CONTINUE and i == len(uses) - 1
        if action is Action.RUN_TOOLS or (action is Action.CONTINUE and not cut):
            outcome.tool_calls[block.name] += 1
            answer = await tools.dispatch(block.name, block.input, allowed)
        elif cut:
            answer = tools.ToolOutcome(
                f"not executed: your reply reached the max_tokens limit ({max_tokens} "
                f"tokens) inside this {block.name} call, so its input may be incomplete. "
                "Send the call again; for a large file, write it in parts.", is_error=True)
        else:
            answer = tools.ToolOutcome(
                f"not executed: the response stopped ({response.stop_reason}) before this "
                "call was complete; send it again", is_error=True)
        outcome.tool_errors += answer.is_error
        results.append({"type": "tool_result", "tool_use_id": block.id,
                        "content": answer.content, "is_error": answer.is_error})
    return results


async def run_agent(client: Any, prompt: str, allowed: list[str], settings: AgentSettings,
                    transcript: Transcript, api_slots: asyncio.Semaphore | None = None,
                    on_step: Callable[[int], None] | None = None,
                    should_stop: Callable[[AgentOutcome], str | None] | None = None
                    ) -> AgentOutcome:
    """Run the loop in the current ``tools.RUN`` context; never raises for API faults.
    ``should_stop`` is asked before every model call (a budget): a reason ends the run
    (``ended_by="budget"``, the reason in ``api_error``)."""
    ctx = tools.RUN.get()
    tool_defs = tools.schemas(allowed)
    messages: list[dict] = [{"role": "user", "content": prompt}]
    new_messages = list(messages)
    outcome = AgentOutcome()
    while outcome.steps < settings.max_steps:
        if should_stop is not None and (why := should_stop(outcome)):
            outcome.ended_by, outcome.api_error = "budget", why
            transcript.write(step=outcome.steps, request=new_messages, note=f"budget: {why}")
            return outcome
        outcome.steps += 1
        if on_step is not None:
            on_step(outcome.steps)
        try:
            async with api_slots or contextlib.nullcontext():
                response = await _call_model(client, settings, messages, tool_defs, outcome)
        except (anthropic.APIError, *STREAM_FAULTS) as exc:
            outcome.ended_by, outcome.api_error = "api_error", describe_fault(exc)
            outcome.api_error_transient = is_transient(exc)
            transcript.write(step=outcome.steps, request=new_messages, error=outcome.api_error)
            return outcome
        count_usage(outcome, response.usage)
        transcript.write(step=outcome.steps, request=new_messages,
                         response=response.model_dump(mode="json"))
        messages.append({"role": "assistant",
                         "content": [b.model_dump(mode="json", exclude_none=True)
                                     for b in response.content]})
        action = STOP_ACTIONS.get(response.stop_reason)
        if action is Action.REFUSED:
            details = getattr(response, "stop_details", None)
            outcome.refusal = {"category": getattr(details, "category", None),
                               "explanation": getattr(details, "explanation", None)}
        results = await _answer_tools(response, allowed, outcome, action,
                                      settings.max_tokens)
        content: list[dict] = list(results)
        if action is Action.CONTINUE and not results:
            content.append({"type": "text", "text": "Your response was cut off at the token "
                            "limit. Continue where you stopped."})
        new_messages = [{"role": "user", "content": content}] if content else []
        if ctx.submitted is not None:
            outcome.ended_by = "submitted"
            transcript.write(step=outcome.steps, request=new_messages, note="submitted")
            return outcome
        if action is Action.RUN_TOOLS and not results:
            outcome.ended_by = "no_tool_calls"
        elif action in (Action.FINISH, Action.REFUSED) or action is None:
            outcome.ended_by = (
                "no_tool_calls" if response.stop_reason == "end_turn"
                else "refusal" if action is Action.REFUSED
                else f"unknown_stop_reason:{response.stop_reason}" if action is None
                else response.stop_reason)
        if outcome.ended_by:
            return outcome
        messages.extend(new_messages)
    outcome.ended_by = "max_steps"
    transcript.write(step=outcome.steps, request=new_messages, note="max_steps")
    return outcome


def has_credentials() -> bool:
    """Whether the SDK finds credentials of any kind it accepts: ANTHROPIC_API_KEY,
    ANTHROPIC_AUTH_TOKEN, a credentials profile or configuration, federation."""
    try:
        client = anthropic.AsyncAnthropic()
    except Exception:  # the SDK's own complaint about its configuration
        return False
    return bool(client.api_key or client.auth_token or client.credentials)


NONSTREAMING_MAX_TOKENS = 21_000  # the SDK refuses larger non-streaming requests


def reply_token_limit(wanted: int, model: str, stream: bool, limits: dict[str, Any]
                      ) -> tuple[int, list[str]]:
    """``max_tokens`` as requested (``wanted``), within the model's own limit (which the
    preflight learnt) and, without streaming, within what the SDK sends unstreamed; and
    a note for the operator for each limit that lowered it."""
    notes = []
    ceilings = [(limits.get("max_tokens"), f"{model}'s limit")]
    if not stream:
        ceilings.append((NONSTREAMING_MAX_TOKENS, "the SDK's limit without streaming"))
    for ceiling, why in ceilings:
        if ceiling and wanted > ceiling:
            notes.append(f"max_tokens {wanted} is above {why}: using {ceiling}")
            wanted = ceiling
    return wanted, notes
