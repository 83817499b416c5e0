"""Jaeger stand-in: OTLP/HTTP traces on 4318, Jaeger query API subset on 16686,
health on 13133. Standard library only; the protobuf wire format is decoded by hand.
Command-line arguments (the real image's --config/--set flags) are ignored."""

from __future__ import annotations

import gzip
import json
import signal
import struct
import sys
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

MAX_TRACES = 10_000


@dataclass
class Span:
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    name: str
    service: str
    start_ns: int = 0
    end_ns: int = 0
    attributes: dict[str, Any] = field(default_factory=dict)


traces: OrderedDict[int, list[Span]] = OrderedDict()
lock = threading.Lock()


# --- protobuf wire format -------------------------------------------------------------


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """Yield (field number, value): ints for varint/fixed fields, bytes otherwise."""
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        value: int | bytes
        if wire_type == 0:
            value, pos = read_varint(buf, pos)
        elif wire_type == 1:
            value = int.from_bytes(buf[pos : pos + 8], "little")
            pos += 8
        elif wire_type == 2:
            length, pos = read_varint(buf, pos)
            value = buf[pos : pos + length]
            pos += length
        elif wire_type == 5:
            value = int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        yield number, value


def any_value(buf: bytes) -> Any:
    for number, value in fields(buf):
        if number == 1 and isinstance(value, bytes):
            return value.decode()
        if number == 2:
            return bool(value)
        if number == 3 and isinstance(value, int):
            return value - (1 << 64) if value >= 1 << 63 else value
        if number == 4 and isinstance(value, int):
            return struct.unpack("<d", value.to_bytes(8, "little"))[0]
        if number == 7:
            return value
    return None


def key_value(buf: bytes) -> tuple[str, Any]:
    key, value = "", None
    for number, item in fields(buf):
        if number == 1 and isinstance(item, bytes):
            key = item.decode()
        elif number == 2 and isinstance(item, bytes):
            value = any_value(item)
    return key, value


def decode_protobuf(body: bytes) -> list[Span]:
    spans: list[Span] = []
    for number, resource_spans in fields(body):
        if number != 1 or not isinstance(resource_spans, bytes):
            continue
        service = "unknown_service"
        span_bufs: list[bytes] = []
        for rs_number, rs_value in fields(resource_spans):
            if rs_number == 1 and isinstance(rs_value, bytes):
                for r_number, attribute in fields(rs_value):
                    if r_number == 1 and isinstance(attribute, bytes):
                        key, value = key_value(attribute)
                        if key == "service.name":
                            service = str(value)
            elif rs_number == 2 and isinstance(rs_value, bytes):
                span_bufs += [s for n, s in fields(rs_value) if n == 2 and isinstance(s, bytes)]
        for buf in span_bufs:
            span = Span(b"", b"", b"", "", service)
            for s_number, value in fields(buf):
                if isinstance(value, bytes):
                    if s_number == 1:
                        span.trace_id = value
                    elif s_number == 2:
                        span.span_id = value
                    elif s_number == 4:
                        span.parent_span_id = value
                    elif s_number == 5:
                        span.name = value.decode()
                    elif s_number == 9:
                        key, attr = key_value(value)
                        span.attributes[key] = attr
                elif s_number == 7:
                    span.start_ns = value
                elif s_number == 8:
                    span.end_ns = value
            spans.append(span)
    return spans


def json_value(value: dict[str, Any]) -> Any:
    for kind in ("stringValue", "boolValue", "doubleValue", "bytesValue"):
        if kind in value:
            return value[kind]
    if "intValue" in value:
        return int(value["intValue"])
    return None


def decode_json(body: bytes) -> list[Span]:
    spans: list[Span] = []
    for resource_spans in json.loads(body).get("resourceSpans", []):
        service = "unknown_service"
        for attribute in resource_spans.get("resource", {}).get("attributes", []):
            if attribute.get("key") == "service.name":
                service = str(json_value(attribute.get("value", {})))
        for scope_spans in resource_spans.get("scopeSpans", []):
            for raw in scope_spans.get("spans", []):
                spans.append(
                    Span(
                        trace_id=bytes.fromhex(raw.get("traceId", "")),
                        span_id=bytes.fromhex(raw.get("spanId", "")),
                        parent_span_id=bytes.fromhex(raw.get("parentSpanId", "")),
                        name=raw.get("name", ""),
                        service=service,
                        start_ns=int(raw.get("startTimeUnixNano", 0)),
                        end_ns=int(raw.get("endTimeUnixNano", 0)),
                        attributes={
                            a["key"]: json_value(a.get("value", {}))
                            for a in raw.get("attributes", [])
                        },
                    )
                )
    return spans


# --- Jaeger query API -------------------------------------------------------------------


def trace_id_hex(trace_id: int) -> str:
    """Jaeger's rendering: the high 64 bits without leading zeros, then 16 hex digits."""
    high, low = trace_id >> 64, trace_id & (2**64 - 1)
    return f"{high:x}{low:016x}" if high else f"{low:016x}"


def tag(key: str, value: Any) -> dict[str, Any]:
    kind = {bool: "bool", int: "int64", float: "float64"}.get(type(value), "string")
    return {"key": key, "type": kind, "value": value if kind != "string" else str(value)}


def jaeger_trace(trace_id: int, spans: list[Span]) -> dict[str, Any]:
    processes: dict[str, str] = {}
    out = []
    for span in spans:
        process_id = processes.setdefault(span.service, f"p{len(processes) + 1}")
        references = []
        if span.parent_span_id.strip(b"\0"):
            references.append(
                {
                    "refType": "CHILD_OF",
                    "traceID": trace_id_hex(trace_id),
                    "spanID": span.parent_span_id.hex(),
                }
            )
        out.append(
            {
                "traceID": trace_id_hex(trace_id),
                "spanID": span.span_id.hex(),
                "operationName": span.name,
                "references": references,
                "startTime": span.start_ns // 1000,
                "duration": max(0, span.end_ns - span.start_ns) // 1000,
                "tags": [tag(k, v) for k, v in span.attributes.items()],
                "logs": [],
                "processID": process_id,
                "warnings": None,
                "flags": 1,
            }
        )
    return {
        "traceID": trace_id_hex(trace_id),
        "spans": out,
        "processes": {
            pid: {"serviceName": service, "tags": []} for service, pid in processes.items()
        },
        "warnings": None,
    }


def store(spans: list[Span]) -> None:
    with lock:
        for span in spans:
            key = int.from_bytes(span.trace_id, "big")
            traces.setdefault(key, []).append(span)
            traces.move_to_end(key)
        while len(traces) > MAX_TRACES:
            traces.popitem(last=False)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def reply_json(self, status: int, payload: Any) -> None:
        self.reply(status, json.dumps(payload).encode())

    def do_POST(self) -> None:
        port = self.connection.getsockname()[1]
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if port != 4318 or urlsplit(self.path).path != "/v1/traces":
            self.reply_json(404, {"error": "not found"})
            return
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        is_json = self.headers.get("Content-Type", "").startswith("application/json")
        try:
            spans = decode_json(body) if is_json else decode_protobuf(body)
        except (ValueError, IndexError, KeyError, UnicodeDecodeError) as error:
            self.reply_json(400, {"error": str(error)})
            return
        store(spans)
        if is_json:
            self.reply_json(200, {})
        else:
            # An empty ExportTraceServiceResponse.
            self.reply(200, b"", "application/x-protobuf")

    def do_GET(self) -> None:
        port = self.connection.getsockname()[1]
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        if port == 13133:
            self.reply_json(200, {"status": "Server available"})
        elif port != 16686:
            self.reply_json(404, {"error": "not found"})
        elif parts == ["api", "services"]:
            with lock:
                services = sorted({s.service for spans in traces.values() for s in spans})
            self.reply_json(200, {"data": services, "total": len(services)})
        elif len(parts) == 3 and parts[:2] == ["api", "traces"]:
            try:
                trace_id = int(parts[2], 16)
            except ValueError:
                self.reply_json(400, {"data": None, "errors": [{"code": 400}]})
                return
            with lock:
                spans = list(traces.get(trace_id, []))
            if spans:
                self.reply_json(200, {"data": [jaeger_trace(trace_id, spans)]})
            else:
                self.reply_json(
                    404, {"data": None, "errors": [{"code": 404, "msg": "trace not found"}]}
                )
        elif parts == ["api", "traces"]:
            query = parse_qs(url.query)
            service = query.get("service", [""])[0]
            limit = int(query.get("limit", ["20"])[0])
            with lock:
                found = [
                    (key, list(spans))
                    for key, spans in reversed(traces.items())
                    if not service or any(s.service == service for s in spans)
                ][:limit]
            self.reply_json(200, {"data": [jaeger_trace(k, s) for k, s in found]})
        else:
            self.reply_json(404, {"error": "not found"})


def main() -> None:
    # As PID 1, Python would otherwise ignore the SIGTERM that `docker stop` sends.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    servers = [ThreadingHTTPServer(("0.0.0.0", port), Handler) for port in (4318, 16686, 13133)]
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("jaeger stand-in: OTLP/HTTP :4318, query :16686, health :13133", flush=True)
    servers[0].serve_forever()


if __name__ == "__main__":
    main()
