"""Airflow 3's REST API as one named user sees it (urllib only), for the compose test.

``AirflowUser(base_url, name, password)`` logs in with the simple auth manager's
``POST /auth/token`` and sends the token; ``AirflowUser(base_url)`` is anonymous. ``status``
returns the HTTP code of a request without raising, for the refusals the test checks; the
other methods raise ``ApiError`` with the response body.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

FINAL_RUN_STATES = frozenset({"success", "failed"})


class ApiError(RuntimeError):
    """A request failed, or a wait ran out (the message says what was awaited)."""


def q(text: str) -> str:
    return urllib.parse.quote(text, safe="")


class AirflowUser:
    def __init__(
        self,
        base_url: str,
        name: str | None = None,
        password: str | None = None,
        alive: Callable[[], None] | None = None,
    ) -> None:
        self.base_url, self.name, self._password = base_url.rstrip("/"), name, password
        self._alive = alive or (lambda: None)  # raises when the deployment has died
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._token: str | None = None

    def _request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self._token:
            req.add_header("Authorization", f"Bearer {self._token}")
        try:
            with self._opener.open(req, timeout=60) as resp:
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as exc:
            raw = exc.read().decode("utf-8", "replace")
            return exc.code, raw

    def login(self) -> AirflowUser:
        """Fetch a token with this user's password (no-op for the anonymous user)."""
        if self.name is None:
            return self
        code, body = self._request(
            "POST", "/auth/token", {"username": self.name, "password": self._password}
        )
        if code != 201:
            raise ApiError(f"login as {self.name} -> HTTP {code}: {body}")
        self._token = body["access_token"]
        return self

    def status(self, method: str, path: str, body: Any = None) -> int:
        return self._request(method, path, body)[0]

    def api(self, method: str, path: str, body: Any = None) -> Any:
        code, payload = self._request(method, path, body)
        if code >= 400:
            raise ApiError(
                f"{method} {path} as {self.name or 'anonymous'} -> HTTP {code}: "
                f"{str(payload)[:2000]}"
            )
        return payload

    def poll(self, fn: Callable[[], Any], what: str, timeout: float, interval: float = 2.0) -> Any:
        """Call fn until it returns something other than None; a hang guard, not a timer."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while True:
            self._alive()
            try:
                found = fn()
                if found is not None:
                    return found
            except (OSError, ApiError) as exc:
                last = exc
            if time.monotonic() > deadline:
                raise ApiError(
                    f"gave up after {timeout:.0f} s waiting for {what}"
                    + (f" (last error: {last})" if last else "")
                )
            time.sleep(interval)

    # --- what the test asks ------------------------------------------------------------

    def health(self) -> dict | None:
        code, body = self._request("GET", "/api/v2/monitor/health")
        return body if code == 200 else None

    def wait_healthy(self, timeout: float) -> dict:
        def healthy() -> dict | None:
            h = self.health()
            ok = h and all(
                (h.get(k) or {}).get("status") == "healthy"
                for k in ("metadatabase", "scheduler", "dag_processor")
            )
            return h if ok else None

        return self.poll(
            healthy, "the metadatabase, scheduler and dag-processor to be healthy", timeout
        )

    def wait_for_dag(self, dag_id: str, timeout: float) -> dict:
        def parsed() -> dict | None:
            code, body = self._request("GET", f"/api/v2/dags/{q(dag_id)}")
            return body if code == 200 else None

        return self.poll(parsed, f"DAG {dag_id} to be parsed", timeout)

    def unpause(self, dag_id: str) -> dict:
        return self.api(
            "PATCH", f"/api/v2/dags/{q(dag_id)}?update_mask=is_paused", {"is_paused": False}
        )

    def trigger(self, dag_id: str) -> dict:
        return self.api(
            "POST", f"/api/v2/dags/{q(dag_id)}/dagRuns", {"logical_date": None, "conf": {}}
        )

    def dag_runs(self, dag_id: str) -> list[dict]:
        return self.api("GET", f"/api/v2/dags/{q(dag_id)}/dagRuns?order_by=id&limit=100")[
            "dag_runs"
        ]

    def wait_for_new_run(
        self, dag_id: str, run_type: str, timeout: float, exclude: frozenset[str] = frozenset()
    ) -> dict:
        def found() -> dict | None:
            return next(
                (
                    r
                    for r in self.dag_runs(dag_id)
                    if r["run_type"] == run_type and r["dag_run_id"] not in exclude
                ),
                None,
            )

        return self.poll(found, f"a {run_type} run of {dag_id}", timeout)

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> dict:
        path = f"/api/v2/dags/{q(dag_id)}/dagRuns/{q(run_id)}"

        def finished() -> dict | None:
            run = self.api("GET", path)
            return run if run["state"] in FINAL_RUN_STATES else None

        return self.poll(finished, f"run {run_id} of {dag_id} to finish", timeout, interval=5)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.api(
            "GET",
            f"/api/v2/dags/{q(dag_id)}/dagRuns/{q(run_id)}/taskInstances"
            "?limit=100&order_by=map_index",
        )["task_instances"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """The log's events as lines of text (the API returns them as JSON records)."""
        log = self.api(
            "GET",
            f"/api/v2/dags/{q(dag_id)}/dagRuns/{q(run_id)}/taskInstances/"
            f"{q(task_id)}/logs/{try_number}?full_content=true",
        )
        return "\n".join(
            str(e.get("event", e)) if isinstance(e, dict) else str(e) for e in log["content"]
        )
