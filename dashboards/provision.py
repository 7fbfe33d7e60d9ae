"""Push the InfluxDB datasource and the dashboards to a running Grafana (HTTP API).

For a Grafana you start yourself, the files under ``dashboards/provisioning/`` do the same
at Grafana's start. This is for a Grafana that is already running (Grafana Cloud, a
shared server): it creates or updates the datasource (uid ``stridewatch-influx``), the
folder "StrideWatch" and both dashboards, with ``overwrite`` so running it again just
brings them up to date.

Secrets (the Grafana token, the InfluxDB password) are sent, never logged, and scrubbed
from error messages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from base.settings import Settings
from dashboards.builder import DATASOURCE_TYPE, DATASOURCE_UID, Json

log = logging.getLogger("stridewatch.dashboards")

FOLDER_TITLE = "StrideWatch"
FOLDER_UID = "stridewatch"
DATASOURCE_NAME = "StrideWatch InfluxDB"
DEFAULT_TIMEOUT_S = 10.0

T = TypeVar("T")


class ProvisionError(RuntimeError):
    """Grafana could not be reached or refused a step; the message says which and why."""


@dataclass(frozen=True)
class Provisioned:
    datasource: str  # "created" or "updated"
    folder: str  # "created" or "exists"
    dashboards: dict[str, str] = field(default_factory=dict)  # uid -> url in Grafana


def datasource_payload(influx_url: str, database: str, username: str = "", password: str = "",
                       influx_token: str = "") -> Json:
    """The datasource as Grafana's API takes it (same content as the provisioning file).

    ``influx_token`` is for InfluxDB 2.x/3.x, where InfluxQL runs through a DBRP mapping
    and authenticates with a token header.
    """
    json_data: Json = {"version": "InfluxQL", "dbName": database, "httpMode": "POST"}
    secure: Json = {}
    if password:
        secure["password"] = password
    if influx_token:
        json_data["httpHeaderName1"] = "Authorization"
        secure["httpHeaderValue1"] = f"Token {influx_token}"
    payload: Json = {"uid": DATASOURCE_UID, "name": DATASOURCE_NAME, "type": DATASOURCE_TYPE,
                     "access": "proxy", "url": influx_url, "user": username,
                     "database": database, "basicAuth": False, "isDefault": False,
                     "jsonData": json_data}
    if secure:
        payload["secureJsonData"] = secure
    return payload


def datasource_from_settings(settings: Settings, influx_url: str | None = None) -> Json:
    v2 = settings.influx_api == "v2"
    return datasource_payload(
        influx_url or settings.influx_url,
        settings.influx_bucket if v2 else settings.influx_db,
        username=settings.influx_username,
        password=settings.influx_password.get_secret_value(),
        influx_token=settings.influx_token.get_secret_value() if v2 else "")


def display_url(url: str) -> str:
    """``url`` without user info, query or fragment: safe for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def connect(url: str, token: str | None, timeout: float = DEFAULT_TIMEOUT_S) -> Any:
    """A ``GrafanaApi`` for ``url``; a token goes in a bearer header, or user:password@ in
    the URL is used for basic auth."""
    from grafana_client.api import GrafanaApi

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProvisionError(f"Grafana URL must look like https://grafana.example.org, "
                             f"got {display_url(url)!r}")
    path = parts.path
    # grafana-client glues the path prefix to "api": keep the separating slash
    if path and not path.endswith("/"):
        path += "/"
    url = urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
    return GrafanaApi.from_url(url, credential=token or None, timeout=timeout)


class _Steps:
    """Runs API calls and turns every failure into a ProvisionError with no secret in it."""

    def __init__(self, where: str, secrets: Sequence[str]) -> None:
        self.where = where
        self.secrets = [s for s in secrets if s]

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text[:300]

    def run(self, step: str, call: Callable[[], T], missing_ok: bool = False) -> T | None:
        from grafana_client.client import (
            GrafanaClientError,
            GrafanaException,
            GrafanaServerError,
            GrafanaTimeoutError,
            GrafanaUnauthorizedError,
        )

        try:
            return call()
        except GrafanaUnauthorizedError:
            raise ProvisionError(
                f"Grafana at {self.where} refused the credentials (401 Unauthorized) while "
                f"{step}: check the token (a service-account token with the Admin role)"
            ) from None
        except GrafanaClientError as exc:
            if exc.status_code == 404 and missing_ok:
                return None
            if exc.status_code == 403:
                raise ProvisionError(
                    f"Grafana at {self.where} denied {step} (403 Forbidden): the token's "
                    "account needs the Admin role (datasources) or Editor on the folder"
                ) from None
            raise ProvisionError(f"Grafana at {self.where} rejected {step} "
                                 f"({exc.status_code}): {self.scrub(str(exc.message))}") from None
        except GrafanaServerError as exc:
            raise ProvisionError(f"Grafana at {self.where} failed while {step} "
                                 f"({exc.status_code}): {self.scrub(str(exc.message))}") from None
        except GrafanaTimeoutError:
            raise ProvisionError(f"Grafana at {self.where} did not answer in time while "
                                 f"{step}") from None
        except (GrafanaException, OSError) as exc:
            # connection refused, DNS, TLS: the exception text may carry the full URL
            raise ProvisionError(f"Grafana at {self.where} is unreachable while {step} "
                                 f"({type(exc).__name__}); is the URL right and Grafana up?"
                                 ) from None


def provision(api: Any, dashboards: Mapping[str, Json], datasource: Json, *, where: str,
              secrets: Sequence[str] = ()) -> Provisioned:
    """Create or update the datasource, the folder and ``dashboards`` (file name -> JSON)."""
    steps = _Steps(where, [*secrets, *_secret_values(datasource)])
    uid = str(datasource["uid"])

    existing = steps.run("reading the datasource",
                         lambda: api.datasource.get_datasource_by_uid(uid), missing_ok=True)
    if existing is None:
        steps.run("creating the datasource", lambda: api.datasource.create_datasource(datasource))
        datasource_state = "created"
    else:
        steps.run("updating the datasource",
                  lambda: api.datasource.update_datasource_by_uid(uid, datasource))
        datasource_state = "updated"
    log.info("datasource %s %s", uid, datasource_state)

    folder = steps.run("reading the folder", lambda: api.folder.get_folder(FOLDER_UID),
                       missing_ok=True)
    if folder is None:
        steps.run("creating the folder",
                  lambda: api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID))
    folder_state = "created" if folder is None else "exists"
    log.info("folder %s %s", FOLDER_UID, folder_state)

    urls: dict[str, str] = {}
    for name, board in sorted(dashboards.items()):
        payload = {"dashboard": {**board, "id": None}, "folderUid": FOLDER_UID,
                   "overwrite": True, "message": "stridewatch dashboards provision"}
        answer = steps.run(f"saving dashboard {name}",
                           partial(api.dashboard.update_dashboard, payload))
        url = str(answer.get("url", "")) if isinstance(answer, dict) else ""
        urls[str(board["uid"])] = url
        log.info("dashboard %s saved %s", board["uid"], url)
    return Provisioned(datasource_state, folder_state, urls)


def _secret_values(datasource: Json) -> list[str]:
    secure = datasource.get("secureJsonData") or {}
    return [str(v) for v in secure.values()]


def provision_grafana(url: str, token: str | None, settings: Settings,
                      influx_url: str | None = None,
                      timeout: float = DEFAULT_TIMEOUT_S) -> Provisioned:
    """Everything ``stridewatch dashboards provision`` does, given its options."""
    from dashboards.generate import build_all

    api = connect(url, token, timeout)
    return provision(api, build_all(), datasource_from_settings(settings, influx_url),
                     where=display_url(url),
                     secrets=[token or "", urlsplit(url).password or ""])
