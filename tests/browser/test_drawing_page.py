"""The drawing page as people use it: Chromium draws with a mouse or a finger, the live server
stores the drawing and a real Celery worker with the shipped model answers it."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import Page, expect

from recognizer.models import Submission
from tests.browser import pen
from tests.browser.conftest import ANSWER_TIMEOUT_MS, DESKTOP, PHONE, SCREENSHOTS, in_db

pytestmark = [pytest.mark.browser, pytest.mark.integration]

FINISHED = re.compile(r"^(done|failed)$")
SUBMISSION_ID = re.compile(r"/submissions/([0-9a-f-]{36})/")


def answer(page: Page) -> dict:
    """Wait until the page shows an answer or a failure, and read what it shows."""
    expect(page.get_by_test_id("prediction")).to_have_attribute(
        "data-state", FINISHED, timeout=ANSWER_TIMEOUT_MS
    )
    return page.evaluate(
        """() => {
          const byId = (id) => document.querySelector(`[data-testid="${id}"]`);
          const prediction = byId("prediction");
          return {
            state: prediction.dataset.state,
            reason: prediction.dataset.reason ?? null,
            digit: prediction.dataset.digit ?? null,
            message: byId("status-message").textContent.trim(),
            probabilities: [...document.querySelectorAll(".prob .visually-hidden")]
              .map((item) => item.textContent).join(", "),
            input: byId("model-input").getAttribute("src"),
          };
        }"""
    )


def assert_recognised(page: Page, digit: int) -> dict:
    shown = answer(page)
    if shown["state"] != "done" or shown["digit"] != str(digit):
        # The page shows the drawing, the 28x28 image the model saw and every probability: a
        # picture says more about a misread than the numbers (the database is gone afterwards).
        picture = SCREENSHOTS / "failures" / f"drew-{digit}-{uuid.uuid4().hex[:8]}.png"
        picture.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=picture)
        pytest.fail(f"drew a {digit}, the page shows {shown}; see {picture}")
    return shown


def shown_submission(page: Page) -> Submission:
    """The row behind the answer on screen (its id is in the model-input image's URL)."""
    src = page.get_by_test_id("model-input").get_attribute("src") or ""
    match = SUBMISSION_ID.search(src)
    assert match, f"no submission id in the model-input URL {src!r}"
    return in_db(lambda: Submission.objects.get(pk=match.group(1)))


def canvas_pixels(page: Page) -> str:
    return page.locator(pen.CANVAS).evaluate("(canvas) => canvas.toDataURL()")


@pytest.mark.parametrize(
    ("digit", "placement"),
    [
        (0, pen.CENTRED),
        (1, pen.CENTRED),
        (7, pen.CENTRED),
        (3, pen.MEDIUM_OFF_CENTRE),
        (4, pen.CENTRED),
        (2, pen.SMALL_BOTTOM_RIGHT),
        (7, pen.SMALL_TOP_LEFT),
    ],
    ids=[
        "0-centred",
        "1-centred",
        "7-centred",
        "3-off-centre",
        "4-two-strokes",
        "2-small-bottom-right",
        "7-small-top-left",
    ],
)
def test_a_mouse_drawn_digit_is_recognised(open_page, live_worker, digit, placement):
    page = open_page()
    pen.draw_with_mouse(page, digit, placement)

    shown = assert_recognised(page, digit)
    assert float(page.get_by_test_id("confidence").get_attribute("data-value")) > 0.5
    expect(page.get_by_test_id("model-input")).to_be_visible()
    assert shown["message"].startswith(f"Predicted {digit},")
    row = shown_submission(page)
    assert (row.source, row.prediction) == ("page", digit)
    assert len(row.strokes) == len(pen.DIGITS[digit])  # the pen strokes travel with the image


@pytest.mark.parametrize("drawing", sorted(pen.NOT_DIGITS))
def test_a_drawing_that_is_not_a_digit_is_answered_plainly(open_page, live_worker, drawing):
    page = open_page()
    pen.draw_with_mouse(page, drawing)

    shown = answer(page)
    prediction = page.get_by_test_id("prediction")
    assert shown["state"] == "done", shown
    expect(prediction).to_have_attribute("data-is-digit", "false")
    # Said plainly and visibly, with an invitation to try again; the closest digit stays, quietly.
    expect(page.get_by_test_id("status-message")).to_be_visible()
    assert "does not look like a digit" in shown["message"] and "try" in shown["message"]
    expect(page.get_by_test_id("closest")).to_have_text(f"closest: {shown['digit']}")
    expect(page.get_by_test_id("confidence")).to_be_hidden()
    row = shown_submission(page)
    assert (row.status, row.is_digit, row.prediction) == ("done", False, int(shown["digit"]))

    # A digit drawn next clears the verdict.
    page.keyboard.press("Escape")
    pen.draw_with_mouse(page, 7)
    assert_recognised(page, 7)
    expect(prediction).not_to_have_attribute("data-is-digit", "false")
    expect(page.get_by_test_id("closest")).to_be_hidden()


def test_a_finger_drawn_digit_on_a_phone_is_recognised(open_page, live_worker):
    page = open_page(viewport=PHONE, touch=True)
    page.locator(pen.CANVAS).evaluate(
        """(canvas) => {
          window.pointerTypes = [];
          canvas.addEventListener("pointerdown", (e) => window.pointerTypes.push(e.pointerType));
        }"""
    )
    pen.draw_with_finger(page, 7)

    assert page.evaluate("window.pointerTypes") == ["touch"]
    assert_recognised(page, 7)
    # The page did not scroll or zoom under the finger: the canvas is where it was drawn on.
    assert page.evaluate("[window.scrollY, visualViewport.scale]") == [0, 1]


def test_a_blank_canvas_is_not_sent(open_page, live_worker):
    page = open_page()
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)

    page.get_by_test_id("predict-button").click()
    expect(page.get_by_test_id("status-message")).to_have_text("Draw a digit first.")
    page.locator("body").press("Enter")
    page.wait_for_timeout(1000)  # room for a request that should not come

    expect(page.get_by_test_id("prediction")).to_have_attribute("data-state", "idle")
    assert posts == []
    assert in_db(Submission.objects.count) == 0


def test_clear_empties_the_canvas_and_the_answer(open_page, live_worker):
    page = open_page()
    blank = canvas_pixels(page)
    pen.draw_with_mouse(page, 7)
    assert_recognised(page, 7)

    page.get_by_test_id("clear-button").click()

    prediction = page.get_by_test_id("prediction")
    expect(prediction).to_have_attribute("data-state", "idle")
    expect(prediction).not_to_have_attribute("data-digit", re.compile("."))
    expect(page.get_by_text("Draw a digit here")).to_be_visible()
    expect(page.get_by_test_id("right-button")).to_be_hidden()
    assert canvas_pixels(page) == blank
    page.get_by_test_id("predict-button").click()
    expect(page.get_by_test_id("status-message")).to_have_text("Draw a digit first.")


def test_ctrl_z_removes_the_last_stroke(open_page, live_worker):
    page = open_page()
    blank = canvas_pixels(page)
    pen.draw_with_mouse(page, 1)
    assert_recognised(page, 1)
    one = canvas_pixels(page)

    pen.draw_with_mouse(page, 0)  # a ring around the one: no longer a one
    answer(page)
    assert canvas_pixels(page) != one

    page.keyboard.press("Control+z")
    assert canvas_pixels(page) == one
    assert_recognised(page, 1)  # the page asks again about what is left

    page.keyboard.press("Control+z")
    assert canvas_pixels(page) == blank
    expect(page.get_by_test_id("prediction")).to_have_attribute("data-state", "idle")


def test_a_wrong_answer_flagged_with_the_buttons_is_saved(open_page, live_worker):
    page = open_page()
    pen.draw_with_mouse(page, 4)
    shown = answer(page)
    assert shown["state"] == "done", shown
    flagged = (int(shown["digit"]) + 1) % 10  # whatever it said, the user says it was another

    page.get_by_test_id("wrong-button").click()
    page.get_by_test_id(f"label-{flagged}").click()

    expect(page.get_by_test_id("feedback-status")).to_contain_text(f"Saved as a {flagged}")
    expect(page.get_by_test_id(f"label-{flagged}")).to_have_attribute("aria-pressed", "true")
    row = shown_submission(page)
    assert row.correct_label == flagged
    assert row.prediction == int(shown["digit"])


def test_a_wrong_answer_flagged_with_a_digit_key_is_saved(open_page, live_worker):
    page = open_page()
    pen.draw_with_mouse(page, 3)
    shown = answer(page)
    assert shown["state"] == "done", shown
    flagged = (int(shown["digit"]) + 5) % 10

    page.keyboard.press(str(flagged))

    expect(page.get_by_test_id("feedback-status")).to_contain_text(f"Saved as a {flagged}")
    assert shown_submission(page).correct_label == flagged


def test_right_confirms_the_answer(open_page, live_worker):
    page = open_page()
    pen.draw_with_mouse(page, 1)
    assert_recognised(page, 1)

    page.get_by_test_id("right-button").click()

    expect(page.get_by_test_id("feedback-status")).to_contain_text("Thanks")
    assert shown_submission(page).correct_label == 1


def test_without_a_worker_the_page_times_out_and_retry_works_once_it_is_back(
    open_page, live_worker
):
    live_worker.stop()
    try:
        page = open_page(query="?timeout=3000")
        pen.draw_with_mouse(page, 1)

        prediction = page.get_by_test_id("prediction")
        expect(prediction).to_have_attribute("data-state", "pending")
        expect(page.get_by_test_id("status-message")).to_have_text("Recognising…")
        shown = answer(page)
        assert (shown["state"], shown["reason"]) == ("failed", "timeout"), shown
        assert "Timed out" in shown["message"]
        retry = page.get_by_test_id("retry-button")
        expect(retry).to_be_visible()

        live_worker.start()
        retry.click()
        assert_recognised(page, 1)
        expect(retry).to_be_hidden()
    finally:
        if not live_worker.running:
            live_worker.start()


def bottom_of(page: Page, testid: str) -> float:
    box = page.get_by_test_id(testid).bounding_box()
    assert box, f"{testid} is not displayed"
    return box["y"] + box["height"]


@pytest.mark.parametrize(
    ("layout", "viewport", "touch"),
    [("desktop", DESKTOP, False), ("phone", PHONE, True)],
    ids=["desktop", "phone"],
)
def test_screenshots_of_each_layout(open_page, live_worker, layout, viewport, touch):
    """Writes var/screenshots/{layout}-{idle,answer}.png (what the screen shows, unscrolled) for
    people to look at, and checks what a look could miss: nothing is wider than the screen, and
    drawing and reading the answer need no scrolling."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = open_page(viewport=viewport, touch=touch)
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
    assert bottom_of(page, "draw-canvas") <= viewport["height"]
    assert bottom_of(page, "predict-button") <= viewport["height"]
    # Viewport shots: a full-page capture resizes the viewport, which drops Chromium's phone
    # emulation (the keyboard hints reappear) and no longer shows what a phone shows.
    page.screenshot(path=SCREENSHOTS / f"{layout}-idle.png")

    draw = pen.draw_with_finger if touch else pen.draw_with_mouse
    draw(page, 7)
    assert_recognised(page, 7)
    page.wait_for_function("document.querySelector('[data-testid=model-input]').naturalWidth > 0")
    assert page.evaluate("[window.scrollX, window.scrollY]") == [0, 0]
    assert bottom_of(page, "prediction") <= viewport["height"], "the answer is below the fold"
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
    page.screenshot(path=SCREENSHOTS / f"{layout}-answer.png")
    if touch:  # the rest of the answer card, as the phone shows it once scrolled down
        page.get_by_test_id("wrong-button").click()
        page.get_by_test_id("label-9").scroll_into_view_if_needed()
        page.screenshot(path=SCREENSHOTS / f"{layout}-answer-scrolled.png")


def test_a_digit_in_two_strokes_is_answered_at_each_pen_up_and_read_whole(open_page, live_worker):
    """The first stroke of a 4 is answered at once; the second stroke supersedes that answer,
    and the whole 4 is what is shown and kept for review."""
    page = open_page()
    first_stroke, second_stroke = pen.on_page(page, 4, pen.CENTRED)
    for stroke in (first_stroke, second_stroke):
        page.mouse.move(*stroke[0])
        page.mouse.down()
        for point in stroke[1:]:
            page.mouse.move(*point)
        page.mouse.up()
        answer(page)  # an answer at each pen-up, with no pause first
    assert_recognised(page, 4)

    rows = in_db(lambda: list(Submission.objects.order_by("created_at")))
    assert len(rows) == 2
    half, whole = rows
    assert half.drawing_uuid is not None and half.drawing_uuid == whole.drawing_uuid
    assert (half.superseded, whole.superseded) == (True, False)
    assert (len(half.strokes), len(whole.strokes)) == (1, 2)
    assert shown_submission(page).pk == whole.pk

    page.get_by_test_id("clear-button").click()  # a new drawing: a new id, nothing superseded
    pen.draw_with_mouse(page, 1)
    assert_recognised(page, 1)
    newest = in_db(lambda: Submission.objects.order_by("-created_at").first())
    assert newest.drawing_uuid != whole.drawing_uuid
    assert not in_db(lambda: Submission.objects.get(pk=whole.pk).superseded)
