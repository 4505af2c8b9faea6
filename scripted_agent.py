"""An offline stand-in for Claude: a client that plays a fixed, realistic trajectory.

``ScriptedClient`` has the parts of ``AsyncAnthropic`` the agent loop uses
(``messages.create`` and ``messages.stream``) and answers with real
``anthropic.types.Message`` objects, so ``uv run main.py --agent scripted`` exercises the
same loop, tools, grading and records as a real batch, with no key and no network.

The trajectory is the problem's own (``Problem.scripted_turns``), played with the
problem's reference solution: this agent demonstrates the pipeline, it does not solve
anything.  It adapts to the tools it is offered, as the real prompt does.

A second behaviour, ``drafts`` (``--agent scripted-draft``), gives an experiment two
agents to tell apart offline: in about half its runs (a draw fixed by the run's
directory, so a run replays the same way) its first answer falls short, and it corrects
it only when a tool it is offered (the intermediate answer) shows the shortfall.
"""

from __future__ import annotations

import hashlib
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


DRAFT_RATE = 0.5  # how often the ``drafts`` behaviour's first answer falls short


def falls_short(identity: str, rate: float = DRAFT_RATE) -> bool:
    """Whether the run ``identity`` (``_run_identity``) drafts a mistake: a uniform draw
    made of its hash, the same every time."""
    digest = hashlib.sha256(identity.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def _run_identity(messages: list[dict]) -> str:
    """What tells this run from the batch's others: its directory (the run's context),
    else its first message."""
    import tools

    ctx = tools.RUN.get(None)
    return str(ctx.workspace) if ctx is not None else repr(messages[:1])


def plan(problem: Any, tool_names: set[str], solution: str | None = None,
         draft: bool = False) -> list[list[dict]]:
    """The scripted turns (each a list of content blocks): the problem's own trajectory
    for the offered tools, with ``solution`` as the written file's contents if given;
    ``draft``: the trajectory whose first answer falls short."""
    turns = []
    for turn in problem.scripted_turns(tool_names, draft):
        blocks = []
        for block in turn:
            if block.get("type") == "tool_use":
                arguments = dict(block["input"])
                if solution is not None and block["name"] == "write_file" and not draft:
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
    def __init__(self, problem: Any, solution: str | None, drafts: bool):
        self.problem, self.solution, self.drafts = problem, solution, drafts

    async def create(self, *, model: str, messages: list[dict], tools: list[dict] | None = None,
                     **_: Any) -> Message:
        # The turn to play is the number of assistant messages so far.
        turn = sum(1 for m in messages if m["role"] == "assistant")
        draft = self.drafts and falls_short(_run_identity(messages))
        turns = plan(self.problem, {t["name"] for t in tools or ()}, self.solution, draft)
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

    def __init__(self, problem: Any, solution_path: Path | None = None,
                 behaviour: str = "reference"):
        """``behaviour``: ``reference`` (plays the reference solution) or ``drafts``."""
        if behaviour not in ("reference", "drafts"):
            raise ValueError(f"unknown scripted behaviour {behaviour!r}")
        solution = solution_path.read_text() if solution_path is not None else None
        self.messages = _Messages(problem, solution, behaviour == "drafts")
