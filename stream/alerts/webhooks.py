"""Post alerts to webhooks: generic JSON, Slack, Feishu (飞书), DingTalk (钉钉) and WeCom (企业微信).

Bodies follow each service's documented bot format; Feishu and DingTalk requests are signed when
the webhook has a secret.  Connection errors, timeouts, HTTP 429 and 5xx are retried with
exponential backoff; other answers are final.  URLs carry tokens, so they are never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from stream.alerts.alert import Alert
from stream.alerts.rules import Webhook
from stream.core.errors import ServiceUnavailable

log = logging.getLogger(__name__)

_KIND_TITLE = {
    "negative_surge": "负面激增 Negative surge",
    "volume_spike": "声量突增 Volume spike",
    "watch_list": "关注词命中 Watch list",
}
MAX_BACKOFF_S = 30.0


class DeliveryError(ServiceUnavailable):
    """A webhook did not accept an alert after its retries."""


def _title(alert: Alert) -> str:
    return f"[{alert.severity.upper()}] {_KIND_TITLE.get(alert.kind, alert.kind)} · {alert.scope}"


def _window(alert: Alert) -> str:
    fmt = "%Y-%m-%d %H:%M"
    return f"{alert.window_start:{fmt}} – {alert.window_end:{fmt}} UTC"


def _linkable(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def _md_text(text: str) -> str:
    """Keep a title from breaking markdown link syntax or adding its own formatting."""
    out = " ".join(text.split())
    for ch in "[]()<>*_`#|":
        out = out.replace(ch, " ")
    return " ".join(out.split())[:120] or "(untitled)"


def _markdown(alert: Alert) -> str:
    lines = [
        f"### {_md_text(_title(alert))}",
        f"- 规则 Rule: {_md_text(alert.rule)}",
        f"- 窗口 Window: {_window(alert)}",
        f"- {_md_text(alert.message)}",
    ]
    for s in alert.samples:
        title = _md_text(s.title)
        lines.append(f"- [{title}]({s.url})" if _linkable(s.url) else f"- {title}")
    return "\n".join(lines)


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plain(alert: Alert) -> str:
    lines = [_title(alert), f"规则 Rule: {alert.rule}", f"窗口 Window: {_window(alert)}", alert.message]
    lines += [f"• {' '.join(s.title.split())[:120]} {s.url}".rstrip() for s in alert.samples]
    return "\n".join(lines)


def slack_body(alert: Alert) -> dict[str, Any]:
    lines = [f"*{_slack_escape(_title(alert))}*", _slack_escape(alert.message), f"_{_window(alert)}_"]
    for s in alert.samples:
        title = _slack_escape(" ".join(s.title.split())[:120]).replace("|", "¦")
        lines.append(f"• <{s.url}|{title}>" if _linkable(s.url) and "|" not in s.url else f"• {title}")
    text = "\n".join(lines)
    # `text` is the fallback shown in notifications; blocks are what the channel renders.
    return {
        "text": _slack_escape(f"{_title(alert)}: {alert.message}"),
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    }


def feishu_sign(secret: str, timestamp: int) -> str:
    """Feishu custom bot: base64(HMAC-SHA256 keyed with "timestamp\\nsecret", empty message)."""
    key = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk custom robot: base64(HMAC-SHA256 keyed with the secret over "timestamp\\nsecret")."""
    message = f"{timestamp_ms}\n{secret}".encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def build_request(
    hook: Webhook, alert: Alert, now: Callable[[], float] = time.time
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(url, query params to add, JSON body) for one alert to one webhook."""
    url = hook.resolved_url()
    secret = hook.resolved_secret()
    params: dict[str, str] = {}
    body: dict[str, Any]
    if hook.format == "json":
        body = alert.to_dict()
    elif hook.format == "slack":
        body = slack_body(alert)
    elif hook.format == "feishu":
        body = {"msg_type": "text", "content": {"text": _plain(alert)}}
        if secret:
            timestamp = int(now())
            body = {"timestamp": str(timestamp), "sign": feishu_sign(secret, timestamp), **body}
    elif hook.format == "dingtalk":
        body = {"msgtype": "markdown", "markdown": {"title": _title(alert), "text": _markdown(alert)}}
        if secret:
            timestamp_ms = int(now() * 1000)
            params = {"timestamp": str(timestamp_ms), "sign": dingtalk_sign(secret, timestamp_ms)}
    else:  # wecom
        body = {"msgtype": "markdown", "markdown": {"content": _markdown(alert)}}
    return url, params, body


def _refusal(hook: Webhook, response: httpx.Response) -> str | None:
    """The bots answer HTTP 200 with an error code in the body; None when accepted."""
    if hook.format in ("json", "slack"):
        return None
    try:
        data = response.json()
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    code = data.get("errcode", data.get("code", data.get("StatusCode", 0)))
    if code in (0, None):
        return None
    return f"code {code}: {data.get('errmsg') or data.get('msg') or data.get('StatusMessage') or ''}".strip()


class WebhookSender:
    """Delivers alerts to one webhook with retries; `send` raises DeliveryError when it gives up."""

    def __init__(
        self,
        hook: Webhook,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.hook = hook
        self.client = client or httpx.Client()
        self._sleep = sleep

    def send(self, alert: Alert) -> int:
        """Post `alert`; returns the number of attempts it took."""
        url, params, body = build_request(self.hook, alert)
        # Added to the bot URL's own query (its token); httpx's `params=` would replace that query.
        target = httpx.URL(url).copy_merge_params(params) if params else httpx.URL(url)
        content = json.dumps(body, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json; charset=utf-8"}
        attempts = 1 + self.hook.retries
        problem = ""
        for attempt in range(1, attempts + 1):
            try:
                response = self.client.post(target, content=content, headers=headers, timeout=self.hook.timeout)
            except httpx.TimeoutException:
                problem = f"no answer within {self.hook.timeout:g}s"
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}"
            else:
                if response.status_code == 429 or response.status_code >= 500:
                    problem = f"HTTP {response.status_code}"
                elif response.status_code >= 400:
                    raise DeliveryError(
                        f"webhook {self.hook.name!r} refused alert {alert.alert_id}: HTTP {response.status_code}"
                    )
                else:
                    refusal = _refusal(self.hook, response)
                    if refusal:
                        raise DeliveryError(f"webhook {self.hook.name!r} refused alert {alert.alert_id}: {refusal}")
                    return attempt
            if attempt < attempts:
                delay = min(self.hook.backoff * 2 ** (attempt - 1), MAX_BACKOFF_S)
                log.warning(
                    "webhook %s: %s (attempt %d/%d), retrying in %.1fs",
                    self.hook.name,
                    problem,
                    attempt,
                    attempts,
                    delay,
                )
                self._sleep(delay)
        raise DeliveryError(
            f"webhook {self.hook.name!r} gave up on alert {alert.alert_id} after {attempts} attempts: {problem}"
        )

    def close(self) -> None:
        self.client.close()
