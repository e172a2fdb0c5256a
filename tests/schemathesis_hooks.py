"""Schemathesis hooks for the management API's run (``SCHEMATHESIS_HOOKS``).

A generated ``Idempotency-Key`` is made unique per generated request: schemathesis draws the same
few values for requests with different bodies, and the server is right to refuse a key reused for
another request within 24 hours (422, as the document says). Replays with one key are tested in
``tests/test_manage.py``. A value that is invalid as drawn stays invalid (it is left alone).
"""

import re
import uuid

import schemathesis

_VALID = re.compile(r"^[!-~]([ -~]*[!-~])?$")


def _unique(value):
    if isinstance(value, str) and _VALID.match(value) and "apk_" not in value and "apkt_" not in value:
        return value[:200] + "~" + uuid.uuid4().hex
    return value


@schemathesis.hook
def before_call(ctx, case, kwargs):
    """Every phase's requests (the coverage phase's included) pass here just before they are sent. A
    negative case is left alone: it is to be refused anyway, and an edit would make schemathesis
    revalidate it as positive (and send the Authorization it means to leave out)."""
    if case.meta is not None and case.meta.generation.mode.is_negative:
        return
    for headers in (case.headers, kwargs.get("headers")):
        if headers and "Idempotency-Key" in headers:
            headers["Idempotency-Key"] = _unique(headers["Idempotency-Key"])
