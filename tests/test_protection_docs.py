"""The /docs pages in headless Chromium contact no host but the API's: no CDN, web fonts,
telemetry or validator.

The API is browsed under a public-looking name (docs.test, mapped to 127.0.0.1), because the
UIs skip their validator and telemetry on localhost. Chromium resolves no other host, and every
request the pages make is recorded: one that only tried to leave counts too, unless the
browser refused it under the pages' Content-Security-Policy, so that it never left.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest

from tests.browser import CHROMIUM, Browser
from tests.conftest import running_api

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (.ci/run installs Debian's chromium)"
)

KEY = "sk-docs-0123456789abcdef"
HOST = "docs.test"
# A path of the document: the page has rendered it once it shows it.
RENDERED = "document.body && document.body.innerText.includes('/question/stream')"
# Seconds each page is watched after it has rendered, for requests made later (telemetry).
SETTLE = 3.0


@pytest.fixture(scope="module")
def served(embedded_server, tmp_path_factory):
    directory = tmp_path_factory.mktemp("docs")
    with running_api(embedded_server.get_uri(), directory, API_KEYS=KEY) as api:
        yield api


@pytest.mark.parametrize("page", ["/docs/swagger/", "/docs/redoc/", "/docs/scalar/"])
def test_the_docs_pages_contact_no_other_host(page, served, tmp_path):
    url = served.url.replace("127.0.0.1", HOST) + page
    browser = Browser(tmp_path / "profile", host_rules=(f"MAP {HOST} 127.0.0.1",))
    try:
        browser.send("Network.enable")
        # With keys on the pages are keyed too, like every route but the probes.
        browser.send("Network.setExtraHTTPHeaders", headers={"X-API-Key": KEY})
        browser.open(url)
        browser.wait_for(RENDERED, f"{page} showing the operations")
        deadline = time.monotonic() + SETTLE
        while time.monotonic() < deadline:
            browser.evaluate("1")
            time.sleep(0.2)
    finally:
        browser.close()
    sent = {
        event["params"]["requestId"]: event["params"]["request"]["url"]
        for event in browser.events
        if event["method"] == "Network.requestWillBeSent"
    }
    refused = {
        event["params"]["requestId"]
        for event in browser.events
        if event["method"] == "Network.loadingFailed"
        and event["params"].get("blockedReason") == "csp"
    }
    assert url in sent.values(), sent
    left = [
        address
        for request, address in sent.items()
        if urlsplit(address).scheme not in ("data", "blob")
        and urlsplit(address).hostname != HOST
        and request not in refused
    ]
    assert left == []
    print(f"{page}: {len(sent)} requests, refused by the policy: {[sent[r] for r in refused]}")
