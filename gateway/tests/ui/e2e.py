"""The dashboard end to end, in Debian's Chromium driven by Playwright for Python.

Run by gateway/tests/it/ui.rs against a `depot dev` it started; by hand:

    DEPOT_UI_URL=http://127.0.0.1:4444 DEPOT_UI_PASSWORD=... DEPOT_UI_SHOTS=docs/dashboard \
        /var/tmp/depot-py/venv/bin/python gateway/tests/ui/e2e.py

Signs in, creates a station, produces through the page and reads the message back in the browser,
creates a consumer group and watches its lag fall as this script acks through the API, redrives a
dead letter from the page, creates an API key and a user, looks at the cluster, and screenshots
every page (one at phone width too). Every wait has a deadline; nothing sleeps.

Exit status: 0 passed, 1 failed (reasons on stderr), 3 a prerequisite is missing.
"""

import json
import os
import shutil
import sys
import time
import urllib.request

MISSING = 3

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError as e:
    print(
        f"cannot import playwright ({e}): install Playwright for Python into the venv of DEPOT_PYTHON "
        "(.ci/run does: pip install playwright==1.65.2); never `playwright install`, the system Chromium is used",
        file=sys.stderr,
    )
    sys.exit(MISSING)

BASE = os.environ["DEPOT_UI_URL"].rstrip("/")
PASSWORD = os.environ["DEPOT_UI_PASSWORD"]
SHOTS = os.environ["DEPOT_UI_SHOTS"]
CHROMIUM = os.environ.get("DEPOT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not os.access(CHROMIUM, os.X_OK):
    print(
        f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install -y chromium; .ci/run does) "
        "or set DEPOT_CHROMIUM",
        file=sys.stderr,
    )
    sys.exit(MISSING)

# Deadlines for the page to show what the server did, generous for a loaded CI machine.
expect.set_options(timeout=30_000)
STATION = "orders"


def call(method, path, body=None, token=None):
    """The API directly, as a consumer would use it: urllib, JSON in and out."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        text = resp.read().decode()
        return json.loads(text) if text else None


# The failed requests this script provokes, which the browser logs as console errors: signing in
# with a wrong password, and while `PROVOKING` is set, the refusals a form must show.
PROVOKING = set()


def expected(console_text):
    return "status of 401" in console_text or any(f"status of {s}" in console_text for s in PROVOKING)


def refused(page, button, detail):
    """Submits a form through `button` that the API must refuse (400), and checks its detail shows."""
    PROVOKING.add(400)
    page.get_by_role("button", name=button).click()
    expect(page.locator("#alert")).to_contain_text(detail)
    PROVOKING.clear()


def shot(page, name):
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=os.path.join(SHOTS, f"{name}.png"))


def main():
    token = call("POST", "/v1/auth/token", {"username": "admin", "password": PASSWORD})["access_token"]
    problems = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="light")
        page = context.new_page()
        # A CSP violation, a script error or a failed module load is a failure even if the page
        # looks right.
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" and not expected(m.text) else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("dialog", lambda d: d.accept())

        # Sign in: unauthenticated, the app sends us to its sign-in page.
        page.goto(f"{BASE}/ui/")
        expect(page.get_by_role("heading", name="Sign in to Depot")).to_be_visible()
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill("wrong password")
        page.get_by_role("button", name="Sign in", exact=True).click()
        expect(page.locator("#signin-error")).not_to_be_empty()
        shot(page, "signin")
        # From the keyboard: Enter in the password field submits.
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_label("Password").press("Enter")
        expect(page.get_by_role("heading", name="Stations")).to_be_visible()
        stored = page.evaluate("() => [Object.keys(sessionStorage), Object.keys(localStorage)]")
        assert "depot.session" in stored[0] and not stored[1], f"tokens must be in sessionStorage only: {stored}"

        # A station, created from the overview.
        page.get_by_label("New station").fill(STATION)
        page.get_by_role("button", name="Create station").click()
        expect(page.locator("#stations").get_by_role("link", name=STATION, exact=True)).to_be_visible()

        # Produce through the page; hostile-looking payload text must stay text.
        page.locator("#stations").get_by_role("link", name=STATION, exact=True).click()
        expect(page.get_by_role("heading", name=f"Station {STATION}")).to_be_visible()
        payload = '{"order": 1, "note": "<img src=x onerror=alert(1)>"}'
        page.get_by_label("Payload", exact=True).fill(payload)
        page.get_by_label("Headers (one").fill("source: dashboard")
        page.get_by_role("button", name="Produce").click()
        expect(page.get_by_role("status").filter(has_text="Stored at offset 0")).to_be_visible()
        first = page.locator('#messages details[data-offset="0"]')
        expect(first).to_be_visible()
        first.locator("summary").click()
        expect(first.locator("pre.payload")).to_contain_text('"order": 1')
        expect(first.locator("pre.payload")).to_contain_text("<img src=x onerror=alert(1)>")
        expect(first).to_contain_text("source")
        assert page.locator("#messages img").count() == 0, "a payload became markup"

        # Two more, one of them binary, shown as hex.
        page.get_by_label("Payload", exact=True).fill('{"order": 2}')
        page.get_by_role("button", name="Produce").click()
        expect(page.get_by_role("status").filter(has_text="Stored at offset 1")).to_be_visible()
        page.get_by_label("Content type").select_option("application/octet-stream")
        page.get_by_label("Payload", exact=True).fill("AAECA/7/")
        page.get_by_role("button", name="Produce").click()
        expect(page.get_by_role("status").filter(has_text="Stored at offset 2")).to_be_visible()
        binary = page.locator('#messages details[data-offset="2"]')
        binary.locator("summary").click()
        expect(binary.locator("pre.payload")).to_contain_text("00 01 02 03 fe ff")
        binary.get_by_role("button", name="base64").click()
        expect(binary.locator("pre.payload")).to_have_text("AAECA/7/")
        # Browsing upward from an offset.
        page.get_by_label("From offset").fill("1")
        page.get_by_role("button", name="Go", exact=True).click()
        expect(page.locator("#messages details").first).to_have_attribute("data-offset", "1")
        expect(page.locator("#messages details")).to_have_count(2)

        # A consumer group from the station page; its lag is every message.
        page.get_by_label("New consumer group").fill("billing")
        page.get_by_role("button", name="Create group").click()
        group_link = page.get_by_role("link", name="billing", exact=True)
        expect(group_link).to_be_visible()
        shot(page, "station")

        page.goto(f"{BASE}/ui/#/")
        expect(page.locator(f'[data-lag="{STATION}/billing"]')).to_have_text("3")
        shot(page, "overview")

        page.goto(f"{BASE}/ui/#/stations/{STATION}/groups/billing")
        lag = page.locator("#group-lag")
        expect(lag).to_have_attribute("data-lag", "3")

        # A consumer acks through the API; the page's lag falls to 0.
        path = f"/v1/stations/{STATION}/consumer-groups/billing"
        got = call("POST", f"{path}/fetch", {"max_messages": 2}, token)["messages"]
        assert [m["offset"] for m in got] == [0, 1], got
        call("POST", f"{path}/ack", {"receipts": [m["receipt"] for m in got]}, token)
        expect(lag).to_have_attribute("data-lag", "1")
        got = call("POST", f"{path}/fetch", {"max_messages": 10}, token)["messages"]
        call("POST", f"{path}/ack", {"receipts": [m["receipt"] for m in got]}, token)
        expect(lag).to_have_attribute("data-lag", "0")
        expect(page.locator("svg.chart polyline")).to_have_count(1)
        # The node samples every group's lag every 10 s; a fresh page starts its chart with them.
        node_history = f"/ui/data/stations/{STATION}/groups/billing/lag"
        deadline = time.monotonic() + 60
        while not call("GET", node_history, token=token)["samples"]:
            assert time.monotonic() < deadline, "no lag sample from the node within 60 s"
            page.wait_for_timeout(250)
        sampled = len(call("GET", node_history, token=token)["samples"])
        page.reload()
        page.wait_for_function(
            "n => Number(document.querySelector('#lag-samples')?.dataset.samples) > n", arg=sampled
        )
        shot(page, "group")

        # A message that dead-letters (a consumer gives up on it), redriven from the page.
        audit = f"/v1/stations/{STATION}/consumer-groups/audit"
        call("PUT", audit, {"start": "earliest"}, token)
        got = call("POST", f"{audit}/fetch", {"max_messages": 1}, token)["messages"]
        call("POST", f"{audit}/dead-letter", {"receipts": [got[0]["receipt"]], "reason": "cannot parse"}, token)
        page.goto(f"{BASE}/ui/#/stations/{STATION}/dead-letters")
        row = page.locator("#dead-letters tr[data-id]")
        expect(row).to_have_count(1)
        expect(row).to_contain_text("audit")
        expect(row).to_contain_text("explicit")
        row.locator("summary").click()
        expect(row.locator("pre.payload")).to_contain_text('"order": 1')
        shot(page, "dead-letters")
        row.get_by_role("checkbox").check()
        page.get_by_role("button", name="Redrive selected (1)").click()
        expect(page.locator("#alert")).to_have_text("Redriven: 1.")
        expect(page.get_by_text("No dead letters.")).to_be_visible()
        left = call("GET", f"/v1/stations/{STATION}/dead-letters", token=token)["dead_letters"]
        assert left == [], left
        again = call("POST", f"{audit}/fetch", {"max_messages": 10}, token)["messages"]
        # Back to its own group: audit gets offset 0 again (with 1 and 2, which it never fetched).
        assert [m["offset"] for m in again] == [0, 1, 2], again

        # An API key: shown once, with snippets.
        page.get_by_role("link", name="API keys").click()
        page.get_by_label("Name", exact=True).fill("orders-app")
        page.get_by_label("Stations").fill("orders*")
        page.get_by_role("button", name="Create key").click()
        expect(page.locator("#new-key")).to_contain_text("dk_")
        key = page.locator("#new-key").inner_text().strip()
        for lang in ["curl", "Python", "JavaScript", "Go"]:
            page.locator("#created-key").get_by_role("button", name=lang, exact=True).click()
            expect(page.locator("#snippet")).to_contain_text(key)
        page.locator("#created-key").get_by_role("button", name="curl", exact=True).click()
        expect(page.locator("#keys")).to_contain_text("orders-app")
        shot(page, "api-keys")

        page.get_by_role("link", name="Users").click()
        page.get_by_label("Username").fill("alice")
        page.get_by_label("Password").fill("alice-password-1")
        page.get_by_role("button", name="Create user").click()
        expect(page.locator("#users")).to_contain_text("alice")
        shot(page, "users")

        page.get_by_role("link", name="Cluster").click()
        expect(page.locator("#readiness")).to_have_text("ready")
        expect(page.locator("#nodes")).to_contain_text("leader")
        shot(page, "cluster")

        # A push group from the station page, pointed at a closed local port (depot dev allows
        # private addresses): its secret is shown once, its failing attempts on its page.
        page.goto(f"{BASE}/ui/#/stations/{STATION}")
        # Every push setting is in the form; a header the server sets itself is refused by the
        # API, whose detail shows.
        page.get_by_label("New consumer group").fill("hook")
        page.get_by_label("Push URL").fill("http://127.0.0.1:9/hook")
        page.get_by_text("Push settings (with a push URL)").click()
        page.get_by_label("Extra headers").fill("webhook-id: mine")
        page.get_by_label("Timeout per attempt").fill("5000")
        page.get_by_label("Attempts in flight at most").fill("4")
        page.get_by_label("Attempts per second at most").fill("10")
        refused(page, "Create group", 'push.headers: "webhook-id" is set by the server')
        page.get_by_label("Extra headers").fill("x-team: billing")
        page.get_by_role("button", name="Create group").click()
        expect(page.locator("#alert")).to_contain_text("signing secret, shown only now: whsec_")
        pushed = call("GET", f"/v1/stations/{STATION}/consumer-groups/hook", token=token)["config"]["push"]
        want = {"url": "http://127.0.0.1:9/hook", "headers": {"x-team": "billing"}, "timeout_ms": 5000,
                "max_in_flight": 4, "rate_per_s": 10}
        assert pushed == want, pushed
        pushed_hint = call("GET", f"/v1/stations/{STATION}/consumer-groups/hook", token=token)["push"]["secret_hint"]
        page.get_by_role("link", name="Push", exact=True).click()
        expect(page.locator("#push-groups")).to_contain_text(f"{STATION} / hook")
        expect(page.locator("#push-groups")).to_contain_text("http://127.0.0.1:9/hook")
        shot(page, "push")
        page.locator("#push-groups").get_by_role("link", name=f"{STATION} / hook").click()
        expect(page.locator("#push-attempts tbody tr").first).to_be_visible()
        page.get_by_role("button", name="Send test event").click()
        expect(page.locator("#alert")).to_contain_text("Test event")
        # The group page edits the settings (the secret stays unless a new one is given).
        page.get_by_text("Push settings", exact=True).click()
        expect(page.get_by_label("Extra headers")).to_have_value("x-team: billing")
        page.get_by_label("Attempts in flight at most").fill("8")
        page.get_by_role("button", name="Save push settings").click()
        expect(page.locator("#alert")).to_contain_text("Push settings saved.")
        saved = call("GET", f"/v1/stations/{STATION}/consumer-groups/hook", token=token)
        assert saved["config"]["push"] == {**want, "max_in_flight": 8}, saved
        assert saved["push"]["secret_hint"] == pushed_hint, saved
        shot(page, "push-group")

        # A hook: the API's refusal shows its detail; created, its secret is shown once and it is
        # listed with its state; deleted, it is gone from the page and the API.
        page.get_by_role("link", name="Hooks", exact=True).click()
        expect(page.locator("#hooks")).to_contain_text("No hooks")
        page.get_by_label("Station", exact=True).fill(STATION)
        page.get_by_label("Target URL").fill("ftp://127.0.0.1/zap")
        refused(page, "Create hook", "the scheme must be http or https")
        page.get_by_label("Target URL").fill("http://127.0.0.1:9/zap")
        page.get_by_role("button", name="Create hook").click()
        expect(page.locator("#hook-secret")).to_contain_text("whsec_")
        expect(page.locator("#alert")).to_be_hidden()
        expect(page.locator("#hooks")).to_contain_text("http://127.0.0.1:9/zap")
        hooks = call("GET", "/v1/hooks", token=token)["hooks"]
        assert [(k["station"], k["target_url"]) for k in hooks] == [(STATION, "http://127.0.0.1:9/zap")], hooks
        assert page.locator("#hook-secret pre").text_content().startswith("whsec_")
        shot(page, "hooks")
        page.get_by_role("button", name=f"Delete hook {hooks[0]['id']}").click()
        expect(page.locator("#hooks")).to_contain_text("No hooks")
        assert call("GET", "/v1/hooks", token=token)["hooks"] == []

        # A source: its ingest URL is shown once.
        page.get_by_role("link", name="Sources").click()
        page.get_by_label("Source name").fill("github-orders")
        page.get_by_label("Station", exact=True).fill(STATION)
        page.get_by_label("Signature scheme").select_option("github")
        page.get_by_label("Signing secret").fill("a-github-secret")
        page.get_by_role("button", name="Save source").click()
        expect(page.locator("#ingest-url")).to_contain_text("/v1/ingest/github-orders/")
        expect(page.locator("#sources")).to_contain_text("github-orders")
        shot(page, "sources")

        page.get_by_role("link", name="Tiering").click()
        expect(page.locator("#tiering")).to_contain_text(STATION)
        shot(page, "tiering")

        # Phone width: one column, the tables as stacked cards.
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(f"{BASE}/ui/#/")
        expect(page.locator(f'[data-lag="{STATION}/billing"]')).to_have_text("0")
        shot(page, "overview-phone")

        # The scoped key (orders*) signs in too and sees its station only.
        call("PUT", "/v1/stations/payments", {}, token)
        scoped = browser.new_context(viewport={"width": 1280, "height": 800})
        kp = scoped.new_page()
        kp.on("pageerror", lambda e: problems.append(f"page error (key session): {e}"))
        kp.goto(f"{BASE}/ui/#/signin")
        kp.get_by_role("button", name="API key").click()
        kp.get_by_label("API key").fill(key)
        kp.get_by_role("button", name="Sign in", exact=True).click()
        expect(kp.locator("#stations").get_by_role("link", name=STATION, exact=True)).to_be_visible()
        expect(kp.locator("#stations")).not_to_contain_text("payments")
        page.goto(f"{BASE}/ui/#/")
        expect(page.locator("#stations").get_by_role("link", name="payments", exact=True)).to_be_visible()
        scoped.close()

        # A member: the admin pages are not offered, and one opened anyway shows the API's 403
        # detail instead of breaking.
        member = browser.new_context(viewport={"width": 1280, "height": 800})
        mp = member.new_page()
        mp.on("pageerror", lambda e: problems.append(f"page error (member session): {e}"))
        mp.goto(f"{BASE}/ui/#/signin")
        mp.get_by_label("Username").fill("alice")
        mp.get_by_label("Password").fill("alice-password-1")
        mp.get_by_label("Password").press("Enter")
        expect(mp.get_by_role("heading", name="Stations")).to_be_visible()
        expect(mp.get_by_role("link", name="Users")).to_be_hidden()
        expect(mp.get_by_role("link", name="Cluster")).to_be_hidden()
        mp.goto(f"{BASE}/ui/#/users")
        expect(mp.get_by_role("heading", name="Not allowed")).to_be_visible()
        expect(mp.locator("main .notice")).to_contain_text("administrator")
        member.close()

        # Sign out ends the session.
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("heading", name="Sign in to Depot")).to_be_visible()
        assert page.evaluate("() => sessionStorage.getItem('depot.session')") is None
        browser.close()
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"ok": True, "screenshots": sorted(os.listdir(SHOTS))}))


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"assertion failed: {e}", file=sys.stderr)
        sys.exit(1)
