"""``GET /api/openapi.json`` is a valid OpenAPI 3.1 document, and true to the routes.

The routes are read from a started server's own `tornado.web.Application`, both ways:
every route, and every method its handler implements, is documented; every documented
path and method is served, by the handler the document says.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import Any

import msgspec
import pytest
import tornado.httputil
import tornado.routing
import tornado.web
from openapi_spec_validator import validate

from tests.support.http import Api
from vocalink_lab.protocol.android import SessionMetadata
from vocalink_lab.server import Server
from vocalink_lab.server.api import CommandRequest
from vocalink_lab.server.jobs import EnhanceRequest, MergeRequest
from vocalink_lab.server.openapi import OPENAPI_PATH, openapi_document
from vocalink_lab.server.takes import TakeUpdate

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_PARAM = re.compile(r"\{([^}]+)\}")


def app_of(server: Server) -> tornado.web.Application:
    """The application a started server serves (`Server` keeps it in its HTTPServer)."""
    assert server._http is not None, "the server is not started"
    app = server._http.request_callback
    assert isinstance(app, tornado.web.Application)
    return app


def implemented(handler: type[tornado.web.RequestHandler]) -> set[str]:
    """The methods a handler class implements: those it does not inherit unchanged."""
    base = tornado.web.RequestHandler
    return {m.lower() for m in handler.SUPPORTED_METHODS
            if getattr(handler, m.lower(), None) is not getattr(base, m.lower(), None)}


def path_rules(router: tornado.routing.RuleRouter) -> list[tornado.routing.Rule]:
    """The application's URL rules, in routing order.

    ``app.default_router`` holds the rules added for a host (``add_handlers``), then
    ``app.wildcard_router``, which holds `make_app`'s route list.
    """
    found = []
    for rule in router.rules:
        if isinstance(rule.target, tornado.routing.RuleRouter):
            found += path_rules(rule.target)
        elif isinstance(rule.matcher, tornado.routing.PathMatches):
            found.append(rule)
    return found


def route_problems(app: tornado.web.Application, document: Mapping[str, Any]) -> list[str]:
    """Every way the document and the application's routes disagree, one line each."""
    rules = path_rules(app.default_router)
    assert len(rules) >= len(app.wildcard_router.rules)
    problems: list[str] = []
    documented: dict[int, set[str]] = {}  # rule index -> methods the document gives it
    for path, item in document["paths"].items():
        methods = {m for m in item if m in HTTP_METHODS}
        names = _PARAM.findall(path)
        examples = _path_examples(item)
        missing = [n for n in names if n not in examples]
        if missing:
            problems.append(f"{path}: no example for path parameter(s) {missing}")
            continue
        concrete = path.format_map(examples)
        # Tornado takes the first rule that matches, as here.
        index = next((i for i, r in enumerate(rules) if r.matcher.match(_request(concrete))
                      is not None), None)
        if index is None:
            problems.append(f"{path}: documented, but no route serves {concrete}")
            continue
        matcher = rules[index].matcher
        assert isinstance(matcher, tornado.routing.PathMatches)
        if matcher.regex.groups != len(names):
            problems.append(f"{path}: {len(names)} path parameter(s), but the route "
                            f"{matcher.regex.pattern} captures {matcher.regex.groups}")
        handler = rules[index].target
        extra = methods - implemented(handler)
        if extra:
            problems.append(f"{path}: documents {sorted(m.upper() for m in extra)}, which "
                            f"{handler.__name__} does not implement")
        documented.setdefault(index, set()).update(methods)
    for index, rule in enumerate(rules):
        matcher = rule.matcher
        assert isinstance(matcher, tornado.routing.PathMatches)
        handler = rule.target
        if index not in documented:
            problems.append(f"route {matcher.regex.pattern} ({handler.__name__}) is not "
                            "documented")
            continue
        undocumented = implemented(handler) - documented[index]
        if undocumented:
            problems.append(f"route {matcher.regex.pattern}: {handler.__name__} implements "
                            f"{sorted(m.upper() for m in undocumented)}, not documented")
    return problems


def _path_examples(item: Mapping[str, Any]) -> dict[str, str]:
    examples = {}
    for operation in (item[m] for m in item if m in HTTP_METHODS):
        for param in operation.get("parameters", ()):
            if param["in"] == "path" and "example" in param:
                examples[param["name"]] = str(param["example"])
    return examples


def _request(path: str) -> tornado.httputil.HTTPServerRequest:
    start = tornado.httputil.RequestStartLine("GET", path, "HTTP/1.1")
    return tornado.httputil.HTTPServerRequest(
        start_line=start, headers=tornado.httputil.HTTPHeaders({"Host": "127.0.0.1"}))


def operations(document: Mapping[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in document["paths"].items()
            for method, op in item.items() if method in HTTP_METHODS]


# -- the tests ---------------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1() -> None:
    document = openapi_document()
    assert document["openapi"].startswith("3.1")
    validate(document)  # raises with the first problem
    json.dumps(document, allow_nan=False)  # JSON-ready as it is


@pytest.mark.asyncio
async def test_every_route_and_method_is_documented_and_nothing_else(server: Server) -> None:
    assert route_problems(app_of(server), openapi_document()) == []


@pytest.mark.asyncio
async def test_the_route_check_finds_each_kind_of_disagreement(server: Server) -> None:
    """The check above can fail: one mistake of each kind is reported, by name."""
    document = copy.deepcopy(openapi_document())
    del document["paths"]["/api/takes"]  # a route left out
    del document["paths"]["/api/jobs/{job_id}"]["delete"]  # a method left out
    document["paths"]["/api/clients"]["post"] = {"responses": {}}  # a method not served
    document["paths"]["/api/nothing/{x}"] = {"get": {"parameters": [  # a path not served
        {"name": "x", "in": "path", "required": True, "example": "a"}], "responses": {}}}
    problems = route_problems(app_of(server), document)
    assert len(problems) == 4, problems
    text = "\n".join(problems)
    assert "/api/takes$ (TakesHandler) is not documented" in text
    assert "JobHandler implements ['DELETE'], not documented" in text
    assert "/api/clients: documents ['POST'], which ClientsHandler does not implement" in text
    assert "/api/nothing/{x}: documented, but no route serves /api/nothing/a" in text


def test_every_error_is_the_one_shape_and_every_operation_succeeds_somehow() -> None:
    document = openapi_document()
    error = document["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"ok", "error", "errors", "status", "code"}
    assert error["additionalProperties"] is False
    ids = []
    for path, method, op in operations(document):
        ids.append(op["operationId"])
        statuses = {int(s) for s in op["responses"]}
        assert any(s < 400 for s in statuses), (path, method)
        for status, response in op["responses"].items():
            if int(status) >= 400:
                assert response["content"] == {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                }, (path, method, status)
    assert len(ids) == len(set(ids)), "operationIds must be unique"


def test_request_bodies_come_from_the_structs_the_handlers_validate_with() -> None:
    structs = (CommandRequest, TakeUpdate, EnhanceRequest, MergeRequest, SessionMetadata)
    _, derived = msgspec.json.schema_components(structs,
                                                ref_template="#/components/schemas/{name}")
    schemas = openapi_document()["components"]["schemas"]
    for name, schema in derived.items():
        assert schemas[name] == schema, name


def test_every_operation_but_ping_and_the_device_socket_asks_for_the_token() -> None:
    """The security schemes are declared and required: the document says what `Auth` does."""
    document = openapi_document()
    validate(document)
    schemes = document["components"]["securitySchemes"]
    assert schemes["controllerToken"] == {**schemes["controllerToken"], "type": "http",
                                          "scheme": "bearer"}
    assert schemes["tokenInUrl"]["in"] == "query" and schemes["tokenInUrl"]["name"] == "token"
    assert {"controllerToken": []} in document["security"]
    seen = set()
    for path, method, op in operations(document):
        seen.add(path)
        if path in ("/ping", "/ws/control", "/recorder", "/recorder/static/{file}",
                    "/recorder/ca", "/recorder/ca.crt", "/sessions", "/recordings/{rid}"):
            assert op["security"] == [], (path, method)
            assert "401" not in op["responses"], (path, method)
            continue
        assert {"401", "403"} <= set(op["responses"]), (path, method)
        if path.startswith("/api/audio/upload"):
            assert {"deviceKey": []} in op["security"], (path, method)
        else:
            assert "security" not in op, (path, method)  # the document's: the token
    assert {"/api/clients/{device_id}/approve", "/api/clients/{device_id}/reject",
            "/api/pairing"} <= seen


@pytest.mark.asyncio
async def test_served_over_http(server: Server, api: Api) -> None:
    status, body, headers, _ = await api.request("GET", OPENAPI_PATH)
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert body == openapi_document()
    status, body, _, _ = await api.request("POST", OPENAPI_PATH, body=b"{}")
    assert status == 405 and body["code"] == "method_not_allowed"
