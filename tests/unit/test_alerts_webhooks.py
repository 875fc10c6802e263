"""Webhook bodies, signatures, retries and timeouts, against a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import time
from typing import Any

import pytest

from stream.alerts.alert import Alert, Sample
from stream.alerts.rules import Webhook
from stream.alerts.webhooks import DeliveryError, WebhookSender
from tests.webhook_receiver import webhook_receiver

T = dt.datetime(2025, 3, 10, 12, 0, tzinfo=dt.UTC)


def _alert() -> Alert:
    return Alert(
        alert_id="a" * 32,
        rule="negative-surge-risk",
        kind="negative_surge",
        severity="warning",
        scope="risk=社会",
        window_start=T - dt.timedelta(hours=1),
        window_end=T,
        value=0.72,
        threshold=0.6,
        item_count=50,
        sample_ids=("i1", "i2"),
        message="[负面激增 negative surge] negative-surge-risk · risk=社会: 72% of 50 items negative",
        fired_at=T,
        samples=(
            Sample("i1", "化工厂<爆炸>事故 [通报]", "https://news.example/1?a=1&b=2", "weibo"),
            Sample("i2", "no link here", "javascript:alert(1)", "reuters"),
        ),
    )


def _send(hook_fields: dict[str, Any], script: list[tuple[int, str, float]] | None = None):
    delays: list[float] = []
    with webhook_receiver(script) as receiver:
        hook = Webhook(name="h", url=receiver.url, **hook_fields)
        sender = WebhookSender(hook, sleep=delays.append)
        try:
            attempts = sender.send(_alert())
        finally:
            sender.close()
    return receiver.received, attempts, delays


def test_generic_json_posts_the_alert() -> None:
    received, attempts, _ = _send({"format": "json"})
    assert attempts == 1 and len(received) == 1
    body = received[0].json()
    assert body["alert_id"] == "a" * 32
    assert body["scope"] == "risk=社会"
    assert body["window"] == "1h"
    assert body["sample_ids"] == ["i1", "i2"]
    assert received[0].path == "/hook" and received[0].query == {"token": "t"}
    assert received[0].headers["Content-Type"].startswith("application/json")


def test_slack_text_and_blocks() -> None:
    received, _, _ = _send({"format": "slack"})
    body = received[0].json()
    assert set(body) == {"text", "blocks"}
    assert "risk=社会" in body["text"]
    section = body["blocks"][0]
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    text = section["text"]["text"]
    # Data is escaped for mrkdwn; only http(s) links become links.
    assert "&lt;爆炸&gt;" in text and "<爆炸>" not in text
    assert "<https://news.example/1?a=1&b=2|" in text
    assert "javascript:" not in text


def test_feishu_text_with_signature() -> None:
    before = int(time.time())
    received, _, _ = _send({"format": "feishu", "secret": "s3cret"})
    body = received[0].json()
    assert body["msg_type"] == "text"
    assert "risk=社会" in body["content"]["text"]
    timestamp = int(body["timestamp"])
    assert before <= timestamp <= int(time.time())
    key = f"{timestamp}\ns3cret".encode()
    expected = base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    assert body["sign"] == expected


def test_feishu_without_secret_is_unsigned() -> None:
    received, _, _ = _send({"format": "feishu"})
    assert set(received[0].json()) == {"msg_type", "content"}


def test_dingtalk_markdown_signed_in_the_query() -> None:
    received, _, _ = _send({"format": "dingtalk", "secret": "SECabc"})
    request = received[0]
    body = request.json()
    assert body["msgtype"] == "markdown"
    assert set(body["markdown"]) == {"title", "text"}
    assert "risk=社会" in body["markdown"]["title"]
    assert "[化工厂 爆炸 事故 通报](https://news.example/1?a=1&b=2)" in body["markdown"]["text"]
    assert "javascript:" not in body["markdown"]["text"]
    timestamp = request.query["timestamp"]
    digest = hmac.new(b"SECabc", f"{timestamp}\nSECabc".encode(), hashlib.sha256).digest()
    assert request.query["sign"] == base64.b64encode(digest).decode()
    assert request.query["token"] == "t"  # the bot's own query is kept


def test_wecom_markdown() -> None:
    received, _, _ = _send({"format": "wecom"})
    body = received[0].json()
    assert body["msgtype"] == "markdown"
    assert set(body["markdown"]) == {"content"}
    assert "negative-surge-risk" in body["markdown"]["content"]


def test_retries_a_500_then_succeeds() -> None:
    received, attempts, delays = _send(
        {"format": "json", "retries": 3, "backoff": 0.25},
        script=[(500, "oops", 0.0), (503, "busy", 0.0), (200, "ok", 0.0)],
    )
    assert attempts == 3
    assert len(received) == 3
    assert received[0].body == received[2].body  # the same alert each time
    assert delays == [0.25, 0.5]  # exponential backoff


def test_gives_up_after_the_retries() -> None:
    with pytest.raises(DeliveryError, match="after 3 attempts: HTTP 500"):
        _send({"format": "json", "retries": 2, "backoff": 0}, script=[(500, "oops", 0.0)])


def test_client_errors_are_not_retried() -> None:
    with webhook_receiver([(404, "no", 0.0)]) as receiver:
        sender = WebhookSender(Webhook(name="h", url=receiver.url, retries=3), sleep=lambda _: None)
        with pytest.raises(DeliveryError, match="HTTP 404"):
            sender.send(_alert())
        assert len(receiver.received) == 1


def test_bot_error_code_in_a_200_is_a_refusal() -> None:
    with webhook_receiver([(200, '{"errcode": 310000, "errmsg": "sign not match"}', 0.0)]) as receiver:
        sender = WebhookSender(Webhook(name="h", format="dingtalk", url=receiver.url), sleep=lambda _: None)
        with pytest.raises(DeliveryError, match="310000: sign not match"):
            sender.send(_alert())
        assert len(receiver.received) == 1


def test_timeout_is_retried_then_given_up() -> None:
    with webhook_receiver([(200, "{}", 1.5)]) as receiver:
        hook = Webhook(name="slow", url=receiver.url, timeout=0.2, retries=1, backoff=0)
        sender = WebhookSender(hook, sleep=lambda _: None)
        started = time.monotonic()
        with pytest.raises(DeliveryError, match=r"no answer within 0.2s"):
            sender.send(_alert())
        elapsed = time.monotonic() - started
        sender.close()
    assert len(receiver.received) == 2
    assert elapsed < 1.5  # two timeouts of 0.2 s, not two slow answers


def test_url_and_secret_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with webhook_receiver() as receiver:
        monkeypatch.setenv("TEST_HOOK_URL", receiver.url)
        monkeypatch.setenv("TEST_HOOK_SECRET", "k")
        hook = Webhook(name="env", format="feishu", url_env="TEST_HOOK_URL", secret_env="TEST_HOOK_SECRET")
        WebhookSender(hook).send(_alert())
    assert "sign" in receiver.received[0].json()


def test_secrets_stay_out_of_reprs_and_dumps() -> None:
    hook = Webhook(name="h", format="dingtalk", url="https://oapi.example/robot?access_token=tok123", secret="SECxyz")
    for shown in (repr(hook), str(hook), hook.model_dump_json()):
        assert "tok123" not in shown and "SECxyz" not in shown
