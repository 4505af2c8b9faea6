"""An offline stand-in for Claude: a client that plays a fixed, realistic trajectory.

``ScriptedClient`` has the parts of ``AsyncAnthropic`` the agent loop uses
(``messages.create`` and ``messages.stream``) and answers with real
``anthropic.types.Message`` objects, so ``uv run main.py --agent scripted`` exercises the
same loop, tools, grading and records as a real batch, with no key and no network.

The trajectory is the problem's own (``Problem.scripted_turns``), played with the
problem's reference solution: this agent demonstrates the pipeline, it does not solve
anything.  It adapts to the tools it is offered, as the real prompt does.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from anthropic.types import Message

_ids = itertools.count(1)


def _message(content: list[dict], stop_reason: str, model: str) -> Message:
    return Message.model_validate({
        "id": f"msg_scripted_{next(_ids):06d}", "type": "message", "role": "assistant",
        "model": model, "content": content, "stop_reason": stop_reason,
        "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0},
    })


def plan(problem: Any, tool_names: set[str], solution: str | None = None
         ) -> list[list[dict]]:
    """The scripted turns (each a list of content blocks): the problem's own trajectory
    for the offered tools, with ``solution`` as the written file's contents if given."""
    turns = []
    for turn in problem.scripted_turns(tool_names):
        blocks = []
        for block in turn:
            if block.get("type") == "tool_use":
                arguments = dict(block["input"])
                if solution is not None and block["name"] == "write_file":
                    arguments["content"] = solution
                block = {**block, "id": f"toolu_scripted_{next(_ids):06d}", "input": arguments}
            blocks.append(block)
        turns.append(blocks)
    return turns


class _Stream:
    """What ``messages.stream(...)`` yields on entering: the finished message, whose
    events end, as a real stream's do, with ``message_stop``."""

    def __init__(self, message: Message):
        self.message = message

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._events()

    async def _events(self) -> AsyncIterator[Any]:
        yield SimpleNamespace(type="message_stop")

    @property
    def current_message_snapshot(self) -> Message:
        return self.message

    async def get_final_message(self) -> Message:
        return self.message


class _Messages:
    def __init__(self, problem: Any, solution: str | None):
        self.problem, self.solution = problem, solution

    async def create(self, *, model: str, messages: list[dict], tools: list[dict] | None = None,
                     **_: Any) -> Message:
        # The turn to play is the number of assistant messages so far.
        turn = sum(1 for m in messages if m["role"] == "assistant")
        turns = plan(self.problem, {t["name"] for t in tools or ()}, self.solution)
        if turn >= len(turns):
            return _message([{"type": "text", "text": "Done."}], "end_turn", model)
        return _message(turns[turn], "tool_use", model)

    def stream(self, **request: Any) -> Any:
        client = self

        class _Pending:
            async def __aenter__(self) -> _Stream:
                return _Stream(await client.create(**request))

            async def __aexit__(self, *exc: object) -> None:
                return None

        return _Pending()


class ScriptedClient:
    """Quacks like ``AsyncAnthropic`` for the agent loop."""

    def __init__(self, problem: Any, solution_path: Path | None = None):
        solution = solution_path.read_text() if solution_path is not None else None
        self.messages = _Messages(problem, solution)
