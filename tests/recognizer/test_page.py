"""The drawing page as the server renders it (no browser): the elements scripts and browser tests
rely on, the configuration the JavaScript reads, and the model version in the footer."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from django.contrib.staticfiles import finders

pytestmark = pytest.mark.django_db

CONTRACT = {
    "draw-canvas",
    "clear-button",
    "undo-button",
    "predict-button",
    "prediction",
    "confidence",
    "status-message",
    "retry-button",
    "model-input",
    "right-button",
    "wrong-button",
    "feedback-status",
    *(f"label-{digit}" for digit in range(10)),
}


class Elements(HTMLParser):
    """Every start tag's attributes, keyed by data-testid where there is one."""

    def __init__(self) -> None:
        super().__init__()
        self.by_testid: dict[str, dict[str, str | None]] = {}
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if attributes.get("data-testid"):
            self.by_testid[attributes["data-testid"]] = attributes


@pytest.fixture(autouse=True)
def page_settings(settings, tmp_path, untrained_weights) -> None:
    settings.MODELS_DIR = tmp_path / "models"
    settings.MODEL_WEIGHTS = untrained_weights
    # Plain static storage: the hashed-name manifest exists only after collectstatic.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


def render(client) -> tuple[str, Elements]:
    response = client.get("/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    elements = Elements()
    elements.feed(html)
    return html, elements


def test_the_page_has_every_element_of_the_test_contract(client):
    _, elements = render(client)
    assert CONTRACT <= elements.by_testid.keys()
    assert elements.by_testid["prediction"]["data-state"] == "idle"
    assert "data-digit" not in elements.by_testid["prediction"]
    for digit in range(10):
        assert elements.by_testid[f"label-{digit}"]["data-label"] == str(digit)
    assert elements.by_testid["draw-canvas"]["tabindex"] == "0"  # reachable by keyboard


def test_the_page_carries_its_configuration_and_a_csrf_token(client):
    _, elements = render(client)
    body = next(attrs for tag, attrs in elements.tags if tag == "body")
    assert body["data-api-base"] == "/api/v1/"
    assert int(body["data-timeout-ms"]) > 0
    meta = next(a for tag, a in elements.tags if tag == "meta" and a.get("name") == "csrf-token")
    assert meta["content"]  # posting a drawing as a logged-in user needs it


def test_every_script_and_stylesheet_the_page_names_exists(client):
    html, elements = render(client)
    urls = [a["src"] for tag, a in elements.tags if tag == "script" and a.get("src")]
    urls += [
        a["href"] for tag, a in elements.tags if tag == "link" and a.get("rel") == "stylesheet"
    ]
    urls += re.findall(r'"(/static/[^"]+)"', html)  # the import map's targets
    assert len(urls) >= 2
    for url in urls:
        assert url.startswith("/static/"), url
        assert finders.find(url.removeprefix("/static/")), f"{url} is not a static file"


def test_the_footer_names_the_model_that_answers(client):
    html, _ = render(client)
    assert "Model v1" in html


def test_the_page_still_renders_when_the_model_version_is_unknown(client, settings, tmp_path):
    settings.MODEL_WEIGHTS = tmp_path / "missing.pth"
    html, elements = render(client)
    assert "draw-canvas" in elements.by_testid
    assert "Model v" not in html
