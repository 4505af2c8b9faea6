"""The agent loop (``agent.run_agent``) against the fake Messages API over real HTTP.

The client is always the real SDK (``anthropic.AsyncAnthropic``) pointed at
``fake_api.FakeMessagesAPI``; the tools are the real ones, run in a workspace under
tmp_path; only the problem is a stub whose grade returns a canned result.  Every
scenario runs with streaming and with plain ``messages.create``, and checks what the
loop decided (``ended_by``, steps, tool counts) and what the server actually received.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fake_api import (
    FAST_RETRY,
    Broken,
    Fail,
    FakeMessagesAPI,
    PromptCache,
    Reply,
    fifteen_steps,
    text,
    tool_use,
)

import agent
import tools
from agent import AgentOutcome, AgentSettings
from problem import Check, GradeResult, Problem
from problems.ml_training.declarations.complex_pipeline import COMPLEX_SPEC
from problems.ml_training.spec import PROBLEM_DATA

MODEL = "claude-test-model"
ALLOWED = ["read_file", "write_file", "python_expression", "submit_intermediate_answer",
           "submit_answer"]
SLOW = "problem_data/slow_ml_training_complex.py"
OPT = "optimized_ml_training.py"
OPT_SOURCE = "import numpy as np\n\n\ndef run_complex_training_pipeline():\n    return 0.1\n"
CONTINUE_WORDS = "Continue where you stopped"


class StubProblem(Problem):
    """A problem whose grader answers at once with a canned verdict."""

    name = "stub"
    data_dir = PROBLEM_DATA

    def __init__(self) -> None:
        self.graded: list[Path] = []

    def prompt(self, workspace: Path) -> str:
        return f"Make the pipeline fast. Your working directory is `{workspace}`."

    def tool_names(self) -> list[str]:
        return list(ALLOWED)

    async def grade(self, candidate: Path, **options: Any) -> GradeResult:
        self.graded.append(candidate)
        return GradeResult(passed=True, checks=[Check("stub", True, "canned verdict")],
                           speedup=40.0, baseline_time=4.0, candidate_time=0.1,
                           candidate_times=[0.1], accuracy=0.1, baseline_accuracy=0.1,
                           target=33.0)


@dataclass
class Ran:
    outcome: AgentOutcome
    server: FakeMessagesAPI
    ctx: tools.RunContext
    workspace: Path
    prompt: str

    @property
    def bodies(self) -> list[dict]:
        return self.server.bodies

    @property
    def transcript(self) -> list[dict]:
        path = self.workspace / "transcript.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]


async def drive(tmp_path: Path, script: Any, stream: bool, *, max_steps: int = 10,
                max_tokens: int = 1024, files: dict[str, str] | None = None,
                max_retries: int = 2, cache_ttl: str | None = "1h",
                prompt_cache: PromptCache | None = None,
                thinking_budget: int | None = None) -> Ran:
    """One agent run against the fake API playing ``script`` (a list or a responder)."""
    workspace = tmp_path / "run_1"
    workspace.mkdir()
    for name, content in (files or {}).items():
        (workspace / name).write_text(content)
    ctx = tools.RunContext(workspace, StubProblem())
    token = tools.RUN.set(ctx)
    try:
        async with FakeMessagesAPI(script, prompt_cache=prompt_cache) as server:
            client = server.client(max_retries=max_retries)
            prompt = ctx.problem.prompt(workspace)
            async with asyncio.timeout(60):
                outcome = await agent.run_agent(
                    client, prompt, ALLOWED,
                    AgentSettings(MODEL, max_steps, max_tokens, stream, cache_ttl,
                                  thinking_budget),
                    agent.Transcript(workspace / "transcript.jsonl"))
    finally:
        tools.RUN.reset(token)
    ran = Ran(outcome, server, ctx, workspace, prompt)
    check_protocol(ran, stream)
    return ran


# ---- protocol checks, applied to every run ---------------------------------------------
def blocks(message: dict) -> list[dict]:
    content = message["content"]
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def assert_every_tool_use_answered(messages: list[dict]) -> None:
    """Every tool_use id gets exactly one tool_result, in order, at the start of the very
    next message (a user message), and no tool_result answers anything else."""
    answered: list[str] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        ids = [b["id"] for b in blocks(message) if b["type"] == "tool_use"]
        if not ids:
            continue
        assert i + 1 < len(messages), f"tool_use {ids} was sent without its results"
        reply = messages[i + 1]
        assert reply["role"] == "user"
        head = blocks(reply)[:len(ids)]
        assert [b["type"] for b in head] == ["tool_result"] * len(ids), blocks(reply)
        assert [b["tool_use_id"] for b in head] == ids
        answered += ids
    results = [b["tool_use_id"] for m in messages if m["role"] == "user"
               for b in blocks(m) if b["type"] == "tool_result"]
    assert len(set(answered)) == len(answered), "a tool_use id was used twice"
    assert sorted(results) == sorted(answered), "a tool_result answers no tool_use (or twice)"


def unmarked(messages: list[dict]) -> list[dict]:
    """The conversation without its prompt-cache breakpoint, every content as blocks."""
    return [{"role": m["role"], "content": [{k: v for k, v in b.items() if k != "cache_control"}
                                            for b in blocks(m)]} for m in messages]


def check_protocol(ran: Ran, stream: bool) -> None:
    bodies = ran.bodies
    for body in bodies:
        assert body["model"] == MODEL
        assert bool(body.get("stream")) is stream
        assert [t["name"] for t in body["tools"]] == ALLOWED
        assert unmarked(body["messages"])[0] == {
            "role": "user", "content": [{"type": "text", "text": ran.prompt}]}
        for message in body["messages"]:
            assert message["role"] in ("user", "assistant")
            assert blocks(message), "empty message content"
        # one cache breakpoint at most, on the last block of the last user message
        marked = [(i, j) for i, m in enumerate(body["messages"])
                  for j, b in enumerate(blocks(m)) if "cache_control" in b]
        last_user = max(i for i, m in enumerate(body["messages"]) if m["role"] == "user")
        assert marked in ([], [(last_user, len(blocks(body["messages"][last_user])) - 1)])
    # The conversation only grows: each request extends (or repeats, on a retry) the last.
    for before, after in zip(bodies, bodies[1:], strict=False):
        assert (unmarked(after["messages"])[:len(before["messages"])]
                == unmarked(before["messages"]))
    if bodies:
        assert_every_tool_use_answered(bodies[-1]["messages"])
    for line in ran.transcript:
        assert line["step"] >= 1


def last_message(body: dict) -> dict:
    return body["messages"][-1]


def results_of(message: dict) -> list[dict]:
    return [b for b in blocks(message) if b["type"] == "tool_result"]


@pytest.fixture(params=[True, False], ids=["stream", "create"])
def stream(request) -> bool:
    return request.param


# ---- 1. happy path ---------------------------------------------------------------------
async def test_happy_path_read_write_submit(tmp_path, stream):
    script = [
        Reply([text("Let me read it."), tool_use("read_file", {"path": SLOW}, id="toolu_r")],
              "tool_use", input_tokens=100, output_tokens=10),
        Reply([tool_use("write_file", {"path": OPT, "content": OPT_SOURCE}, id="toolu_w")],
              "tool_use", input_tokens=200, output_tokens=20),
        Reply([text("Submitting."), tool_use("submit_answer", {"path": OPT}, id="toolu_s")],
              "tool_use", input_tokens=300, output_tokens=30),
    ]
    ran = await drive(tmp_path, script, stream)
    o = ran.outcome
    assert (o.ended_by, o.steps, o.tool_errors, o.api_error) == ("submitted", 3, 0, "")
    assert dict(o.tool_calls) == {"read_file": 1, "write_file": 1, "submit_answer": 1}
    assert ran.ctx.submitted.path == (ran.workspace / OPT).resolve()
    assert ran.ctx.submitted.data == OPT_SOURCE.encode()  # read once, when submitted
    assert (ran.workspace / OPT).read_text() == OPT_SOURCE
    assert ran.ctx.problem.graded == []  # the final answer is graded by the batch, not here
    assert len(ran.bodies) == 3

    second = ran.bodies[1]["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert second[1]["content"][1]["id"] == "toolu_r"
    [result] = results_of(second[2])
    assert result["tool_use_id"] == "toolu_r" and result["is_error"] is False
    assert "def run_complex_training_pipeline" in result["content"]  # the file's text
    [written] = results_of(last_message(ran.bodies[2]))
    assert written["tool_use_id"] == "toolu_w" and "wrote" in written["content"]

    lines = (ran.workspace / "transcript.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is JSON
    assert len(records) == 4  # one per step, then the submission note
    assert [r["step"] for r in records] == [1, 2, 3, 3]
    assert all("response" in r for r in records[:3])
    assert records[0]["request"] == [{"role": "user", "content": ran.prompt}]
    assert records[3]["note"] == "submitted"
    [submitted] = results_of(records[3]["request"][0])
    assert submitted["tool_use_id"] == "toolu_s" and not submitted["is_error"]


# ---- 2. parallel tool calls ------------------------------------------------------------
async def test_parallel_tool_calls_answered_in_one_user_message(tmp_path, stream):
    script = [
        Reply([text("Three at once."),
               tool_use("read_file", {"path": SLOW}, id="toolu_a"),
               tool_use("write_file", {"path": OPT, "content": OPT_SOURCE}, id="toolu_b"),
               tool_use("delete_everything", {"path": "/"}, id="toolu_c")], "tool_use"),
        Reply([tool_use("submit_answer", {"path": OPT})], "tool_use"),
    ]
    ran = await drive(tmp_path, script, stream)
    o = ran.outcome
    assert (o.ended_by, o.steps, o.tool_errors) == ("submitted", 2, 1)
    assert dict(o.tool_calls) == {"read_file": 1, "write_file": 1, "delete_everything": 1,
                                  "submit_answer": 1}
    messages = ran.bodies[1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]  # ONE user message
    answer = blocks(messages[2])
    assert [b["type"] for b in answer] == ["tool_result"] * 3
    assert [b["tool_use_id"] for b in answer] == ["toolu_a", "toolu_b", "toolu_c"]
    assert [b["is_error"] for b in answer] == [False, False, True]
    assert "unknown tool 'delete_everything'" in answer[2]["content"]
    assert (ran.workspace / OPT).is_file()  # the valid calls did run


# ---- 3. forgotten submit ---------------------------------------------------------------
async def test_end_turn_without_submitting(tmp_path, stream):
    script = [
        Reply([tool_use("write_file", {"path": OPT, "content": OPT_SOURCE})], "tool_use"),
        Reply([text("I wrote the optimised file. Done!")], "end_turn"),
    ]
    ran = await drive(tmp_path, script, stream)
    o = ran.outcome
    assert (o.ended_by, o.steps) == ("no_tool_calls", 2)
    assert dict(o.tool_calls) == {"write_file": 1}
    assert ran.ctx.submitted is None
    assert (ran.workspace / OPT).is_file()
    assert len(ran.bodies) == 2


# ---- 4. max_tokens, text only ----------------------------------------------------------
async def test_max_tokens_text_asks_to_continue(tmp_path, stream):
    script = [
        Reply([text("The bottlenecks are the feature loops and the")], "max_tokens"),
        Reply([tool_use("write_file", {"path": OPT, "content": OPT_SOURCE})], "tool_use"),
        Reply([tool_use("submit_answer", {"path": OPT})], "tool_use"),
    ]
    ran = await drive(tmp_path, script, stream)
    o = ran.outcome
    assert (o.ended_by, o.steps, o.tool_errors) == ("submitted", 3, 0)
    second = ran.bodies[1]["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert second[1]["content"] == [
        {"type": "text", "text": "The bottlenecks are the feature loops and the"}]
    [ask] = blocks(second[2])
    assert ask["type"] == "text" and CONTINUE_WORDS in ask["text"]


# ---- 5. max_tokens with a (cut) tool call ----------------------------------------------
async def test_max_tokens_tool_use_is_not_executed(tmp_path, stream):
    script = [
        Reply([text("Writing it."),
               tool_use("write_file", {"path": "cut.py", "content": OPT_SOURCE}, id="toolu_cut")],
              "max_tokens"),
        Reply([tool_use("write_file", {"path": OPT, "content": OPT_SOURCE})], "tool_use"),
        Reply([tool_use("submit_answer", {"path": OPT})], "tool_use"),
    ]
    ran = await drive(tmp_path, script, stream)
    o = ran.outcome
    assert (o.ended_by, o.steps, o.tool_errors) == ("submitted", 3, 1)
    assert dict(o.tool_calls) == {"write_file": 1, "submit_answer": 1}  # calls that ran
    assert not (ran.workspace / "cut.py").exists()  # never executed
    [answer] = blocks(last_message(ran.bodies[1]))
    assert answer["tool_use_id"] == "toolu_cut" and answer["is_error"] is True
    assert "not executed: your reply reached the max_tokens limit (1024 tokens) inside " \
           "this write_file call" in answer["content"]


async def test_a_cut_reply_runs_its_complete_calls(tmp_path, stream):
    """The calls before the one the reply was cut in are complete: they run, and only
    the cut one is answered with the limit it hit."""
    script = [
        Reply([tool_use("write_file", {"path": "first.py", "content": OPT_SOURCE}, id="t_ok"),
               tool_use("write_file", {"path": "cut.py", "content": OPT_SOURCE}, id="t_cut")],
              "max_tokens"),
        Reply([tool_use("submit_answer", {"path": "first.py"})], "tool_use"),
    ]
    ran = await drive(tmp_path, script, stream)
    o = ran.outcome
    assert (o.ended_by, o.steps, o.tool_errors) == ("submitted", 2, 1)
    assert dict(o.tool_calls) == {"write_file": 1, "submit_answer": 1}
    assert (ran.workspace / "first.py").is_file() and not (ran.workspace / "cut.py").exists()
    ok, cut = blocks(last_message(ran.bodies[1]))
    assert (ok["tool_use_id"], ok["is_error"]) == ("t_ok", False)
    assert (cut["tool_use_id"], cut["is_error"]) == ("t_cut", True)
    assert "max_tokens limit" in cut["content"]


# ---- 6. pause_turn ---------------------------------------------------------------------
async def test_pause_turn_resends_without_a_user_message(tmp_path, stream):
    script = [
        Reply([text("Still working on the plan...")], "pause_turn"),
        Reply([tool_use("submit_answer", {"path": OPT})], "tool_use"),
    ]
    ran = await drive(tmp_path, script, stream, files={OPT: OPT_SOURCE})
    o = ran.outcome
    assert (o.ended_by, o.steps) == ("submitted", 2)
    second = ran.bodies[1]["messages"]
    assert [m["role"] for m in second] == ["user", "assistant"]
    assert second[-1] == {"role": "assistant",
                          "content": [{"type": "text", "text": "Still working on the plan..."}]}


# ---- 7. refusal and unknown stop reasons -----------------------------------------------
@pytest.mark.parametrize(("stop_reason", "ended_by"), [
    ("refusal", "refusal"),
    ("weird", "unknown_stop_reason:weird"),
])
async def test_refusal_and_unknown_stop_reason_end_the_run(tmp_path, stream, stop_reason,
                                                           ended_by):
    ran = await drive(tmp_path, [Reply([text("No.")], stop_reason)], stream)
    o = ran.outcome
    assert (o.ended_by, o.steps, dict(o.tool_calls)) == (ended_by, 1, {})
    assert len(ran.bodies) == 1


async def test_a_refusals_category_is_kept(tmp_path, stream):
    details = {"type": "refusal", "category": "cyber", "explanation": "exploit development"}
    ran = await drive(tmp_path, [Reply([text("No.")], "refusal", stop_details=details)],
                      stream)
    assert ran.outcome.ended_by == "refusal"
    assert ran.outcome.refusal == {"category": "cyber", "explanation": "exploit development"}


# ---- 8. max steps ----------------------------------------------------------------------
def always_reading(body: dict, index: int) -> Reply:
    return Reply([text(f"Reading again ({index})."), tool_use("read_file", {"path": SLOW})],
                 "tool_use")


async def test_max_steps(tmp_path, stream):
    ran = await drive(tmp_path, always_reading, stream, max_steps=4)
    o = ran.outcome
    assert (o.ended_by, o.steps) == ("max_steps", 4)
    assert dict(o.tool_calls) == {"read_file": 4} and o.tool_errors == 0
    assert len(ran.bodies) == 4
    assert len(ran.bodies[-1]["messages"]) == 1 + 2 * 3


async def test_max_steps_transcript_records_the_last_tool_results(tmp_path):
    ran = await drive(tmp_path, always_reading, False, max_steps=3)
    uses = {b["id"] for r in ran.transcript if "response" in r
            for b in r["response"]["content"] if b["type"] == "tool_use"}
    answered = {b["tool_use_id"] for r in ran.transcript for m in r["request"]
                if m["role"] == "user" for b in blocks(m) if b["type"] == "tool_result"}
    assert len(uses) == 3
    assert answered == uses


# ---- 9. API faults ---------------------------------------------------------------------
FAULTS = {
    "overloaded_529": Fail(529, "overloaded_error", "Overloaded", headers=FAST_RETRY),
    "internal_500": Fail(500, "api_error", "Internal server error", headers=FAST_RETRY),
    "rate_limited_429": Fail(429, "rate_limit_error", "Slow down", headers=FAST_RETRY),
}


@pytest.mark.parametrize("fault", list(FAULTS.values()), ids=list(FAULTS))
@pytest.mark.parametrize("failures", [1, 2])
async def test_transient_api_fault_is_retried(tmp_path, stream, fault, failures):
    script = [
        Reply([tool_use("read_file", {"path": SLOW})], "tool_use", input_tokens=7,
              output_tokens=3),
        *[fault] * failures,
        Reply([tool_use("submit_answer", {"path": OPT})], "tool_use", input_tokens=11,
              output_tokens=4),
    ]
    ran = await drive(tmp_path, script, stream, files={OPT: OPT_SOURCE})
    o = ran.outcome
    assert (o.ended_by, o.steps, o.api_error) == ("submitted", 2, "")
    assert (o.input_tokens, o.output_tokens) == (18, 7)  # failed attempts cost nothing
    assert len(ran.bodies) == 2 + failures
    assert all(b == ran.bodies[1] for b in ran.bodies[1:])  # the retries resend the same


def always_down(body: dict, index: int) -> Fail:
    return Fail(500, "api_error", "Internal server error", headers=FAST_RETRY)


async def test_api_that_stays_down_ends_the_run_as_api_error(tmp_path, stream):
    ran = await drive(tmp_path, always_down, stream)  # no exception escapes
    o = ran.outcome
    assert (o.ended_by, o.steps) == ("api_error", 1)
    assert "InternalServerError" in o.api_error
    assert len(ran.bodies) == 3  # one request and max_retries=2 retries
    [record] = ran.transcript
    assert record["step"] == 1 and "InternalServerError" in record["error"]


async def test_api_going_down_mid_run(tmp_path, stream):
    def responder(body: dict, index: int) -> Reply | Fail:
        if index == 0:
            return Reply([tool_use("read_file", {"path": SLOW})], "tool_use")
        return always_down(body, index)

    ran = await drive(tmp_path, responder, stream)
    o = ran.outcome
    assert (o.ended_by, o.steps, dict(o.tool_calls)) == ("api_error", 2, {"read_file": 1})
    assert "InternalServerError" in o.api_error
    assert len(ran.bodies) == 4
    assert ran.transcript[-1]["step"] == 2 and "error" in ran.transcript[-1]


async def test_non_retryable_error_is_not_retried(tmp_path, stream):
    bad = Fail(400, "invalid_request_error", "messages: bad request")
    ran = await drive(tmp_path, [bad, Reply([text("never")])], stream)
    o = ran.outcome
    assert o.ended_by == "api_error" and "BadRequestError" in o.api_error
    assert len(ran.bodies) == 1


@pytest.mark.parametrize("streaming", [
    pytest.param(True, id="stream"),
    pytest.param(False, id="create"),
])
async def test_overload_during_the_stream_is_retried(tmp_path, streaming):
    overloaded = Fail(529, "overloaded_error", "Overloaded", headers=FAST_RETRY,
                      mid_stream=True)  # mid_stream only matters to streaming requests
    script = [overloaded, Reply([tool_use("submit_answer", {"path": OPT})], "tool_use")]
    ran = await drive(tmp_path, script, streaming, files={OPT: OPT_SOURCE})
    assert ran.outcome.ended_by == "submitted", ran.outcome.api_error


@pytest.mark.parametrize("kind", ["drop", "cut", "no_stop"])
async def test_a_broken_stream_is_retried_and_counted(tmp_path, kind, monkeypatch):
    """A connection reset mid-body (the transport's error, which the SDK does not retry),
    a body that ends after a content block started, and one without message_stop: each
    is sent again, and counted."""
    monkeypatch.setattr(agent, "STREAM_BACKOFF", 0.01)
    script = [Broken(kind), Reply([tool_use("submit_answer", {"path": OPT})], "tool_use")]
    ran = await drive(tmp_path, script, True, files={OPT: OPT_SOURCE})
    o = ran.outcome
    assert (o.ended_by, o.steps, o.stream_retries, o.api_error) == ("submitted", 1, 1, "")
    assert len(ran.bodies) == 2 and ran.bodies[0] == ran.bodies[1]
    assert dict(o.tool_calls) == {"submit_answer": 1}  # the partial reply ran nothing


@pytest.mark.parametrize("kind,error", [("drop", "ReadError: the connection failed"),
                                        ("no_stop", "IncompleteStream: the response stream")])
async def test_a_stream_that_keeps_breaking_ends_the_run_in_one_line(tmp_path, kind, error,
                                                                      monkeypatch):
    monkeypatch.setattr(agent, "STREAM_BACKOFF", 0.01)
    ran = await drive(tmp_path, lambda body, index: Broken(kind), True)  # nothing escapes
    o = ran.outcome
    assert (o.ended_by, o.steps, o.stream_retries) == ("api_error", 1, agent.STREAM_RETRIES)
    assert o.api_error.startswith(error) and "\n" not in o.api_error
    assert len(ran.bodies) == agent.STREAM_RETRIES + 1
    assert ran.transcript[-1]["error"] == o.api_error


async def test_a_failed_stream_attempts_input_is_counted(tmp_path, monkeypatch):
    """A stream that breaks after message_start was billed for its input: counted."""
    monkeypatch.setattr(agent, "STREAM_BACKOFF", 0.01)
    script = [Broken("no_stop", Reply([text("partial")], input_tokens=7, output_tokens=2)),
              Reply([tool_use("submit_answer", {"path": OPT})], "tool_use", input_tokens=11,
                    output_tokens=4)]
    ran = await drive(tmp_path, script, True, files={OPT: OPT_SOURCE})
    assert (ran.outcome.input_tokens, ran.outcome.stream_retries) == (18, 1)


async def test_thinking_blocks_go_back_with_their_signatures(tmp_path, stream):
    thought = {"type": "thinking", "thinking": "The loops dominate.", "signature": "sig-abc"}
    script = [Reply([thought, tool_use("read_file", {"path": SLOW})], "tool_use"),
              Reply([tool_use("submit_answer", {"path": OPT})], "tool_use")]
    ran = await drive(tmp_path, script, stream, files={OPT: OPT_SOURCE}, max_tokens=4096,
                      thinking_budget=2048)
    assert ran.outcome.ended_by == "submitted"
    first, second = ran.bodies
    assert first["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    [assistant] = [m for m in second["messages"] if m["role"] == "assistant"]
    assert assistant["content"][0] == thought


# ---- 10. token usage -------------------------------------------------------------------
async def test_token_usage_is_summed_over_steps(tmp_path, stream):
    script = [
        Reply([text("a")], "max_tokens", input_tokens=1000, output_tokens=1024),
        Reply([tool_use("read_file", {"path": SLOW})], "tool_use", input_tokens=2500,
              output_tokens=40),
        Reply([tool_use("submit_answer", {"path": OPT})], "tool_use", input_tokens=9000,
              output_tokens=25),
    ]
    ran = await drive(tmp_path, script, stream, files={OPT: OPT_SOURCE})
    o = ran.outcome
    assert (o.ended_by, o.steps) == ("submitted", 3)
    assert (o.input_tokens, o.output_tokens) == (12500, 1089)
    usages = [r["response"]["usage"] for r in ran.transcript if "response" in r]
    assert [u["input_tokens"] for u in usages] == [1000, 2500, 9000]
    assert [u["output_tokens"] for u in usages] == [1024, 40, 25]


async def prompt_cache_run(tmp_path: Path, ttl: str | None) -> AgentOutcome:
    reference = COMPLEX_SPEC.reference.read_text()
    ran = await drive(tmp_path / str(ttl), fifteen_steps(SLOW, reference, OPT), True,
                      max_steps=15, files={OPT: OPT_SOURCE}, cache_ttl=ttl,
                      prompt_cache=PromptCache(min_tokens=4096))
    assert (ran.outcome.ended_by, ran.outcome.steps) == ("submitted", 15)
    return ran.outcome


async def test_prompt_caching_cuts_the_full_price_input(tmp_path):
    """The fake API bills the cache as the API does: with the conversation cached (1 h),
    the input billed at the full price over a 15-step run drops by far more than 60 %,
    and the total input (full price + written + read) is the same conversation's."""
    (tmp_path / "None").mkdir()
    (tmp_path / "1h").mkdir()
    off = await prompt_cache_run(tmp_path, None)
    on = await prompt_cache_run(tmp_path, "1h")
    assert off.cache_creation_input_tokens == off.cache_read_input_tokens == 0
    assert on.cache_read_input_tokens > 0
    assert on.cache_creation_1h_tokens == on.cache_creation_input_tokens > 0
    total_on = on.input_tokens + on.cache_creation_input_tokens + on.cache_read_input_tokens
    assert total_on == pytest.approx(off.input_tokens, rel=0.02)  # the markers' few bytes
    assert on.input_tokens <= 0.4 * off.input_tokens


# ---- 11. the tool_use/tool_result check itself -------------------------------------------
def test_tool_result_checker_catches_broken_conversations():
    use = {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "x",
                                             "input": {}},
                                            {"type": "tool_use", "id": "t2", "name": "x",
                                             "input": {}}]}

    def answer(*ids: str) -> dict:
        return {"role": "user", "content": [{"type": "tool_result", "tool_use_id": i,
                                             "content": "ok"} for i in ids]}

    prompt = {"role": "user", "content": "go"}
    assert_every_tool_use_answered([prompt, use, answer("t1", "t2")])
    for broken in ([prompt, use, answer("t2", "t1")], [prompt, use, answer("t1")],
                   [prompt, use, answer("t1", "t2", "t2")], [prompt, use],
                   [prompt, use, answer("t1", "t2"), answer("t1")]):
        with pytest.raises(AssertionError):
            assert_every_tool_use_answered(broken)
