"""The endpoint client's retry, budget and secrecy rules, against a loopback proxy that answers
HTTP 500 itself or a closed port (no model needed). Generation against the real server is in
tests/test_generate_serve.py and tests/test_judge_serve.py."""

from __future__ import annotations

import random

import pytest

from mixtral_ft.backends import available_backends, backend_factory, create_backend
from mixtral_ft.backends.base import GenerationParams, Request
from mixtral_ft.backends.openai import backoff_delay
from mixtral_ft.errors import UsageError
from support.fixtures_serve import FaultProxy, free_port

SECRET = "sk-test-DO-NOT-LEAK-1234567890"


def test_registry_names_and_suggestion():
    assert available_backends() == ["hf", "openai"]
    with pytest.raises(UsageError, match=r"Unknown backend 'opnai'\. Did you mean 'openai'\? Available: hf, openai"):
        backend_factory("opnai")


def test_backoff_is_bounded_and_honours_retry_after():
    rng = random.Random(0)
    for attempt in range(10):
        d = backoff_delay(attempt, base=0.5, cap=4.0, rng=rng)
        assert 0 <= d <= min(4.0, 0.5 * 2**attempt)
    assert backoff_delay(0, 0.5, 30.0, rng, retry_after=7) >= 7
    assert backoff_delay(0, 0.5, 3.0, rng, retry_after=700) == 3.0


def test_bad_options_are_usage_errors():
    with pytest.raises(UsageError, match="http"):
        create_backend("openai", base_url="localhost:8000", model="m")
    with pytest.raises(UsageError, match="concurrency"):
        create_backend("openai", base_url="http://127.0.0.1:1/v1", model="m", concurrency=0)
    with pytest.raises(UsageError, match="Unknown endpoint mode"):
        create_backend("openai", base_url="http://127.0.0.1:1/v1", model="m", mode="chatt")


def test_http_500_retries_are_bounded_and_failures_recorded(monkeypatch):
    monkeypatch.setenv("MY_KEY", SECRET)
    proxy = FaultProxy(upstream_port=None)
    proxy.fail_all = True
    try:
        backend = create_backend(
            "openai",
            base_url=proxy.base_url,
            model="m",
            api_key_env="MY_KEY",
            concurrency=2,
            max_retries=2,
            backoff_base=0.01,
        )
        reqs = [Request(f"id{i}", prompt="x") for i in range(3)]
        results = list(backend.run(reqs, GenerationParams(max_new_tokens=4)))
        backend.close()
    finally:
        proxy.close()
    assert sorted(r.key for r in results) == ["id0", "id1", "id2"]
    assert all(not r.ok and r.text is None and "HTTP 500" in r.error and "3 attempt" in r.error for r in results)
    assert proxy.requests == 3 * 3
    assert SECRET not in repr(results) and SECRET not in str(backend.identity())
    assert backend.identity()["api_key_set"] is True


def test_max_requests_caps_the_run_and_fails_the_rest():
    proxy = FaultProxy(upstream_port=None)
    proxy.fail_all = True
    try:
        backend = create_backend(
            "openai",
            base_url=proxy.base_url,
            model="m",
            concurrency=1,
            max_retries=5,
            max_requests=4,
            backoff_base=0.01,
        )
        results = list(backend.run([Request(f"id{i}", prompt="x") for i in range(3)], GenerationParams()))
    finally:
        proxy.close()
    assert proxy.requests == 4
    assert len(results) == 3 and not any(r.ok for r in results)
    assert sum("--max-requests 4" in r.error for r in results) >= 2


def test_connection_refused_is_retried_then_recorded():
    backend = create_backend(
        "openai", base_url=f"http://127.0.0.1:{free_port()}/v1", model="m", max_retries=1, backoff_base=0.01, timeout=2
    )
    (result,) = list(backend.run([Request("a", prompt="x")], GenerationParams()))
    assert not result.ok and "connection error" in result.error and "2 attempt" in result.error
    assert backend.retries == 1


def test_request_bodies():
    b = create_backend("openai", base_url="http://127.0.0.1:1/v1/", model="m")
    assert b.base_url == "http://127.0.0.1:1/v1"
    body = b.request_body(Request("a", prompt="P"), GenerationParams(max_new_tokens=7, stop=("\n\n",)))
    assert body == {"model": "m", "max_tokens": 7, "temperature": 0.0, "prompt": "P", "stop": ["\n\n"]}
    chat = create_backend("openai", base_url="http://127.0.0.1:1/v1", model="m", mode="chat")
    body = chat.request_body(
        Request("a", messages=({"role": "user", "content": "hi"},)),
        GenerationParams(temperature=0.7, top_p=0.9, seed=3),
    )
    assert body["messages"] == [{"role": "user", "content": "hi"}] and body["seed"] == 3 and body["top_p"] == 0.9
    with pytest.raises(UsageError, match="chat"):
        b.request_body(Request("a", messages=({"role": "user", "content": "hi"},)), GenerationParams())
