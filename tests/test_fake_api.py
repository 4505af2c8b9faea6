"""The fake Messages API, exercised with the real anthropic SDK client."""

from __future__ import annotations

import asyncio
import time

import anthropic
import pytest
from fake_api import (
    FAST_RETRY,
    Conversations,
    Fail,
    FakeMessagesAPI,
    Reply,
    first_user_text,
    sent_api_key,
    text,
    tool_use,
)

MODEL = "claude-test-model"
TOOLS = [
    {
        "name": "read_file",
        "description": "Read a file",
        "input_schema": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "opts": {"type": "object"}},
            "required": ["path"],
        },
    }
]
NESTED_INPUT = {
    "path": "src/main.py",
    "opts": {"lines": [1, 2, 3], "encoding": "utf-8", "flags": {"strict": True, "x": None}},
}


def scripted_reply() -> Reply:
    return Reply(
        [
            text("Let me read that file."),
            tool_use("read_file", NESTED_INPUT, id="toolu_01"),
        ],
        stop_reason="tool_use",
        input_tokens=123,
        output_tokens=45,
    )


def client_for(server: FakeMessagesAPI, max_retries: int = 0) -> anthropic.AsyncAnthropic:
    return server.client(max_retries=max_retries, timeout=10)


async def ask(client: anthropic.AsyncAnthropic, prompt: str = "hello", **kw):
    return await client.messages.create(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": prompt}], **kw
    )


def assert_matches(msg, reply: Reply) -> None:
    assert msg.type == "message"
    assert msg.role == "assistant"
    assert msg.model == MODEL
    assert msg.id.startswith("msg_")
    assert [b.model_dump(exclude_none=True) for b in msg.content] == reply.content
    assert msg.stop_reason == reply.stop_reason
    assert msg.stop_sequence is None
    assert msg.usage.input_tokens == reply.input_tokens
    assert msg.usage.output_tokens == reply.output_tokens


async def test_non_streaming_create_returns_scripted_message():
    reply = scripted_reply()
    async with FakeMessagesAPI([reply]) as server:
        async with client_for(server) as client:
            msg = await ask(client, tools=TOOLS)
    assert_matches(msg, reply)
    assert msg.content[1].input == NESTED_INPUT
    assert msg._request_id is not None and msg._request_id.startswith("req_")


async def test_streaming_gives_same_message():
    reply = scripted_reply()
    async with FakeMessagesAPI([reply]) as server:
        async with client_for(server) as client:
            events = []
            async with client.messages.stream(
                model=MODEL,
                max_tokens=100,
                messages=[{"role": "user", "content": "hello"}],
                tools=TOOLS,
            ) as stream:
                async for event in stream:
                    events.append(event)
                msg = await stream.get_final_message()
    assert_matches(msg, reply)
    assert msg.content[1].input == NESTED_INPUT
    assert server.requests[0]["body"]["stream"] is True
    # the tool input really arrived in several partial-JSON chunks
    json_chunks = [
        e for e in events if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]
    assert len(json_chunks) >= 2
    types = [e.type for e in events]
    assert types[0] == "message_start"
    assert types[-1] == "message_stop"
    assert "message_delta" in types


async def test_streaming_thinking_and_several_blocks():
    reply = Reply(
        [
            {"type": "thinking", "thinking": "Hmm, let me think.", "signature": "sig123"},
            text("Two tools:"),
            tool_use("read_file", {"path": "a"}, id="toolu_a"),
            tool_use("read_file", {"path": "b", "opts": {}}, id="toolu_b"),
        ],
        stop_reason="tool_use",
    )
    async with FakeMessagesAPI([reply, reply]) as server:
        async with client_for(server) as client:
            async with client.messages.stream(
                model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hi"}]
            ) as stream:
                streamed = await stream.get_final_message()
            created = await ask(client)
    assert_matches(streamed, reply)
    assert_matches(created, reply)


async def test_streaming_text_stream_pieces_join_to_text():
    reply = Reply([text("The quick brown fox.")])
    async with FakeMessagesAPI([reply]) as server:
        async with client_for(server) as client:
            async with client.messages.stream(
                model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hi"}]
            ) as stream:
                pieces = [t async for t in stream.text_stream]
    assert len(pieces) >= 2
    assert "".join(pieces) == "The quick brown fox."


async def test_overloaded_then_reply_recovers():
    reply = Reply([text("ok")])
    script = [Fail(529, "overloaded_error", "Overloaded", headers=FAST_RETRY), reply]
    async with FakeMessagesAPI(script) as server:
        async with client_for(server, max_retries=2) as client:
            msg = await ask(client)
    assert_matches(msg, reply)
    assert len(server.requests) == 2
    # the SDK counts its retries in a header
    assert server.requests[1]["headers"].get("x-stainless-retry-count") == "1"


async def test_rate_limited_with_retry_after_zero_recovers():
    # NB: the SDK only honours retry-after > 0; "0" falls back to its ~0.4-0.5 s backoff.
    reply = Reply([text("ok")])
    script = [Fail(429, "rate_limit_error", "slow down", headers={"retry-after": "0"}), reply]
    async with FakeMessagesAPI(script) as server:
        async with client_for(server, max_retries=1) as client:
            t0 = time.monotonic()
            msg = await ask(client)
            elapsed = time.monotonic() - t0
    assert_matches(msg, reply)
    assert len(server.requests) == 2
    assert elapsed >= 0.35  # backoff, not the advertised 0 s


async def test_fast_retry_headers_retry_quickly():
    script = [Fail(429, "rate_limit_error", headers=FAST_RETRY), Reply([text("ok")])]
    async with FakeMessagesAPI(script) as server:
        async with client_for(server, max_retries=1) as client:
            t0 = time.monotonic()
            await ask(client)
            assert time.monotonic() - t0 < 0.3


async def test_persistent_500_raises_internal_server_error():
    script = [Fail(500, "api_error", "boom", headers=FAST_RETRY) for _ in range(3)]
    async with FakeMessagesAPI(script) as server:
        async with client_for(server, max_retries=2) as client:
            with pytest.raises(anthropic.InternalServerError) as info:
                await ask(client)
    assert len(server.requests) == 3
    err = info.value
    assert err.status_code == 500
    assert err.type == "api_error"
    assert err.api_message == "boom"
    assert err.request_id is not None and err.request_id.startswith("req_")


async def test_bad_request_is_not_retried():
    script = [Fail(400, "invalid_request_error", "bad field"), Reply([text("never")])]
    async with FakeMessagesAPI(script) as server:
        async with client_for(server, max_retries=2) as client:
            with pytest.raises(anthropic.BadRequestError) as info:
                await ask(client)
    assert len(server.requests) == 1
    assert info.value.type == "invalid_request_error"
    assert info.value.body["error"]["message"] == "bad field"


async def test_authentication_error():
    async with FakeMessagesAPI([Fail(401, "authentication_error", "invalid x-api-key")]) as server:
        async with client_for(server, max_retries=2) as client:
            with pytest.raises(anthropic.AuthenticationError):
                await ask(client)
    assert len(server.requests) == 1


async def test_x_should_retry_false_overrides_5xx_retry():
    script = [Fail(529, "overloaded_error", headers={"x-should-retry": "false"})]
    async with FakeMessagesAPI(script) as server:
        async with client_for(server, max_retries=2) as client:
            with pytest.raises(anthropic.OverloadedError):
                await ask(client)
    assert len(server.requests) == 1


async def test_script_running_out_is_a_500_without_retries():
    async with FakeMessagesAPI([Reply([text("only one")])]) as server:
        async with client_for(server, max_retries=2) as client:
            await ask(client)
            with pytest.raises(anthropic.InternalServerError, match="ran out"):
                await ask(client)
    assert len(server.requests) == 2


async def test_mid_stream_error_event():
    script = [Fail(529, "overloaded_error", "Overloaded", mid_stream=True)]
    async with FakeMessagesAPI(script) as server:
        async with client_for(server, max_retries=2) as client:
            with pytest.raises(anthropic.APIStatusError) as info:
                async with client.messages.stream(
                    model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hi"}]
                ) as stream:
                    await stream.get_final_message()
    # the HTTP status was 200, so the SDK cannot retry: exactly one request
    assert len(server.requests) == 1
    assert info.value.type == "overloaded_error"


async def test_requests_are_recorded():
    messages = [
        {"role": "user", "content": "read it"},
        {"role": "assistant", "content": [tool_use("read_file", {"path": "a"}, id="toolu_9")]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "data"}],
        },
    ]
    async with FakeMessagesAPI([Reply([text("done")])]) as server:
        async with client_for(server) as client:
            await client.messages.create(
                model=MODEL, max_tokens=321, messages=messages, tools=TOOLS, system="be brief"
            )
    [req] = server.requests
    body, headers = req["body"], req["headers"]
    assert body["model"] == MODEL
    assert body["max_tokens"] == 321
    assert body["messages"] == messages
    assert body["tools"] == TOOLS
    assert body["system"] == "be brief"
    # anthropic 2.x puts api_key in "authorization: Bearer ...", not in "x-api-key"
    assert sent_api_key(headers) == "test-key"
    assert headers["authorization"] == "Bearer test-key"
    assert "anthropic-version" in headers
    assert req["path"] == "/v1/messages"


async def test_responder_callable_gets_body_and_index():
    seen = []

    def responder(body: dict, index: int):
        seen.append((index, first_user_text(body)))
        return Reply([text(f"answer {index}")])

    async with FakeMessagesAPI(responder) as server:
        async with client_for(server) as client:
            a = await ask(client, "first")
            b = await ask(client, "second")
    assert seen == [(0, "first"), (1, "second")]
    assert a.content[0].text == "answer 0"
    assert b.content[0].text == "answer 1"


async def test_conversations_keep_concurrent_runs_apart():
    def scripts(prompt: str):
        return [
            Reply([tool_use("read_file", {"path": f"{prompt}.txt"})], stop_reason="tool_use"),
            Reply([text(f"finished {prompt}")]),
        ]

    convs = Conversations(scripts)

    async def agent(client: anthropic.AsyncAnthropic, prompt: str) -> list[str]:
        messages: list[dict] = [{"role": "user", "content": prompt}]
        seen = []
        while True:
            msg = await client.messages.create(model=MODEL, max_tokens=50, messages=messages)
            messages.append({"role": "assistant", "content": msg.to_param()["content"]})
            if msg.stop_reason != "tool_use":
                seen.append(msg.content[0].text)
                return seen
            block = msg.content[0]
            seen.append(block.input["path"])
            messages.append(
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "x"}],
                }
            )
            await asyncio.sleep(0)  # interleave the two runs

    async with FakeMessagesAPI(convs) as server:
        async with client_for(server) as client:
            alpha, beta = await asyncio.gather(agent(client, "alpha"), agent(client, "beta"))
    assert alpha == ["alpha.txt", "finished alpha"]
    assert beta == ["beta.txt", "finished beta"]
    assert convs.played("alpha") == 2
    assert convs.played("beta") == 2
    assert convs.counts == {"alpha": 2, "beta": 2}
    assert len(convs) == 2
    assert len(server.requests) == 4


def test_sync_context_manager_and_stop_is_idempotent():
    server = FakeMessagesAPI([])
    with server:
        assert server.base_url.startswith("http://127.0.0.1:")
        client = anthropic.Anthropic(base_url=server.base_url, api_key="test-key", max_retries=0)
        with pytest.raises(anthropic.InternalServerError, match="ran out"):
            client.messages.create(
                model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
        client.close()
    server.stop()
    assert len(server.requests) == 1


def test_tool_use_ids_are_unique():
    ids = {tool_use("t", {})["id"] for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith("toolu_") for i in ids)
