"""A small synchronous client of the REST API, used by the CLI and the demo."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from service.settings import Settings


class ApiError(RuntimeError):
    """The API could not be reached or answered with an error."""


def error_text(response: httpx.Response) -> str:
    """One readable line from the API's error body: `field: message[; field: message]`."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
    if not isinstance(body, dict):
        return str(body)[:200]
    detail = body.get("detail")
    if isinstance(detail, list) and detail:
        parts = [
            f"{d.get('field')}: {d.get('message')}" if d.get("field") else str(d.get("message"))
            for d in detail
            if isinstance(d, dict)
        ]
        if parts:
            return "; ".join(parts).replace("Value error, ", "")
    if isinstance(detail, dict) and detail.get("message"):
        return f"{body.get('field') or detail.get('field')}: {detail['message']}"
    error = str(body.get("error") or body)
    return f"{body['field']}: {error}" if body.get("field") else error


class ApiClient:
    """Bearer-authenticated calls to /v1."""

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 30.0) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiClient:
        """Token from TINYSTORIES_ADMIN_TOKEN or the file the server generated."""
        if settings.admin_token is not None:
            token = settings.admin_token.get_secret_value()
        elif settings.admin_token_path.exists():
            token = settings.admin_token_path.read_text().strip()
        else:
            raise ApiError(
                f"no admin token: set TINYSTORIES_ADMIN_TOKEN or start the server once "
                f"(it writes {settings.admin_token_path})"
            )
        return cls(settings.api_base, token)

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(
                f"cannot reach the API at {self._http.base_url}: {exc} (set TINYSTORIES_API_URL, "
                "or TINYSTORIES_PORT for a server on this machine)"
            ) from None
        if response.status_code >= 400:
            raise ApiError(f"HTTP {response.status_code}: {error_text(response)}")
        try:
            return response.json()
        except ValueError:  # a proxy's page, or not this API at all
            raise ApiError(
                f"{response.request.url} answered HTTP {response.status_code} with something "
                f"that is not JSON ({response.text[:60]!r}): is TINYSTORIES_API_URL this API?"
            ) from None

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /v1/jobs."""
        return self._request("POST", "/v1/jobs", json=body)

    def list(self) -> dict[str, Any]:
        """GET /v1/jobs."""
        return self._request("GET", "/v1/jobs")

    def resolve(self, job_id: str) -> str:
        """The full id of the one job whose id starts with `job_id` (any unique prefix)."""
        try:
            return str(uuid.UUID(job_id))
        except ValueError:
            pass
        if not job_id or not all(c in "0123456789abcdefABCDEF-" for c in job_id):
            raise ApiError(f"job id {job_id!r}: expected a job id or a prefix of one (hex)")
        found = self._request("GET", "/v1/jobs", params={"id_prefix": job_id, "limit": 2})
        ids = [job["id"] for job in found["items"]]
        if not ids:
            raise ApiError(f"job id {job_id!r}: no job has an id starting with it")
        if len(ids) > 1:
            raise ApiError(f"job id {job_id!r}: several jobs start with it; give more characters")
        return ids[0]

    def show(self, job_id: str) -> dict[str, Any]:
        """GET /v1/jobs/{id}; any unique prefix of the id will do."""
        return self._request("GET", f"/v1/jobs/{self.resolve(job_id)}")

    def diversity(self, job_id: str) -> dict[str, Any]:
        """A job's diversity figures (job_id resolved already)."""
        return self._request("GET", f"/v1/jobs/{job_id}/diversity")

    def action(self, job_id: str, action: str) -> dict[str, Any]:
        """POST /v1/jobs/{id}/{pause|resume|cancel}; any unique prefix of the id will do."""
        return self._request("POST", f"/v1/jobs/{self.resolve(job_id)}/{action}")

    def set_budget(self, job_id: str, budget_usd: float) -> dict[str, Any]:
        """PATCH /v1/jobs/{id}; any unique prefix of the id will do."""
        return self._request(
            "PATCH", f"/v1/jobs/{self.resolve(job_id)}", json={"budget_usd": budget_usd}
        )

    def healthy(self) -> bool:
        """GET /healthz answered."""
        try:
            return self._http.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False
