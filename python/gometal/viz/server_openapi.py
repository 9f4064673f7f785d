"""The OpenAPI 3.1 document of the plotting sidecar, served at ``/openapi.json``.

Written out by hand because the routes read their bodies themselves (to bound their size
and time): FastAPI cannot see them. The request body of a plot is the payload schema that
the server validates with (``schema.json``), and every error answer is the one JSON shape
of :func:`error_schema`. ``tests/test_sidecar_openapi.py`` checks that the document lists
exactly the application's routes, and runs schemathesis against a live sidecar.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .payload import load_schema
from .server_store import ID_PATTERN

__all__ = ["OPENAPI_ROUTE", "error_schema", "openapi_document"]

OPENAPI_ROUTE = "/openapi.json"
_REF = "#/components/schemas/"

# Statuses every operation can answer: a Host that is not accepted (400).
_ANY_REQUEST = ("400",)
# Statuses of the writes, before their payload is even read.
_WRITE_GUARDS = ("400", "403", "408", "413", "415", "503")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def error_schema(error_codes: Iterable[str]) -> dict[str, Any]:
    """The JSON Schema of every error answer (go-metal's ``PlottingResponse``).

    Args:
        error_codes: the documented ``error_code`` values (framework errors such as 405
            add the status's name, so the field is not limited to these).

    Returns:
        The schema.

    Example:
        >>> error_schema(["NOT_FOUND"])["required"]
        ['success', 'message', 'error_code']
    """
    return {
        "type": "object",
        "required": ["success", "message", "error_code"],
        "properties": {
            "success": {"const": False},
            "message": {"type": "string", "minLength": 1},
            "error_code": {
                "type": "string",
                "description": "One of: " + ", ".join(sorted(error_codes)),
            },
            "results": {"type": "array", "items": _ref("BatchPlotResult")},
            "summary": _ref("BatchSummary"),
        },
    }


def _payload_schemas() -> dict[str, Any]:
    """``schema.json`` as components: its ``$defs`` become ``PlotPayload_<name>``."""
    schema = load_schema()
    definitions = schema.pop("$defs", {})
    for key in ("$schema", "$id"):
        schema.pop(key, None)

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: (
                    _REF + "PlotPayload_" + v.removeprefix("#/$defs/")
                    if k == "$ref" and isinstance(v, str)
                    else rewrite(v)
                )
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        return node

    out = {"PlotPayload": rewrite(schema)}
    out.update({f"PlotPayload_{name}": rewrite(d) for name, d in definitions.items()})
    return out


def _schemas(error_codes: Iterable[str]) -> dict[str, Any]:
    text = {"type": "string"}
    maybe_text = {"type": ["string", "null"]}
    plot_id = {"type": "string", "pattern": ID_PATTERN.pattern}
    plot_fields = {
        "success": {"type": "boolean"},
        "message": text,
        "plot_url": text,
        "view_url": text,
        "plot_id": plot_id,
        "plot_type": text,
    }
    return {
        **_payload_schemas(),
        "Error": error_schema(error_codes),
        "PlottingResponse": {
            "type": "object",
            "required": list(plot_fields),
            "properties": {**plot_fields, "batch_id": plot_id, "dashboard_url": text},
        },
        "BatchPlotResult": {
            "type": "object",
            "required": ["success", "message"],
            "properties": {**plot_fields, "error_code": text},
        },
        "BatchSummary": {
            "type": "object",
            "required": ["total_plots", "successful", "failed"],
            "properties": {
                key: {"type": "integer", "minimum": 0}
                for key in ("total_plots", "successful", "failed")
            },
        },
        "BatchPlottingResponse": {
            "type": "object",
            "required": ["success", "message", "batch_id", "results", "dashboard_url", "summary"],
            "properties": {
                "success": {"type": "boolean"},
                "message": text,
                "batch_id": plot_id,
                "results": {"type": "array", "items": _ref("BatchPlotResult")},
                "dashboard_url": text,
                "summary": _ref("BatchSummary"),
            },
        },
        "BatchRequest": {
            "type": "object",
            "required": ["plots"],
            "properties": {
                "plots": {
                    "type": "array",
                    "minItems": 1,
                    "items": _ref("PlotPayload"),
                    "description": "Each payload may hold its own plot_id.",
                },
                "batch": {"type": "boolean", "description": "Sent by go-metal; ignored."},
                "batch_id": plot_id,
                "title": text,
                "replace": {"type": "boolean"},
            },
        },
        "PlotSummary": {
            "type": "object",
            "required": ["id", "view_url", "plot_url"],
            "properties": {
                "id": plot_id,
                "plot_type": maybe_text,
                "title": {},
                "timestamp": {},
                "model_name": {},
                "batch_id": maybe_text,
                "created": maybe_text,
                "view_url": text,
                "plot_url": text,
            },
        },
        "PlotList": {
            "type": "object",
            "required": ["count", "plots"],
            "properties": {
                "count": {"type": "integer", "minimum": 0},
                "plots": {"type": "array", "items": _ref("PlotSummary")},
            },
        },
        "PlotRecord": {
            "type": "object",
            "required": ["id", "payload"],
            "properties": {
                "id": plot_id,
                "batch_id": maybe_text,
                "created": text,
                "payload": {"type": "object"},
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "service", "plots"],
            "properties": {
                "status": {"const": "ok"},
                "service": text,
                "plots": {"type": "integer", "minimum": 0},
            },
        },
    }


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _errors(statuses: Iterable[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status in sorted(set(statuses)):
        out[status] = _json("Error", "an error; error_code says which")
        if status == "503":
            out[status]["headers"] = {
                "Retry-After": {"description": "seconds", "schema": {"type": "string"}}
            }
    return out


def _id_parameter(name: str, where: str, what: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": what,
        "schema": {"type": "string", "pattern": ID_PATTERN.pattern},
    }


def _page(summary: str, id_name: str | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            "200": {"description": "an HTML page", "content": {"text/html": {"schema": {}}}},
            **_errors(_ANY_REQUEST if id_name is None else ("400", "404")),
        },
    }
    if id_name is not None:
        op["parameters"] = [_id_parameter(id_name, "path", f"the {id_name}")]
    return op


def openapi_document(error_codes: Mapping[str, str], max_body_bytes: int) -> dict[str, Any]:
    """The sidecar's OpenAPI 3.1 document.

    Args:
        error_codes: ``error_code`` -> meaning (the server's ``ERROR_CODES``).
        max_body_bytes: the body size limit, stated in the write operations.

    Returns:
        The document, ready for ``json.dumps``.

    Example:
        >>> sorted(openapi_document({}, 10)["paths"])[:2]
        ['/', '/api/batch-plot']
    """
    limit = f"Bodies over {max_body_bytes} bytes get 413; the body must be application/json."
    write_errors = (*_WRITE_GUARDS, "409", "422")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gometal plotting sidecar",
            "version": "1",
            "description": "Stores plot payloads in go-metal's wire format and shows them.",
        },
        "paths": {
            "/api/plot": {
                "post": {
                    "summary": "Store one plot",
                    "description": limit,
                    "parameters": [
                        _id_parameter("plot_id", "query", "the plot's id (drawn if absent)"),
                        _id_parameter("batch_id", "query", "the batch or run to add it to"),
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("PlotPayload")}},
                    },
                    "responses": {
                        "200": _json("PlottingResponse", "stored"),
                        **_errors(write_errors),
                    },
                }
            },
            "/api/batch-plot": {
                "post": {
                    "summary": "Store several plots, all or none",
                    "description": limit,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("BatchRequest")}},
                    },
                    "responses": {
                        "200": _json("BatchPlottingResponse", "all stored"),
                        **_errors(write_errors),
                    },
                }
            },
            "/api/plots": {
                "get": {
                    "summary": "List stored plots",
                    "parameters": [_id_parameter("batch_id", "query", "only this batch's")],
                    "responses": {"200": _json("PlotList", "the plots"), **_errors(("400",))},
                }
            },
            "/api/plots/{plot_id}": {
                "get": {
                    "summary": "One stored plot record",
                    "parameters": [_id_parameter("plot_id", "path", "the plot's id")],
                    "responses": {
                        "200": _json("PlotRecord", "the record"),
                        **_errors(("400", "404")),
                    },
                }
            },
            "/health": {
                "get": {
                    "summary": "Service status",
                    "responses": {"200": _json("Health", "running"), **_errors(_ANY_REQUEST)},
                }
            },
            "/plot/{plot_id}": {"get": _page("View page of one plot", "plot_id")},
            "/dashboard/{batch_id}": {"get": _page("Every plot of a batch", "batch_id")},
            "/": {"get": _page("Index of batches and plots")},
            "/favicon.ico": {
                "get": {
                    "summary": "No icon",
                    "responses": {"204": {"description": "empty"}, **_errors(_ANY_REQUEST)},
                }
            },
            "/static/plotly.min.js": {
                "get": {
                    "summary": "The plotly.js bundle the pages load",
                    "responses": {
                        "200": {
                            "description": "JavaScript",
                            "content": {"application/javascript": {"schema": {}}},
                        },
                        **_errors(_ANY_REQUEST),
                    },
                }
            },
            OPENAPI_ROUTE: {
                "get": {
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        **_errors(_ANY_REQUEST),
                    },
                }
            },
        },
        "components": {"schemas": _schemas(error_codes)},
    }
