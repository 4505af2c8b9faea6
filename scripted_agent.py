"""An offline stand-in for Claude: a client that plays a fixed, realistic trajectory.

``ScriptedClient`` has the parts of ``AsyncAnthropic`` the agent loop uses
(``messages.create`` and ``messages.stream``) and answers with real
``anthropic.types.Message`` objects, so ``uv run main.py --agent scripted`` exercises the
same loop, tools, grading and records as a real batch, with no key and no network.

The trajectory: read the slow pipeline, write an optimised file (the harness's
reference solution: this agent demonstrates the pipeline, it does not solve anything),
profile it, check it with an intermediate submission, then submit.  It adapts to the
tools it is offered, as the real prompt does.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from anthropic.types import Message

REFERENCE = Path(__file__).resolve().parent / "problems" / "reference" / "ml_training_reference.py"
OPTIMIZED_NAME = "optimized_ml_training.py"
_ids = itertools.count(1)


def _tool_use(name: str, **arguments: Any) -> dict:
    return {"type": "tool_use", "id": f"toolu_scripted_{next(_ids):06d}", "name": name,
            "input": arguments}


def _message(content: list[dict], stop_reason: str, model: str) -> Message:
    return Message.model_validate({
        "id": f"msg_scripted_{next(_ids):06d}", "type": "message", "role": "assistant",
        "model": model, "content": content, "stop_reason": stop_reason,
        "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0},
    })


def plan(tool_names: set[str], solution: str) -> list[list[dict]]:
    """The scripted turns (each a list of content blocks), given the offered tools."""
    turns = [
        [{"type": "text", "text": "Let me read the pipeline first."},
         _tool_use("read_file", path="problem_data/slow_ml_training_complex.py")],
        [{"type": "text", "text": "The feature loops, the O(n^2) normalisation and the "
                                  "element-wise activation are the obvious costs. Writing a "
                                  "vectorised version that keeps the semantics."},
         _tool_use("write_file", path=OPTIMIZED_NAME, content=solution)],
    ]
    if "profile_tool" in tool_names:
        turns.append([{"type": "text", "text": "Profiling the new version."},
                      _tool_use("profile_tool", path=OPTIMIZED_NAME)])
    if "submit_intermediate_answer" in tool_names:
        turns.append([{"type": "text", "text": "Checking it against the grader."},
                      _tool_use("submit_intermediate_answer", path=OPTIMIZED_NAME)])
    turns.append([{"type": "text", "text": "Submitting."},
                  _tool_use("submit_answer", path=OPTIMIZED_NAME)])
    return turns


class _Stream:
    """What ``messages.stream(...)`` yields on entering: the finished message."""

    def __init__(self, message: Message):
        self.message = message

    async def get_final_message(self) -> Message:
        return self.message


class _Messages:
    def __init__(self, solution: str):
        self.solution = solution

    async def create(self, *, model: str, messages: list[dict], tools: list[dict] | None = None,
                     **_: Any) -> Message:
        # The turn to play is the number of assistant messages so far.
        turn = sum(1 for m in messages if m["role"] == "assistant")
        turns = plan({t["name"] for t in tools or ()}, self.solution)
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

    def __init__(self, solution_path: Path = REFERENCE):
        self.messages = _Messages(solution_path.read_text())
