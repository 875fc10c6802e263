"""Upload the dashboards to a Grafana with grafana-client: create or overwrite by uid, idempotently."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from grafana_client import GrafanaApi
from grafana_client.client import (
    GrafanaClientError,
    GrafanaException,
    GrafanaServerError,
    GrafanaTimeoutError,
    GrafanaUnauthorizedError,
)
from niquests.exceptions import RequestException

from stream.core.errors import ConfigError, ServiceUnavailable, YuqingError


class GrafanaError(YuqingError):
    """Grafana refused a request (other than for authentication)."""


@dataclass(frozen=True)
class Pushed:
    uid: str
    title: str
    version: int | None
    url: str | None


def folder_uid(name: str) -> str:
    """A stable folder uid derived from its name (used only when the folder must be created)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return (slug or "yuqing")[:40]


def _call(what: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except GrafanaUnauthorizedError:
        raise ConfigError("Grafana rejected the token", hint="check --token (a service-account token)") from None
    except GrafanaTimeoutError as exc:
        raise ServiceUnavailable(f"Grafana did not answer while {what}: {exc}") from None
    except GrafanaServerError as exc:
        raise ServiceUnavailable(f"Grafana failed while {what}: {exc}") from None
    except GrafanaClientError as exc:
        if exc.status_code == 403:
            raise ConfigError(f"the token may not be used for {what}",
                              hint="give the service account the Editor role") from None
        raise GrafanaError(f"Grafana refused {what}: {exc}") from None
    except (GrafanaException, RequestException) as exc:  # connection refused, DNS, TLS
        raise ServiceUnavailable(f"cannot reach Grafana while {what}: {exc}") from None


def ensure_folder(api: GrafanaApi, name: str) -> str:
    """The uid of the folder titled `name`, created when missing."""
    for folder in _call("listing folders", api.folder.get_all_folders) or []:
        if folder.get("title") == name:
            return str(folder["uid"])
    uid = folder_uid(name)
    try:
        created = _call(f"creating folder {name!r}", api.folder.create_folder, name, uid)
    except GrafanaError:  # a folder with that uid exists under another title: use it
        created = _call(f"reading folder {uid!r}", api.folder.get_folder, uid)
    return str(created["uid"])


def push(url: str, token: str, dashboards: dict[str, dict[str, Any]], folder: str = "yuqing",
         timeout_s: float = 30.0) -> list[Pushed]:
    """Upload every dashboard into `folder`, replacing any dashboard with the same uid."""
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"Grafana URL {url!r} must start with http:// or https://")
    api = GrafanaApi.from_url(url, credential=token, timeout=timeout_s)
    uid = ensure_folder(api, folder)
    pushed = []
    for data in dashboards.values():
        body = dict(data)
        body["id"] = None  # ids are per Grafana instance; the uid identifies the dashboard
        body.pop("version", None)  # with overwrite, Grafana takes it as the next version
        response = _call(
            f"saving dashboard {data.get('uid')!r}",
            api.dashboard.update_dashboard,
            {"dashboard": body, "folderUid": uid, "overwrite": True, "message": "yuqing dashboards push"},
        )
        pushed.append(
            Pushed(str(data.get("uid")), str(data.get("title")), response.get("version"), response.get("url"))
        )
    return pushed
