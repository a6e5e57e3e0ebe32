"""The example shop in headless Chromium: what a visitor does, on each store.

Run by the tox env ``browser`` (``python -m pytest -m browser``); the other envs leave
these tests out.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from .conftest import METRICS_TOKEN, Shop, start_shop, stop_shop

pytestmark = pytest.mark.browser

PASSWORD = "correct-horse-battery-staple"


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def session_cookie(context: Any) -> str:
    values = [cookie["value"] for cookie in context.cookies() if cookie["name"] == "sessionid"]
    assert len(values) == 1, context.cookies()
    return str(values[0])


def cost(page: Any, field: str, attribute: str = "data-count", of: str = "cost") -> int:
    """A figure of the panel, of this request or (``of="redirected-cost"``) of the form
    submission that redirected to it."""
    return int(page.locator(f"#{of}-{field}").get_attribute(attribute))


def sign_up(page: Any, shop: Shop, username: str) -> None:
    page.goto(f"{shop.url}/accounts/sign-up/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.click("main button[type=submit]")
    expect(page.locator("#user")).to_contain_text(f"Signed in as {username}")


def add_to_cart(page: Any, sku: str) -> None:
    page.click(f"#product-{sku} button")
    expect(page.locator(".messages")).to_contain_text("to the cart")


def add_in_two_tabs_at_once(context: Any, shop: Shop, skus: tuple[str, str]) -> list[Any]:
    """Two tabs of one browser submit "Add to cart" together; both requests overlap on
    the server, each reading the session before the other has saved it."""
    tabs = [context.new_page(), context.new_page()]
    for tab in tabs:
        tab.goto(shop.url)
    # Submitted from a timer, so that evaluate() returns before the navigation starts.
    submit = "sku => { setTimeout(() => document.querySelector(`#product-${sku} form`).submit()) }"
    with tabs[0].expect_navigation(), tabs[1].expect_navigation():
        for tab, sku in zip(tabs, skus, strict=True):
            tab.evaluate(submit, sku)
    for tab in tabs:  # each ends on the page its redirect leads to
        expect(tab.locator("#cart-count")).to_be_visible()
    return tabs


def cart_skus(page: Any, shop: Shop) -> set[str]:
    page.goto(f"{shop.url}/cart/")
    return set(page.locator("#cart tbody tr").evaluate_all("rows => rows.map(r => r.dataset.sku)"))


def test_sign_up_log_in_and_fill_the_cart(shop: Shop, new_context: Any, screenshot: Any) -> None:
    page = new_context().new_page()
    page.goto(shop.url)
    expect(page.locator("#cost-gate")).to_have_text("no session cookie sent")
    expect(page.locator("#cost-save")).to_have_text("created the session")

    sign_up(page, shop, f"ada-{shop.store}")
    screenshot(page, "signed-up")
    page.click("#log-out")
    expect(page.locator("#user")).to_have_text("Not signed in")
    page.goto(f"{shop.url}/accounts/log-in/")
    page.fill("input[name=username]", f"ada-{shop.store}")
    page.fill("input[name=password]", PASSWORD)
    page.click("main button[type=submit]")
    expect(page.locator("#user")).to_contain_text(f"Signed in as ada-{shop.store}")

    for sku in ("alpine-tea", "harbour-mug", "copper-kettle"):
        add_to_cart(page, sku)
    expect(page.locator("#cart-count")).to_have_text("3")
    assert cart_skus(page, shop) == {"alpine-tea", "harbour-mug", "copper-kettle"}

    page.click("#fill-cart")
    expect(page.locator("#cart tbody tr")).to_have_count(60)
    expect(page.locator("#cart-count")).to_have_text("60")
    screenshot(page, "full-cart")

    # One more item in a cart of about 100 KB of values (about 40 KB stored, compressed):
    # the save writes that line, not the session.
    page.goto(shop.url)
    add_to_cart(page, "meadow-lamp")
    for of in ("redirected-cost", "cost"):  # the POST, then the page it redirected to
        rewrite = cost(page, "bytes", "data-rewrite", of=of)
        assert rewrite > 30_000
        assert 0 < cost(page, "bytes", "data-written", of=of) < rewrite / 20
        assert cost(page, "fields-loaded", of=of) >= 60
        assert cost(page, "fields-decoded", of=of) <= 5
    expect(page.locator("#redirected-cost")).to_contain_text("POST /cart/add/")
    screenshot(page, "one-more-item")
    screenshot(page, "session-cost-panel", "#session-cost")

    # The session page reads every key, so every field is decoded.
    page.goto(f"{shop.url}/session/")
    assert cost(page, "fields-decoded") == cost(page, "fields-loaded") >= 60


def test_two_tabs_adding_different_items_at_once_keep_both(
    shop: Shop, new_context: Any, screenshot: Any
) -> None:
    context = new_context()
    tabs = add_in_two_tabs_at_once(context, shop, ("alpine-tea", "midnight-chair"))
    assert cart_skus(tabs[0], shop) == {"alpine-tea", "midnight-chair"}
    screenshot(tabs[0], "cart")


def test_two_tabs_on_djangos_db_engine_lose_an_item(
    django_db_shop: Shop, new_context: Any, screenshot: Any
) -> None:
    """The same two tabs on Django's own engine: the later save overwrites the earlier.
    This shows the two requests really overlap, so the test above can fail."""
    context = new_context()
    tabs = add_in_two_tabs_at_once(context, django_db_shop, ("alpine-tea", "midnight-chair"))
    kept = cart_skus(tabs[0], django_db_shop)
    assert len(kept) == 1 and kept <= {"alpine-tea", "midnight-chair"}
    screenshot(tabs[0], "cart")


@pytest.mark.parametrize("store", ["lmdb", "redis"])
def test_switching_from_djangos_db_engine_keeps_the_user_signed_in_with_their_cart(
    store: str, tmp_path_factory: pytest.TempPathFactory, new_context: Any, screenshot: Any
) -> None:
    """The shop ran on Django's db engine; it restarts on django-memopt with
    MEMOPT_PREVIOUS_ENGINE, and the visitor notices nothing but a new cookie."""
    directory = tmp_path_factory.mktemp(f"switch-to-{store}")
    context = new_context()
    page = context.new_page()
    before = start_shop("django-db", directory)
    try:
        sign_up(page, before, f"switcher-{store}")
        for sku in ("alpine-tea", "harbour-mug"):
            add_to_cart(page, sku)
        expect(page.locator("#cart-count")).to_have_text("2")
        old_cookie = session_cookie(context)
        assert len(old_cookie) == 32  # Django's own session key
    finally:
        stop_shop(before)
    after = start_shop(store, directory, EXAMPLE_PREVIOUS_STORE="django-db")
    try:
        # The same browser, the same cookie, against the same address's new server.
        context.clear_cookies()
        context.add_cookies([{"name": "sessionid", "value": old_cookie, "url": after.url}])
        page.goto(after.url)
        expect(page.locator("#user")).to_contain_text(f"Signed in as switcher-{store}")
        expect(page.locator("#cart-count")).to_have_text("2")
        new_cookie = session_cookie(context)
        assert new_cookie != old_cookie and len(new_cookie) == 48  # a signed ID
        assert cart_skus(page, after) == {"alpine-tea", "harbour-mug"}
        screenshot(page, "after-the-switch")
        # The old cookie now leads to the same session (a tab whose request was in flight).
        replay = new_context()
        replay.add_cookies([{"name": "sessionid", "value": old_cookie, "url": after.url}])
        replayed = replay.new_page()
        replayed.goto(after.url)
        expect(replayed.locator("#user")).to_contain_text(f"Signed in as switcher-{store}")
        assert session_cookie(replay) == new_cookie
        # A logout is final: the old cookie then signs nobody in.
        page.click("#log-out")
        expect(page.locator("#user")).to_have_text("Not signed in")
        gone = new_context()
        gone.add_cookies([{"name": "sessionid", "value": old_cookie, "url": after.url}])
        again = gone.new_page()
        again.goto(after.url)
        expect(again.locator("#user")).to_have_text("Not signed in")
    finally:
        stop_shop(after)
    assert "Traceback" not in after.log_text(), after.log_text()


def test_log_out_in_one_tab_logs_out_the_other(
    shop: Shop, new_context: Any, screenshot: Any
) -> None:
    context = new_context()
    first, second = context.new_page(), context.new_page()
    sign_up(first, shop, f"grace-{shop.store}")
    second.goto(shop.url)
    expect(second.locator("#user")).to_contain_text(f"Signed in as grace-{shop.store}")
    signed_in_cookie = session_cookie(context)

    first.click("#log-out")
    expect(first.locator("#user")).to_have_text("Not signed in")
    second.reload()
    expect(second.locator("#user")).to_have_text("Not signed in")
    screenshot(second, "other-tab")

    # The old session is gone from the store: its cookie, replayed, signs nobody in.
    replay = new_context()
    replay.add_cookies([{"name": "sessionid", "value": signed_in_cookie, "url": shop.url}])
    page = replay.new_page()
    page.goto(shop.url)
    expect(page.locator("#user")).to_have_text("Not signed in")
    assert session_cookie(replay) != signed_in_cookie


def test_forged_session_cookie_gets_a_fresh_anonymous_session(
    shop: Shop, new_context: Any, screenshot: Any
) -> None:
    owner = new_context()
    page = owner.new_page()
    sign_up(page, shop, f"mallory-target-{shop.store}")
    add_to_cart(page, "alpine-tea")
    real = session_cookie(owner)
    # The same random part and time, another tag: what a guess at a valid ID looks like.
    forged = real[:-1] + ("0" if real[-1] != "0" else "1")

    attacker = new_context()
    attacker.add_cookies([{"name": "sessionid", "value": forged, "url": shop.url}])
    page = attacker.new_page()
    page.goto(shop.url)
    expect(page.locator("#cost-gate")).to_have_text("rejected the cookie: forged session ID")
    expect(page.locator("#user")).to_have_text("Not signed in")
    expect(page.locator("#cart-count")).to_have_text("0")
    expect(page.locator("main")).to_contain_text("visited this page 1 time")
    fresh = session_cookie(attacker)
    assert fresh not in (forged, real) and len(fresh) == len(real)
    screenshot(page, "fresh-session")


QUESTIONS = (
    "Are sessions fast?",
    "Is the store healthy?",
    "Is the gate working?",
    "Is the client-side cache serving?",
    "Is GC hurting?",
    "How fresh are these figures?",
)


def test_the_stats_page_answers_questions_and_plots_what_moves(
    shop: Shop, new_context: Any, screenshot: Any
) -> None:
    context = new_context()
    context.add_cookies([{"name": "sessionid", "value": "not-a-session-id", "url": shop.url}])
    page = context.new_page()
    page.goto(shop.url)
    expect(page.locator("#cost-gate")).to_have_text("rejected the cookie: malformed session ID")

    page.goto(f"{shop.url}/stats/")
    expect(page.locator(".stats-sections h2")).to_have_text(list(QUESTIONS))
    # Labels and meanings, not JSON keys; figures in their units, counts with their share.
    loads = page.locator("#figure-engine-loads th")
    expect(loads).to_contain_text("Sessions loaded")
    expect(loads).to_contain_text("Requests that read their session.")
    expect(page.locator("#figure-engine-bytes_written td")).to_have_text(
        re.compile(r"^[\d,.]+ (B|KB|MB)$")
    )
    expect(page.locator("#figure-gc-worst_pause_ns td")).to_have_text(
        re.compile(r"^[\d,.]+ (ns|µs|ms|s)$")
    )
    # The worker that turned the cookie away flushes with its next request after a second,
    # or when it serves this page: reloaded until one of them has.
    malformed = page.locator("#figure-filter-rejected_malformed td")
    deadline = time.monotonic() + 30
    while malformed.text_content() == "0":
        assert time.monotonic() < deadline, "the rejected cookie never reached the stats"
        page.wait_for_timeout(300)
        page.reload()
    expect(malformed).to_have_text(re.compile(r"^[\d,]+ \([\d.<]+% of cookies checked\)$"))
    assert "fields_decoded" not in page.locator(".stats-sections").text_content()
    assert "Fields decoded" in page.locator("#stats-text").text_content()

    # Two reloads: the tab's history holds three samples, the plots their changes.
    page.reload()
    page.reload()
    for plot, series in (("loads", 1), ("gate", 2)):
        paths = page.locator(f"#plot-{plot} svg path")
        expect(paths).to_have_count(series)
        expect(paths.first).to_have_attribute("d", re.compile(r"^M[\d.]+,[\d.]+ L[\d.]+,"))
    expect(page.locator("#plot-gc svg")).to_be_visible()
    expect(page.locator("#plot-gate figcaption")).to_contain_text("Turned away")
    screenshot(page, "stats")
    screenshot(page, "plots", ".plots")

    # The same figures for Prometheus, under gunicorn: only for the token (or staff).
    metrics = f"{shop.url}/metrics/memopt"
    assert context.request.get(metrics).status == 401
    scraped = context.request.get(metrics, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert scraped.status == 200
    assert scraped.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "memopt_filter_rejected_malformed_total" in scraped.text()


def test_your_sessions_lists_each_device_and_logs_out_the_others(
    shop: Shop, new_context: Any, screenshot: Any
) -> None:
    username = f"linus-{shop.store}"
    laptop = new_context(user_agent="Laptop/1.0").new_page()
    sign_up(laptop, shop, username)
    phone_context = new_context(user_agent="Phone/2.0")
    phone = phone_context.new_page()
    phone.goto(f"{shop.url}/accounts/log-in/")
    phone.fill("input[name=username]", username)
    phone.fill("input[name=password]", PASSWORD)
    phone.click("main button[type=submit]")
    expect(phone.locator("#user")).to_contain_text(f"Signed in as {username}")
    phone_cookie = session_cookie(phone_context)

    laptop.click("#sessions-link")
    rows = laptop.locator(".memopt-user-sessions tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("Laptop/1.0")
    expect(rows.nth(0)).to_contain_text("(this device)")
    expect(rows.nth(1)).to_contain_text("Phone/2.0")
    expect(rows.nth(1)).to_contain_text("127.0.0.1")
    # Handles, never session keys, are in the page.
    assert phone_cookie not in laptop.content()
    screenshot(laptop, "your-sessions")

    laptop.click(".memopt-end-others")
    expect(rows).to_have_count(1)
    expect(rows.nth(0)).to_contain_text("(this device)")
    phone.reload()
    expect(phone.locator("#user")).to_have_text("Not signed in")
    expect(laptop.locator("#user")).to_contain_text(f"Signed in as {username}")

    # Ending the current session is a logout.
    laptop.click(".memopt-user-sessions tbody tr button")
    expect(laptop.locator("#user")).to_have_text("Not signed in")
