"""Delivery of one JSON document to one webhook: an HTTP POST with the standard library.

A short timeout per try, a few tries with a growing pause between them on a network error, a
timeout or a 5xx answer (and 429), and then `DeliveryError`. A 4xx answer other than 429 is not
tried again: the same request would be refused the same way. Called from the publisher's
background thread only (publisher.py), so the research never waits for it.

Webhook URLs often hold a secret (a token in the path or the query): messages name only the
scheme, host and port (`where`).
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

import autoresearch
from autoresearch.errors import AutoresearchError

TIMEOUT_S = 5.0  # one try: connecting, and each wait for the answer
PAUSES_S = (1.0, 2.0)  # between tries: three tries in all
RETRIED_STATUS = 429  # besides 5xx: "too many requests" is worth another try


class DeliveryError(AutoresearchError):
    """A webhook that did not take the document after every try."""


def where(url: str) -> str:
    """The URL without what may be secret: scheme://host[:port]."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def post(url: str, document: dict, timeout_s: float = TIMEOUT_S, pauses_s: tuple[float, ...] = PAUSES_S,
         sleep: Callable[[float], None] = time.sleep) -> int:
    """POST `document` as JSON to `url`; the number of tries it took. DeliveryError when every try failed."""
    body = json.dumps(document, allow_nan=False).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": f"autoresearch/{autoresearch.__version__}"})
    tries = len(pauses_s) + 1
    for attempt in range(1, tries + 1):
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as answer:
                answer.read(65536)  # the answer is not used; reading it lets the server finish cleanly
            return attempt
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code} {e.reason}".strip()
            if e.code < 500 and e.code != RETRIED_STATUS:
                raise DeliveryError(f"{where(url)} refused the notification ({last})") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            reason = e.reason if isinstance(e, urllib.error.URLError) else e
            last = " ".join(str(reason).split()) or type(reason).__name__
        if attempt < tries:
            sleep(pauses_s[attempt - 1])
    raise DeliveryError(f"{where(url)} did not take the notification after {tries} tries (last: {last})")
