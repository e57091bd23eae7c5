"""object_url: each URL pattern reversed once, the same URLs as reverse() gives every time."""

from __future__ import annotations

import uuid

import pytest
from django.test import RequestFactory
from django.urls import clear_script_prefix, resolve, reverse, set_script_prefix
from rest_framework.request import Request

from recognizer.api.serializers import object_url


@pytest.mark.parametrize(
    "name", ["submission-detail", "submission-input-png", "batch-detail", "batch-results"]
)
def test_object_url_is_reverse_for_every_id(name: str) -> None:
    request = Request(RequestFactory().get("/"))
    for _ in range(3):
        pk = uuid.uuid4()
        url = object_url(request, name, pk)
        assert url == "http://testserver" + reverse(name, args=[pk])
        assert resolve(url.removeprefix("http://testserver")).kwargs == {"pk": str(pk)}


def test_object_url_follows_the_script_prefix() -> None:
    # Behind a proxy mounting the site under a path, every URL keeps that path.
    request = Request(RequestFactory().get("/"))
    pk = uuid.uuid4()
    plain = object_url(request, "submission-detail", pk)
    set_script_prefix("/digits/")
    try:
        mounted = object_url(request, "submission-detail", pk)
    finally:
        clear_script_prefix()
    assert mounted == plain.replace("testserver/", "testserver/digits/")
    assert object_url(request, "submission-detail", pk) == plain
