"""/docs, /redoc and /demo without a browser: served with local assets only, and LPGNET_DEMO=false."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient


def asset_urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


@pytest.mark.parametrize("page", ["/docs", "/redoc", "/demo"])
def test_page_loads_only_assets_of_this_service(tiny_client: TestClient, page: str) -> None:
    response = tiny_client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    urls = [u for u in asset_urls(response.text) if not u.startswith("#")]
    assert urls and all(u.startswith("/") for u in urls), urls
    for url in urls:
        assert tiny_client.get(url).status_code == 200, url
    assert "cdn." not in response.text and "fonts.googleapis" not in response.text


def test_demo_can_be_turned_off(
    make_settings: Callable[..., Any], start_client: Callable[..., TestClient]
) -> None:
    client = start_client(make_settings(demo=False))
    assert client.get("/demo").status_code == 404
    assert client.get("/static/demo/demo.js").status_code == 404
    assert client.get("/docs").status_code == 200
