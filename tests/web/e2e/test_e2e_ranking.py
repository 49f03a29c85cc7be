"""In a real browser: ranking three replies by dragging the handle, by keys, and on a touch screen.

This module runs its own site whose trees take three assistant replies (goal size 4), grown through the
backend's API by volunteers of another frontend; the ranking itself is done on the website, and the
order the backend stores (each reply's ``rank`` once the tree is scored) must be the order on screen.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.web.e2e.conftest import (
    TREE_ENV,
    ApiVolunteers,
    NewPage,
    Site,
    backend,
    dev_sign_in,
    open_task,
    rank_item_order,
    review_and_submit,
    running_site,
)

RANKING_ENV = {
    **TREE_ENV,
    "OASST_TREE_MANAGER__GOAL_TREE_SIZE": "4",
    "OASST_TREE_MANAGER__MAX_CHILDREN_COUNT": "3",
    "OASST_PROMPT_LOTTERY_INTERVAL_SEC": "0",  # a reviewed prompt starts growing at the next request
}
FILLER = "It is readable, well documented and has a friendly community that answers questions."


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Overrides the shared site for this module: trees of a prompt and three replies."""
    with running_site(tmp_path_factory, RANKING_ENV) as started:
        yield started


def replies_on_screen(page: Any) -> list[str]:
    items = page.locator("[data-testid=rank-list] > .rank-item .message-body")
    return [text.strip() for text in items.all_inner_texts()]


def stored_ranks(site: Site, prompt_id: str) -> dict[str, int | None]:
    with backend(site) as api:
        children = api.get(f"/messages/{prompt_id}/children").raise_for_status().json()
    return {child["text"]: child["rank"] for child in children}


def center(box: dict[str, float]) -> tuple[float, float]:
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def test_drag_by_handle_and_keys_rank_and_the_backend_stores_the_screen_order(
    new_page: NewPage, site: Site
) -> None:
    replies = [
        "Python, because it reads like English.",
        "JavaScript: it runs in every browser.",
        "Scratch for kids.",
    ]
    with ApiVolunteers(site) as volunteers:
        prompt_id = volunteers.grow_to_ranking("desk", replies)
    page: Any = new_page()
    dev_sign_in(page, "ranker-desk")
    assert open_task(page, "rank_assistant_replies") == "rank"
    assert "Prompt desk" in page.locator("[data-testid=conversation]").inner_text()
    assert rank_item_order(page) == [0, 1, 2]
    shown = replies_on_screen(page)
    assert sorted(shown) == sorted(replies)

    # the mouse drags the third reply to the top by its handle
    page.locator("[data-testid=rank-list]").scroll_into_view_if_needed()
    handle = page.locator("[data-testid=drag-handle-2]").bounding_box()
    first = page.locator("[data-testid=rank-item-0]").bounding_box()
    page.mouse.move(*center(handle))
    page.mouse.down()
    page.mouse.move(first["x"] + 20, first["y"] + 4, steps=12)
    page.mouse.up()
    assert rank_item_order(page) == [2, 0, 1]
    positions = page.locator("[data-testid=rank-list] .rank-position").all_inner_texts()
    assert positions == ["1", "2", "3"]

    # the keyboard: ↑ on the last reply, then "1" sends the middle one to the top
    page.locator("[data-testid=rank-item-1]").focus()
    page.keyboard.press("ArrowUp")
    assert rank_item_order(page) == [2, 1, 0]
    page.keyboard.press("1")
    assert rank_item_order(page) == [1, 2, 0]
    assert page.locator("[data-testid=typed-order]").input_value() == "2,3,1"
    final = replies_on_screen(page)

    page.click("[data-testid=review]")
    review = page.locator("[data-testid=review-panel] li").all_inner_texts()
    assert [line.split(" — ")[0] for line in review] == ["Reply 2", "Reply 3", "Reply 1"]
    with page.expect_navigation():
        page.click("[data-testid=submit]")

    ranks = stored_ranks(site, prompt_id)
    assert [ranks[text] for text in final] == [0, 1, 2]
    with backend(site) as api:
        state = api.get(f"/messages/{prompt_id}/tree/state").raise_for_status().json()
    assert state["state"] == "ready_for_export"


def test_on_a_phone_swiping_over_the_cards_scrolls_and_only_the_handle_drags(
    new_page: NewPage, site: Site
) -> None:
    replies = [f"Option {name}. {FILLER}" for name in ("Go", "Rust", "Lua")]
    with ApiVolunteers(site) as volunteers:
        prompt_id = volunteers.grow_to_ranking("phone", replies)
    page: Any = new_page(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True)
    dev_sign_in(page, "ranker-phone")
    assert open_task(page, "rank_assistant_replies") == "rank"
    assert rank_item_order(page) == [0, 1, 2]
    cdp = page.context.new_cdp_session(page)

    def touch_move(x: float, from_y: float, to_y: float) -> None:
        """A finger put down at (x, from_y), moved to to_y in small steps, then lifted."""
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": from_y}]})
        for step in range(1, 13):
            y = from_y + (to_y - from_y) * step / 12
            cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})

    def swipe(target: Any, distance: float) -> None:
        target.scroll_into_view_if_needed()
        x, y = center(target.bounding_box())
        before = page.evaluate("window.scrollY")
        touch_move(x, y, y + distance)
        page.wait_for_function("before => window.scrollY !== before", arg=before)  # the page scrolled

    # swipes up and down over the text of each card: the page scrolls, the order stays
    for index in (0, 1, 2):
        body = page.locator(f"[data-testid=rank-item-{index}] .rank-content")
        swipe(body, -250)
        swipe(body, 200)
    assert rank_item_order(page) == [0, 1, 2]

    # a finger on the handle of the last reply drags it to the top (once a fling from the swipes has
    # stopped moving the page, so the positions measured are those the finger meets)
    settle = (
        "() => new Promise(done => { let y = scrollY, still = 0; const tick = () => {"
        " if (scrollY === y) { if (++still >= 10) return done(true); } else { y = scrollY; still = 0; }"
        " requestAnimationFrame(tick); }; requestAnimationFrame(tick); })"
    )
    page.wait_for_function(settle)
    page.evaluate("window.scrollBy(0, document.getElementById('rank-list').getBoundingClientRect().top - 20)")
    page.wait_for_function(settle)
    last = page.locator("[data-testid=drag-handle-2]")
    x, y = center(last.bounding_box())
    top = page.locator("[data-testid=rank-item-0]").bounding_box()
    assert top["y"] >= 0 and y <= 844, "the list must fit the screen for the drag"
    touch_move(x, y, top["y"] + 4)
    assert rank_item_order(page) == [2, 0, 1]
    final = replies_on_screen(page)

    review_and_submit(page)
    ranks = stored_ranks(site, prompt_id)
    assert [ranks[text] for text in final] == [0, 1, 2]
