"""Before anything slow or destructive, one cheap call checks the credentials and the
model (``agent.preflight``): through the real SDK against the fake Messages API."""

from __future__ import annotations

import time
from typing import Any

import anthropic
import pytest
from fake_api import Fail, FakeMessagesAPI, sent_api_key

import agent
import batch
import console
import main

MODEL = "claude-test-model"


def sdk(server: FakeMessagesAPI, key: str = "test-key") -> anthropic.AsyncAnthropic:
    return server.client(api_key=key, max_retries=1)


async def test_preflight_learns_the_models_limits():
    async with FakeMessagesAPI([], models={MODEL: {"max_tokens": 32000}}) as server:
        limits = await agent.preflight(sdk(server), MODEL)
        assert limits == {"model": MODEL, "max_tokens": 32000, "max_input_tokens": 200000}
        [request] = server.requests
        assert request["path"] == f"/v1/models/{MODEL}"
        assert sent_api_key(request["headers"]) == "test-key"


@pytest.mark.parametrize("models,cause", [
    ({MODEL: Fail(401, "authentication_error", "invalid x-api-key")},
     "the API refused the credentials (401: authentication_error: invalid x-api-key)"),
    ({MODEL: Fail(403, "permission_error", "not allowed")}, "403: permission_error"),
    ({}, "unknown model 'claude-test-model' (404: not_found_error"),
], ids=["401", "403", "404"])
async def test_preflight_names_the_cause(models, cause):
    async with FakeMessagesAPI([], models=models) as server:
        with pytest.raises(agent.PreflightError) as exc:
            await agent.preflight(sdk(server), MODEL)
        assert cause in str(exc.value)
        assert len(server.requests) == 1  # 4xx: not retried


@pytest.mark.parametrize("models,cause", [
    ({MODEL: Fail(401, "authentication_error", "invalid x-api-key")}, "401"),
    ({}, "unknown model"),
], ids=["bad-key", "unknown-model"])
def test_the_batch_exits_at_once_and_leaves_the_old_records(tmp_path, monkeypatch, capsys,
                                                            models, cause):
    import output_dir

    old = tmp_path / "output"  # the previous batch's records
    assert main.main(["--agent", "scripted", "--problem", "math", "--runs", "1",
                      "--output", str(old)]) == 0
    previous = (old / "run_summary.md").read_text()

    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("nothing may be measured or deleted after a failed preflight")

    monkeypatch.setattr(batch, "run_batch", never)
    monkeypatch.setattr(output_dir.OutputDir, "begin", never)
    built = []

    def build_client(*args: Any) -> Any:
        built.append(real_build_client(*args))
        return built[-1]

    real_build_client = main.build_client
    monkeypatch.setattr(main, "build_client", build_client)
    with FakeMessagesAPI([], models=models) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-bad")
        started = time.monotonic()
        assert main.main(["--problem", "math", "--model", MODEL, "--output", str(old)]) == 2
        assert time.monotonic() - started < 10
    # closed in the batch's own loop: left to its finaliser, the client would schedule
    # its aclose in whichever loop runs next, and log a traceback if that loop ends first
    assert [client.is_closed() for client in built] == [True]
    err = capsys.readouterr().err
    assert cause in err and "untouched" in err and "Traceback" not in err
    assert (old / "run_summary.md").read_text() == previous
    assert (old / "run_1" / "run.json").is_file()


def test_every_credential_the_sdk_accepts_is_accepted(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("HOME", "/nonexistent")  # no profile on disk either
    cfg = main.CONFIG
    assert "ANTHROPIC_API_KEY is not set" in main.missing_key_message(cfg)
    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", "token")
    assert main.missing_key_message(cfg) is None
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "key")
    assert main.missing_key_message(cfg) is None


def test_a_federated_identity_counts_as_credentials(monkeypatch):
    """Workload identity federation: no key or token in the environment, yet the SDK
    signs in (it exchanges the identity token itself), so the harness must not refuse."""
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", "/nonexistent")
    monkeypatch.setenv("ANTHROPIC_FEDERATION_RULE_ID", "fdrl_test")
    monkeypatch.setenv("ANTHROPIC_ORGANIZATION_ID", "org_test")
    monkeypatch.setenv("ANTHROPIC_IDENTITY_TOKEN", "eyJ.test.token")
    assert agent.has_credentials()
    assert main.missing_key_message(main.CONFIG) is None


# ---- tokens and cost: a batch through the fake API that bills the prompt cache ----------
async def test_a_batch_reports_cache_tokens_and_cost(tmp_path):
    import json

    from fake_api import PromptCache, Reply

    import pricing
    import tools
    from agent import AgentSettings
    from problems.math_calculation import MathCalculationProblem

    problem = MathCalculationProblem()
    turns = problem.scripted_turns(set(problem.tool_names()))
    script = [Reply(turn, "tool_use", output_tokens=50) for turn in turns]
    out = tmp_path / "out"
    settings = batch.BatchSettings(
        runs=1, concurrent=False, output_dir=out,
        agent=AgentSettings("claude-haiku-4-5-20251001", 5, 2048, True, "1h"),
        tools=tools.ToolSettings())
    async with FakeMessagesAPI(script, prompt_cache=PromptCache()) as server:
        results = await batch.run_batch(problem, sdk(server), settings, lambda *a: None)
    [run] = results["runs"]
    assert run["status"] == "pass"
    assert run["cache_creation_input_tokens"] > 0 and run["cache_read_input_tokens"] > 0
    prices = pricing.prices_for("claude-haiku-4-5")  # the dated id resolves to its model
    written, read = run["cache_creation_input_tokens"], run["cache_read_input_tokens"]
    want = (run["input_tokens"] * prices.input + run["output_tokens"] * prices.output
            + written * prices.cache_write_1h + read * prices.cache_read) / 1e6
    assert run["cost_usd"] == pytest.approx(want, abs=1e-6) and run["cost_usd"] > 0
    assert results["totals"]["cost_usd"] == pytest.approx(run["cost_usd"])
    assert results["totals"]["cache_read_input_tokens"] == read
    record = json.loads((out / "run_1" / "run.json").read_text())
    assert record["cost_usd"] == run["cost_usd"] and record["stream_retries"] == 0
    md = (out / "run_summary.md").read_text()
    assert f"${run['cost_usd']:.4f}" in md and f"{written}/{read}" in md
    assert f"prices of {pricing.PRICES_AS_OF}" in md


def test_an_unknown_models_cost_is_unknown_not_zero():
    import pricing
    import summary
    from records import RunRecord

    assert pricing.cost_usd("claude-nonesuch-9", input_tokens=10, output_tokens=10) is None
    assert pricing.prices_for("claude-sonnet-4-5-20250929") == pricing.PRICES["claude-sonnet-4-5"]
    assert pricing.prices_for("claude-sonnet-4") == pricing.PRICES["claude-sonnet-4"]
    runs = [RunRecord(1, "pass", steps=1, cost_usd=0.5), RunRecord(2, "fail", steps=1)]
    assert summary.batch_figures(runs)["cost_usd"] is None


# ---- budgets -----------------------------------------------------------------------------
async def test_a_budget_stops_the_runs_still_going_and_the_summary_is_written(tmp_path):
    import json

    from fake_api import Reply, tool_use

    import tools
    from agent import AgentSettings
    from problems.math_calculation import MathCalculationProblem

    # every reply bills 100k input tokens on claude-haiku-4-5: $0.10 a step
    def step(body: dict, index: int) -> Reply:
        return Reply([tool_use("python_expression", {"code": "print(1)"})], "tool_use",
                     input_tokens=100_000, output_tokens=0)

    out = tmp_path / "out"
    settings = batch.BatchSettings(
        runs=3, concurrent=False, output_dir=out,
        agent=AgentSettings("claude-haiku-4-5", 5, 1024, True, None),
        tools=tools.ToolSettings(), max_cost_usd=0.25)
    async with FakeMessagesAPI(step) as server:
        results = await batch.run_batch(MathCalculationProblem(), sdk(server), settings,
                                        lambda *a: None)
    runs = results["runs"]
    assert [r["status"] for r in runs] == ["error"] * 3
    assert [r["reason"] for r in runs] == ["budget"] * 3
    assert [r["steps"] for r in runs] == [3, 0, 0]  # $0.30 >= $0.25 after the third step
    assert results["totals"]["cost_usd"] == pytest.approx(0.30)
    record = json.loads((out / "run_2" / "run.json").read_text())
    assert "reached --max-cost $0.25" in record["budget"]
    assert "| budget |" in (out / "run_summary.md").read_text()


async def test_a_per_run_limit_stops_each_run_on_its_own(tmp_path):
    from fake_api import Reply, tool_use

    import tools
    from agent import AgentSettings
    from problems.math_calculation import MathCalculationProblem

    def step(body: dict, index: int) -> Reply:
        return Reply([tool_use("python_expression", {"code": "print(1)"})], "tool_use",
                     input_tokens=100_000, output_tokens=0)

    settings = batch.BatchSettings(
        runs=2, concurrent=True, output_dir=tmp_path / "out",
        agent=AgentSettings("claude-haiku-4-5", 5, 1024, True, None),
        tools=tools.ToolSettings(), max_run_cost_usd=0.15)
    async with FakeMessagesAPI(step) as server:
        results = await batch.run_batch(MathCalculationProblem(), sdk(server), settings,
                                        lambda *a: None)
    # Its own limit the run spent itself: like a step limit, it is graded (here: no
    # answer), never left out of the pass rate as a stop by the batch's limit is.
    assert [(r["status"], r["error_cause"], r["steps"]) for r in results["runs"]] == [
        ("fail", None, 2)] * 2
    assert all(r["reason"].startswith("no answer: the agent ended (budget)")
               for r in results["runs"])
    assert results["totals"]["pass_rate_runs"] == 2


def test_a_cost_limit_on_a_model_without_prices_is_refused(monkeypatch, capsys):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "key")
    assert main.main(["--model", "claude-nonesuch-9", "--max-cost", "1"]) == 2
    assert "pricing.py does not" in capsys.readouterr().err.replace("\n", " ")


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "x"])
def test_bad_cost_limits_are_usage_errors(value, capsys):
    with pytest.raises(SystemExit) as exc:
        main.main(["--max-cost", value])
    assert exc.value.code == 2 and "--max-cost" in capsys.readouterr().err


def test_max_tokens_fits_the_model_and_the_transport():
    import dataclasses

    cfg = main.CONFIG
    assert cfg.max_tokens >= 24_000  # a whole-file write of the ~24 KB reference fits
    assert agent.reply_token_limit(cfg.max_tokens, cfg.model, cfg.stream,
                                   {"max_tokens": 64000})[0] == cfg.max_tokens
    assert agent.reply_token_limit(cfg.max_tokens, cfg.model, cfg.stream,
                                   {"max_tokens": 8192})[0] == 8192
    unstreamed = dataclasses.replace(cfg, stream=False)
    assert agent.reply_token_limit(unstreamed.max_tokens, unstreamed.model,
                                   unstreamed.stream, {})[0] == agent.NONSTREAMING_MAX_TOKENS


def test_the_api_settings_are_flags():
    _, _, cfg = main.parse_args(["--max-tokens", "4096", "--max-api-calls", "2",
                                 "--api-retries", "0", "--no-stream", "--prompt-cache", "off",
                                 "--max-run-cost", "0.5"])
    assert (cfg.max_tokens, cfg.max_api_calls, cfg.api_retries, cfg.stream,
            cfg.prompt_cache, cfg.max_run_cost) == (4096, 2, 0, False, "off", 0.5)


async def test_each_sdk_retry_is_one_compact_line():
    import logging

    from fake_api import FAST_RETRY, Reply, text

    lines: list[str] = []
    handler = console.SdkRetries(say=lines.append)
    sdk_log = logging.getLogger("anthropic._base_client")
    level, propagate = sdk_log.level, sdk_log.propagate
    sdk_log.addHandler(handler)
    sdk_log.setLevel(logging.DEBUG)
    try:
        script = [Fail(429, "rate_limit_error", "slow down", headers=FAST_RETRY),
                  Fail(529, "overloaded_error", "busy", headers=FAST_RETRY), Reply([text("hi")])]
        async with FakeMessagesAPI(script) as server:
            client = server.client(api_key="k", max_retries=3)
            await client.messages.create(model=MODEL, max_tokens=10,
                                         messages=[{"role": "user", "content": "hi"}])
    finally:
        sdk_log.removeHandler(handler)
        sdk_log.setLevel(level)
        sdk_log.propagate = propagate
    assert len(lines) == 2, lines
    assert "HTTP 429 on /v1/messages; the SDK retries in 0.0 s" in lines[0]
    assert "HTTP 529" in lines[1]
