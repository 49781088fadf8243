"""Schemathesis hooks for scripts/schemathesis (loaded through SCHEMATHESIS_HOOKS).

Only what the OpenAPI document cannot say is here, each with its reason.
"""

import schemathesis


# `filter_case` rather than `filter_body`/`filter_query`: only `filter_case` applies in every
# phase (coverage, fuzzing, stateful); the others act on the fuzzing strategies alone.


@schemathesis.hook
def filter_case(context, case):
    op = case.operation
    method, path = op.method.upper(), op.path
    body = case.body if isinstance(case.body, dict) else {}
    query = case.query if isinstance(case.query, dict) else {}
    if method == "PUT" and path == "/v1/stations/{station}" and not _this_cluster_can_hold(body):
        return False
    if query.get("cursor"):
        return False
    if method == "POST" and path == "/v1/api-keys" and not _expiry_in_the_future(body):
        return False
    if method == "POST" and path == "/v1/api-keys" and not _metrics_only_for_every_station(body):
        return False
    # A CaseInsensitiveDict, not a dict.
    headers = dict(case.headers.items()) if case.headers else {}
    if method == "POST" and path == "/v1/stations/{station}/messages" and not _deliver_at_within_max_delay(headers):
        return False
    if method == "PUT" and path == "/v1/stations/{station}/consumer-groups/{group}" and _outlasts_ack_wait(body):
        return False
    return True


def _outlasts_ack_wait(body):
    """A push group's `ack_wait_ms` must be longer than its `push.timeout_ms` (API.md; both
    bounds are in the document, their relation cannot be)."""
    push = body.get("push")
    if not isinstance(push, dict):
        return False
    # Absent or null: the default. The server reads a whole-number float (7467.0) as an integer.
    ack_wait = body.get("ack_wait_ms")
    ack_wait = 30000 if ack_wait is None else _whole(ack_wait)
    timeout = push.get("timeout_ms")
    timeout = 15000 if timeout is None else _whole(timeout)
    return ack_wait is not None and timeout is not None and ack_wait <= timeout


def _whole(value):
    """`value` as an integer when JSON's number is a whole one (7467 or 7467.0), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


# Push destinations and signing secrets. The document gives their shape, but whether a server
# takes a URL depends on what its host resolves to (and a URL must parse), and whether it takes a
# secret on its base64 decoding to 24-64 bytes: no schema says either. A generated value that is
# valid by the document is replaced by one the server accepts: for URLs, a loopback port that
# refuses connections, so that no generated request ever makes the server deliver anywhere but
# to 127.0.0.1. Values the document already rejects are left alone (the negative cases).
PUSH_URL = "http://127.0.0.1:9/hook"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECRET_SHAPE = r"^whsec_[A-Za-z0-9+/]{32,86}={0,2}$"
URL_MAX = 2048


def _accepted_url(value):
    return PUSH_URL if isinstance(value, str) and len(value) <= URL_MAX else value


def _accepted_secret(value):
    import re

    return SECRET if isinstance(value, str) and re.fullmatch(SECRET_SHAPE, value) else value


def _accepted_headers(value):
    """Extra push headers: names and values that HTTP can carry (the document says strings)."""
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return {"x-generated": "1"} if value else {}
    return value


@schemathesis.hook
def map_case(context, case):
    body = case.body
    if not isinstance(body, dict):
        return case
    push = body.get("push")
    if isinstance(push, dict):
        if "url" in push:
            push["url"] = _accepted_url(push["url"])
        if "secret" in push:
            push["secret"] = _accepted_secret(push["secret"])
        if "headers" in push:
            push["headers"] = _accepted_headers(push["headers"])
    path = case.operation.path
    if path == "/v1/sources/{source}" and isinstance(body.get("verify"), dict):
        _consistent_verify(body["verify"])
    if path == "/v1/hooks" and "target_url" in body:
        body["target_url"] = _accepted_url(body["target_url"])
    if path in ("/v1/hooks", "/v1/stations/{station}/consumer-groups/{group}/push/rotate-secret") and "secret" in body:
        body["secret"] = _accepted_secret(body["secret"])
    return case


def _consistent_verify(verify):
    """A source's `verify`: which fields apply depends on `scheme` (API.md), which one schema
    for every scheme cannot say: `header` is for `hmac_sha256` only and required there, and a
    `standard_webhooks` secret is `whsec_` and base64. Schema-valid values are made to agree
    with their scheme; values the document rejects are left alone."""
    scheme = verify.get("scheme")
    if scheme == "hmac_sha256" and verify.get("header") is None:
        verify["header"] = "x-signature"
    elif scheme in ("github", "stripe", "shopify", "standard_webhooks") and "header" in verify:
        del verify["header"]
    if scheme == "standard_webhooks" and isinstance(verify.get("secret"), str) and verify["secret"]:
        verify["secret"] = SECRET


def _parse_time(at):
    """An RFC 3339 time as an aware datetime, or None when it is not one."""
    import datetime

    if not isinstance(at, str):
        return None
    try:
        when = datetime.datetime.fromisoformat(at.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def _deliver_at_within_max_delay(headers):
    """`Depot-Deliver-At` may be at most `max_delay_ms` (365 days by default) from now.

    The document gives the format and says so in words, but a static schema cannot say "at most
    a year from now", so a generated far-future time is valid by schema and still (rightly)
    refused with 400. Keep only times that are not times at all (the negative cases), or within
    the bound (with a day's margin).
    """
    import datetime

    at = next((v for k, v in headers.items() if k.lower() == "depot-deliver-at"), None)
    when = _parse_time(at)
    if when is None:
        return True
    return when < datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=364)


def _this_cluster_can_hold(body):
    """`depot dev` is a one-voter cluster without a tiering bucket.

    `replicas` is 1, 3 or 5 in the document, but API.md makes a value larger than the cluster's
    voters a 400; the document is the same for every cluster size, so on a one-voter node
    replicas 3 and 5 are valid by schema and still (rightly) refused. Likewise `tiering` needs a
    server with a `[tiering]` bucket, which this one has not. Generate only bodies that this
    server can accept in those respects.
    """
    return body.get("replicas") not in (3, 5) and body.get("tiering") is None


# Page cursors are opaque tokens that only the server issues (`next_cursor`). The document gives
# `cursor` the shape of the tokens (base64url) so clients can tell one when they see it, but a
# random string of that shape is no cursor this server issued: it is meaningless, and the server
# rightly refuses it with 400 `invalid_request` (or, when it happens to decode to a key, pages from
# an arbitrary place). Nothing a generator can invent is a valid cursor, so generated requests
# carry none; an empty one still goes out (it means the first page). Listing without a cursor,
# and `limit`, stay fully exercised.


def _metrics_only_for_every_station(body):
    """A scope that grants `metrics` must cover every station (`"stations": "*"`; 400 otherwise).

    `/metrics` shows every station and group, so a key limited to some stations cannot be given
    it. The document says so in words, but a static schema cannot tie one field's value to
    another's, so such a scope is valid by schema and still (rightly) refused. Keep only bodies
    without such a scope, or whose scopes are not well-formed (the negative cases).
    """
    scopes = body.get("scopes")
    if not isinstance(scopes, list):
        return True
    for scope in scopes:
        if not isinstance(scope, dict):
            continue
        actions = scope.get("actions")
        if isinstance(actions, list) and "metrics" in actions and scope.get("stations") != "*":
            return False
    return True


def _expiry_in_the_future(body):
    """`expires_at` of a new API key must be in the future (API.md; 400 otherwise).

    The document says so in words and gives the format (date-time), but a schema is static and
    cannot say "later than now", so a generated past time is valid by schema and still (rightly)
    refused. Keep only bodies whose expiry is absent, not a time at all (the negative cases the
    schema does cover) or in the future.
    """
    import datetime

    when = _parse_time(body.get("expires_at"))
    if when is None:
        return True
    return when > datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=1)


# CPython's AST constructor keeps its recursion-depth counter in interpreter-wide state, so two
# threads inside `ast.parse` at once can corrupt it (python/cpython#106905): "SystemError: AST
# constructor recursion depth mismatch". Hypothesis parses source with `ast.parse` to describe
# lambdas, and `--workers 2` (which a caller may still pass) runs two generating threads, so the
# run crashed at random. Parsing one source at a time removes the race on every interpreter; it
# costs nothing measurable.
def _serialize_ast_parse():
    import ast
    import threading

    if getattr(ast.parse, "_depot_serialized", False):
        return
    parse = ast.parse
    lock = threading.Lock()

    def serialized_parse(*args, **kwargs):
        with lock:
            return parse(*args, **kwargs)

    serialized_parse._depot_serialized = True
    ast.parse = serialized_parse


_serialize_ast_parse()
