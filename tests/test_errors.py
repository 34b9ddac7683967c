"""The error tree: one stable code per class, and the shape maps back to its class."""

from __future__ import annotations

import pytest

from vocalink_lab import errors
from vocalink_lab.errors import VocalinkError, error_shape, from_shape


def every_error_class() -> list[type[VocalinkError]]:
    found, todo = [], [VocalinkError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return found


def test_every_class_has_its_own_code() -> None:
    classes = every_error_class()
    codes = [cls.code for cls in classes]
    assert len(classes) > 20
    assert len(set(codes)) == len(codes), sorted(codes)


@pytest.mark.parametrize("cls", every_error_class(), ids=lambda cls: cls.__name__)
def test_the_shape_of_every_error_maps_back_to_its_class(cls: type[VocalinkError]) -> None:
    error = cls.__new__(cls)
    VocalinkError.__init__(error, "what went wrong", errors=["one", "two"])
    body = error.to_dict()
    assert body == {"ok": False, "error": "what went wrong", "errors": ["one", "two"],
                    "status": cls.status, "code": cls.code}
    back = from_shape(cls.status, body)
    assert type(back) is cls
    assert (back.message, back.errors, back.status, back.code) == (
        "what went wrong", ["one", "two"], cls.status, cls.code)


def test_an_unknown_code_falls_back_to_the_class_of_its_status() -> None:
    back = from_shape(404, error_shape(404, "gone fishing", code="a_newer_servers_code"))
    assert type(back) is errors.NotFound
    assert back.status == 404 and back.message == "gone fishing"
    assert type(from_shape(418, {"error": "teapot"})) is VocalinkError


def test_a_body_that_is_not_the_shape_still_gives_an_error_with_the_status() -> None:
    back = from_shape(502, "<html>bad gateway</html>")
    assert type(back) is VocalinkError
    assert back.status == 502 and "HTTP 502" in back.message


def test_tornados_own_errors_get_the_generic_code_of_their_status() -> None:
    assert error_shape(405, "no")["code"] == "method_not_allowed"
    assert error_shape(500, "boom")["code"] == "internal_error"
    assert type(from_shape(405, error_shape(405, "no"))) is VocalinkError
