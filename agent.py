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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic

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


@dataclass
class AgentOutcome:
    steps: int = 0
    ended_by: str = ""  # submitted | no_tool_calls | max_steps | refusal | api_error | ...
    input_tokens: int = 0
    output_tokens: int = 0
    tool_calls: Counter = field(default_factory=Counter)
    tool_errors: int = 0
    api_error: str = ""


class Transcript:
    """Appends one JSON object per line: every request's new messages and every response."""

    def __init__(self, path: Path, scrub: Callable[[str], str] = lambda text: text):
        self.path = path
        self.scrub = scrub  # the batch's redaction of secrets, applied to every line

    def write(self, **record: Any) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(self.scrub(json.dumps(record, default=str)) + "\n")


STREAM_RETRIES = 2
_RETRYABLE_IN_STREAM = frozenset({"overloaded_error", "api_error", "rate_limit_error"})


def _retryable_in_stream(exc: anthropic.APIStatusError) -> bool:
    """An error event inside a 200 stream: the SDK cannot retry it, so the loop does."""
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    return exc.status_code == 200 and error.get("type") in _RETRYABLE_IN_STREAM


async def _call_model(client: Any, settings: AgentSettings, messages: list[dict],
                      tool_defs: list[dict]) -> Any:
    request = dict(model=settings.model, max_tokens=settings.max_tokens, messages=messages,
                   tools=tool_defs)
    if not settings.stream:
        return await client.messages.create(**request)
    for attempt in range(STREAM_RETRIES + 1):
        try:
            async with client.messages.stream(**request) as stream:
                return await stream.get_final_message()
        except anthropic.APIStatusError as exc:
            if attempt == STREAM_RETRIES or not _retryable_in_stream(exc):
                raise
            log.warning("error inside the response stream (%s); retrying", exc)
            await asyncio.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


async def _answer_tools(response: Any, allowed: list[str], outcome: AgentOutcome,
                        run: bool) -> list[dict]:
    """One tool_result per tool_use block, in order (executed only when ``run``)."""
    results = []
    for block in response.content:
        if block.type != "tool_use":
            continue
        outcome.tool_calls[block.name] += 1
        if run:
            answer = await tools.dispatch(block.name, block.input, allowed)
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
                    on_step: Callable[[int], None] | None = None) -> AgentOutcome:
    """Run the loop in the current ``tools.RUN`` context; never raises for API faults."""
    ctx = tools.RUN.get()
    tool_defs = tools.schemas(allowed)
    messages: list[dict] = [{"role": "user", "content": prompt}]
    new_messages = list(messages)
    outcome = AgentOutcome()
    while outcome.steps < settings.max_steps:
        outcome.steps += 1
        if on_step is not None:
            on_step(outcome.steps)
        try:
            async with api_slots or contextlib.nullcontext():
                response = await _call_model(client, settings, messages, tool_defs)
        except anthropic.APIError as exc:
            outcome.ended_by, outcome.api_error = "api_error", f"{type(exc).__name__}: {exc}"
            transcript.write(step=outcome.steps, request=new_messages, error=outcome.api_error)
            return outcome
        outcome.input_tokens += response.usage.input_tokens
        outcome.output_tokens += response.usage.output_tokens
        transcript.write(step=outcome.steps, request=new_messages,
                         response=response.model_dump(mode="json"))
        messages.append({"role": "assistant",
                         "content": [b.model_dump(mode="json", exclude_none=True)
                                     for b in response.content]})
        action = STOP_ACTIONS.get(response.stop_reason)
        results = await _answer_tools(response, allowed, outcome,
                                      run=action is Action.RUN_TOOLS)
        content: list[dict] = list(results)
        if action is Action.CONTINUE:
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
