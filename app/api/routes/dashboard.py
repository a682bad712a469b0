"""The dashboard: a static page (no build step, no CDN) served from the package.

``/`` is the page; ``/dashboard/<file>`` its script, style sheet and the vendored uPlot. The page
links its assets with a content hash (``?v=``), so the assets are cached for a year and a new
version is fetched as soon as the page changes; the page itself is revalidated (ETag) each load.
None of it is under ``/api/``, so no fault injector touches it: during an incident the page still
loads, and only a crash or a restart of the process makes it unreachable (the page says so).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from payflow.app.errors import ApiError

router = APIRouter(tags=["dashboard"])

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
# The page loads nothing but its own files and asks nothing but this API.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_ASSET_REF = re.compile(r"\{\{asset:([\w./-]+)\}\}")


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    version: str  # a content hash

    @property
    def etag(self) -> str:
        return f'"{self.version}"'


def _load(name: str, body: bytes) -> Asset:
    suffix = name[name.rfind(".") :]
    return Asset(body, CONTENT_TYPES[suffix], hashlib.sha256(body).hexdigest()[:16])


@cache
def assets() -> dict[str, Asset]:
    """Every file of the dashboard folder, read once; ``index.html`` with its asset links versioned."""
    root = resources.files("payflow.app").joinpath("dashboard")
    found: dict[str, Asset] = {}
    for folder, prefix in ((root, ""), (root.joinpath("vendor"), "vendor/")):
        for entry in folder.iterdir():
            suffix = entry.name[entry.name.rfind(".") :]
            if entry.is_file() and suffix in CONTENT_TYPES and entry.name != "index.html":
                found[prefix + entry.name] = _load(entry.name, entry.read_bytes())

    def link(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in found:
            raise LookupError(f"index.html links {name}, which is not in the dashboard folder")
        return f"/dashboard/{name}?v={found[name].version}"

    page = _ASSET_REF.sub(link, root.joinpath("index.html").read_text(encoding="utf-8"))
    found["index.html"] = _load("index.html", page.encode())
    return found


def _serve(asset: Asset, cache_control: str, if_none_match: str | None) -> Response:
    headers = {
        "Cache-Control": cache_control,
        "ETag": asset.etag,
        "X-Content-Type-Options": "nosniff",
    }
    if asset.content_type.startswith("text/html"):
        headers["Content-Security-Policy"] = CSP
        headers["Referrer-Policy"] = "no-referrer"
    if if_none_match is not None and asset.etag in (t.strip() for t in if_none_match.split(",")):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.content_type, headers=headers)


@router.get("/", include_in_schema=False)
async def dashboard(if_none_match: Annotated[str | None, Header()] = None) -> Response:
    return _serve(assets()["index.html"], REVALIDATE, if_none_match)


@router.get("/dashboard/{name:path}", include_in_schema=False)
async def dashboard_asset(
    name: str,
    v: Annotated[str | None, Query(max_length=64)] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    asset = assets().get(name)
    if asset is None or name == "index.html":
        raise ApiError(404, "not_found", f"no dashboard file {name!r}")
    return _serve(asset, IMMUTABLE if v == asset.version else REVALIDATE, if_none_match)
