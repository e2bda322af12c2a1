"""What the routes share: the application's keys (the jobs, the asset store) and the base
URL of a request. Must not import the backends or ComfyUI.
"""

from __future__ import annotations

from aiohttp import web

from .assets import AssetStore
from .jobs import Jobs

JOBS, ASSETS = web.AppKey("jobs", Jobs), web.AppKey("assets", AssetStore)


def base_url(request: web.Request) -> str:
    return str(request.url.origin())
