#!/usr/bin/env python3
"""A fake Kubernetes API server for Swiftlane's KubeAPI tests and benchmark.

It serves Services, EndpointSlices and Nodes the way kube-apiserver does (LIST with
limit/continue, WATCH with bookmarks, timeoutSeconds, resume from a resourceVersion, ERROR
410 after compaction, streaming lists with the k8s.io/initial-events-end bookmark, label
and field selectors, bearer tokens and client certificates) over HTTP/2 or HTTP/1.1 on TLS
(ALPN decides), or HTTP/1.1 on plain TCP. Every fault the client must survive can be
injected: error statuses with Retry-After, a connection reset in the middle of a JSON
object, a stream that drips one byte at a time, garbage and over-long lines, expired
continue tokens, compaction, watches ended early, watch streams that stall (open and
silent), and a server restart (every connection reset, the port refusing connections for
a while, the storage and its resource versions kept).

Control: one JSON command per line on stdin, one JSON reply per line on stdout (the first
line printed is {"listening": PORT}). Logs go to stderr. Only Debian's python3-h2 is
needed beyond the standard library. It listens on 127.0.0.1 (or, with --host, on an
address of a network namespace that the test made).
"""

import argparse
import asyncio
import base64
import itertools
import json
import re
import socket
import ssl
import struct
import sys
import time
import urllib.parse

import h2.config
import h2.connection
import h2.events
import h2.exceptions

RESOURCES = {
    "/api/v1/services": ("services", "Service", "v1", True),
    "/apis/discovery.k8s.io/v1/endpointslices": ("endpointslices", "EndpointSlice", "discovery.k8s.io/v1", True),
    "/api/v1/nodes": ("nodes", "Node", "v1", False),
}
BY_NAME = {v[0]: (path,) + v for path, v in RESOURCES.items()}
EVENTS_PATH = re.compile(r"/apis/events\.k8s\.io/v1/namespaces/([a-z0-9-]+)/events")

CONTINUE_EXPIRED = {
    "kind": "Status", "apiVersion": "v1",
    "metadata": {"continue": "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6LTEsInN0YXJ0Ijoic2hvcC93ZWJcdTAwMDAifQ"},
    "status": "Failure",
    "message": "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
    "reason": "Expired", "code": 410,
}

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           410: "Gone", 422: "Unprocessable Entity", 429: "Too Many Requests", 500: "Internal Server Error",
           503: "Service Unavailable", 504: "Gateway Timeout"}


def log(*parts):
    print("fake-apiserver:", *parts, file=sys.stderr, flush=True)


def status_body(code, reason, message, extra=None):
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}
    if extra:
        body.update(extra)
    return json.dumps(body).encode()


# MARK: - Selectors

def parse_label_selector(text):
    """[(kind, key, value)] for `!k`, `k`, `k=v`, `k==v`, `k!=v` terms."""
    terms = []
    for raw in filter(None, (t.strip() for t in (text or "").split(","))):
        if raw.startswith("!"):
            terms.append(("absent", raw[1:], None))
        elif "!=" in raw:
            k, v = raw.split("!=", 1)
            terms.append(("ne", k, v))
        elif "==" in raw:
            k, v = raw.split("==", 1)
            terms.append(("eq", k, v))
        elif "=" in raw:
            k, v = raw.split("=", 1)
            terms.append(("eq", k, v))
        else:
            terms.append(("present", raw, None))
    return terms


def matches(obj, label_terms, field_terms):
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for kind, key, value in label_terms:
        if kind == "absent" and key in labels:
            return False
        if kind == "present" and key not in labels:
            return False
        if kind == "eq" and labels.get(key) != value:
            return False
        if kind == "ne" and labels.get(key) == value:
            return False
    for key, value in field_terms:
        if key == "metadata.name" and (obj.get("metadata") or {}).get("name") != value:
            return False
        if key == "metadata.namespace" and (obj.get("metadata") or {}).get("namespace") != value:
            return False
    return True


def parse_field_selector(text):
    terms = []
    for raw in filter(None, (t.strip() for t in (text or "").split(","))):
        key, value = raw.split("=", 1)
        terms.append((key.rstrip("="), value))
    return terms


# MARK: - Store

class Watcher:
    def __init__(self, resource, label_terms, field_terms):
        self.resource = resource
        self.label_terms = label_terms
        self.field_terms = field_terms
        self.queue = asyncio.Queue()

    def wants(self, obj):
        return matches(obj, self.label_terms, self.field_terms)


class Store:
    def __init__(self):
        self.rv = 1000
        self.objects = {name: {} for name in BY_NAME}      # resource -> key -> (dict, bytes)
        self.history = []                                  # (rv, resource, type, old dict, new dict, bytes)
        self.compacted = 0                                 # versions before this one are gone
        self.watchers = set()
        self.watcher_added = asyncio.Event()
        self.uids = itertools.count(1)

    @staticmethod
    def key(obj, namespaced):
        meta = obj.get("metadata") or {}
        return (meta.get("namespace", "default") + "/" + meta["name"]) if namespaced else meta["name"]

    def upsert(self, resource, obj, record=True):
        _, _, kind, api_version, namespaced = BY_NAME[resource]
        obj = dict(obj)
        obj["kind"] = kind
        obj["apiVersion"] = api_version
        meta = dict(obj.get("metadata") or {})
        if namespaced and not meta.get("namespace"):
            meta["namespace"] = "default"
        key = self.key({"metadata": meta}, namespaced)
        old = self.objects[resource].get(key)
        meta.setdefault("uid", old[0]["metadata"]["uid"] if old else "uid-%d" % next(self.uids))
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        obj["metadata"] = meta
        data = json.dumps(obj, separators=(",", ":")).encode()
        self.objects[resource][key] = (obj, data)
        event_type = "MODIFIED" if old else "ADDED"
        self.publish(resource, event_type, old[0] if old else None, obj, data, record)
        return self.rv

    def delete(self, resource, key, silent=False):
        """`silent`: no event at all, as if it had been compacted away before any watcher saw it."""
        old = self.objects[resource].pop(key, None)
        if old is None:
            return None
        self.rv += 1
        if silent:
            return self.rv
        obj = dict(old[0])
        obj["metadata"] = dict(obj["metadata"], resourceVersion=str(self.rv))
        data = json.dumps(obj, separators=(",", ":")).encode()
        self.publish(resource, "DELETED", old[0], obj, data, True)
        return self.rv

    def publish(self, resource, event_type, old, new, data, record):
        if record:
            self.history.append((self.rv, resource, event_type, old, new, data))
            if len(self.history) > 200000:
                del self.history[:100000]
                self.compacted = max(self.compacted, self.history[0][0] - 1)
        for watcher in list(self.watchers):
            if watcher.resource == resource:
                line = self.translate(watcher, event_type, old, new, data)
                if line:
                    watcher.queue.put_nowait(("line", line))

    @staticmethod
    def translate(watcher, event_type, old, new, data):
        """The event a selector-filtered watcher sees (objects entering/leaving the selector)."""
        was = old is not None and watcher.wants(old)
        now = watcher.wants(new)
        if event_type == "DELETED":
            kind = "DELETED" if was else None
        elif was and now:
            kind = "MODIFIED"
        elif now:
            kind = "ADDED"
        elif was:
            kind = "DELETED"
        else:
            kind = None
        if kind is None:
            return None
        return b'{"type":"' + kind.encode() + b'","object":' + data + b"}\n"

    def matching(self, resource, label_terms, field_terms):
        items = self.objects[resource]
        return [items[k][1] for k in sorted(items) if matches(items[k][0], label_terms, field_terms)]

    def replay(self, watcher, since):
        lines = []
        for rv, resource, event_type, old, new, data in self.history:
            if rv > since and resource == watcher.resource:
                line = self.translate(watcher, event_type, old, new, data)
                if line:
                    lines.append(line)
        return lines


# MARK: - Transport-independent response writers

class ClientGone(Exception):
    pass


class H1Writer:
    def __init__(self, writer):
        self.writer = writer
        self.chunked = False
        self.aborted = False

    async def start(self, status, headers, length=None):
        lines = ["HTTP/1.1 %d %s" % (status, REASONS.get(status, "Status"))]
        for name, value in headers:
            lines.append("%s: %s" % (name, value))
        if length is None:
            self.chunked = True
            lines.append("Transfer-Encoding: chunked")
        else:
            lines.append("Content-Length: %d" % length)
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self.drain()

    async def write(self, data):
        if self.chunked:
            self.writer.write(b"%x\r\n" % len(data) + data + b"\r\n")
        else:
            self.writer.write(data)
        await self.drain()

    async def end(self):
        if self.chunked:
            self.writer.write(b"0\r\n\r\n")
        await self.drain()

    async def drain(self):
        if self.writer.is_closing():
            raise ClientGone()
        try:
            await self.writer.drain()
        except (ConnectionError, OSError):
            raise ClientGone()

    def abort(self):
        self.aborted = True
        reset_connection(self.writer)


def reset_connection(writer):
    """Drops the TCP connection with an RST (no FIN, no TLS close_notify)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


class H2Writer:
    def __init__(self, session, stream_id):
        self.session = session
        self.stream_id = stream_id
        self.aborted = False

    async def start(self, status, headers, length=None):
        fields = [(":status", str(status))] + [(n.lower(), str(v)) for n, v in headers]
        if length is not None:
            fields.append(("content-length", str(length)))
        self.session.check(self.stream_id)
        self.session.conn.send_headers(self.stream_id, fields)
        await self.session.flush()

    async def write(self, data):
        await self.session.send_data(self.stream_id, data)

    async def end(self):
        self.session.check(self.stream_id)
        self.session.conn.end_stream(self.stream_id)
        await self.session.flush()

    def abort(self):
        self.aborted = True
        reset_connection(self.session.writer)


class H2Session:
    def __init__(self, server, reader, writer, peer):
        self.server = server
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.window_open = asyncio.Event()
        self.closed_streams = set()
        self.tasks = {}
        # Streams whose request body is still arriving: stream id -> (headers, body so far).
        self.pending = {}

    def check(self, stream_id):
        if stream_id in self.closed_streams or self.writer.is_closing():
            raise ClientGone()

    async def flush(self):
        data = self.conn.data_to_send()
        if data:
            if self.writer.is_closing():
                raise ClientGone()
            self.writer.write(data)
            try:
                await self.writer.drain()
            except (ConnectionError, OSError):
                raise ClientGone()

    async def send_data(self, stream_id, data):
        while data:
            self.check(stream_id)
            window = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.window_open.clear()
                await self.window_open.wait()
                continue
            chunk, data = data[:window], data[window:]
            self.conn.send_data(stream_id, chunk)
            await self.flush()

    async def run(self):
        self.conn.initiate_connection()
        # A large receive window: the client sends nothing big, but be generous.
        await self.flush()
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                try:
                    events = self.conn.receive_data(data)
                except h2.exceptions.ProtocolError as error:
                    log("h2 protocol error", error)
                    break
                for event in events:
                    if isinstance(event, h2.events.RequestReceived):
                        headers = dict(event.headers)
                        if event.stream_ended is None:
                            # A request with a body (POST): served once the body is complete.
                            self.pending[event.stream_id] = (headers, bytearray())
                            continue
                        task = asyncio.ensure_future(self.handle(event.stream_id, headers))
                        self.tasks[event.stream_id] = task
                    elif isinstance(event, h2.events.DataReceived):
                        if event.stream_id in self.pending:
                            self.pending[event.stream_id][1].extend(event.data)
                        self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded) and event.stream_id in self.pending:
                        headers, body = self.pending.pop(event.stream_id)
                        task = asyncio.ensure_future(self.handle(event.stream_id, headers, bytes(body)))
                        self.tasks[event.stream_id] = task
                    elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
                        self.window_open.set()
                    elif isinstance(event, h2.events.StreamReset):
                        self.closed_streams.add(event.stream_id)
                        task = self.tasks.pop(event.stream_id, None)
                        if task:
                            task.cancel()
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        return
                await self.flush()
        except (ConnectionError, OSError, ClientGone):
            pass
        finally:
            for task in self.tasks.values():
                task.cancel()
            self.window_open.set()

    async def handle(self, stream_id, headers, body=b""):
        target = headers.get(":path", "/")
        request = Request(headers.get(":method", "GET"), target, headers, "HTTP/2", self.peer, body)
        writer = H2Writer(self, stream_id)
        try:
            await self.server.app(request, writer)
        except (ClientGone, asyncio.CancelledError):
            pass
        except Exception as error:  # a bug in the fake: log it, fail the stream
            log("handler error", repr(error))
            try:
                self.conn.reset_stream(stream_id)
                await self.flush()
            except Exception:
                pass
        finally:
            self.tasks.pop(stream_id, None)


class Request:
    def __init__(self, method, target, headers, http_version, peer, body=b""):
        self.method = method
        self.body = body
        parsed = urllib.parse.urlsplit(target)
        self.path = parsed.path
        self.query = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
        self.raw_query = parsed.query
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.http_version = http_version
        self.peer = peer


# MARK: - The API

class FakeAPIServer:
    def __init__(self, args):
        self.args = args
        self.store = Store()
        self.tokens = set(args.token or [])
        self.faults = []
        self.requests = []
        self.events = []
        self.snapshots = {}
        self.snapshot_ids = itertools.count(1)
        self.watchlist = args.watchlist
        self.expired_continues = 0
        self.connections = set()
        self.listener = None
        self.listen = None
        self.port = 0

    # Faults are consumed by the first requests they match.
    def take_fault(self, resource, verb, query):
        for fault in self.faults:
            if fault.get("resource") not in (None, resource):
                continue
            fault_verb = fault.get("verb", "any")
            if fault_verb == "continue":
                if verb != "list" or "continue" not in query:
                    continue
            elif fault_verb not in ("any", verb):
                continue
            fault["count"] = fault.get("count", 1) - 1
            if fault["count"] <= 0:
                self.faults.remove(fault)
            return fault
        return None

    async def app(self, request, w):
        entry = {"method": request.method, "path": request.path, "query": request.query,
                 "http": request.http_version, "authorization": request.headers.get("authorization"),
                 "peer": request.peer, "host": request.headers.get("host") or request.headers.get(":authority")}
        self.requests.append(entry)
        json_headers = [("Content-Type", "application/json")]
        watch = request.query.get("watch") in ("true", "1")
        verb = "watch" if watch else "list"
        entry["verb"] = verb

        if self.tokens or self.args.require_client_cert:
            token = (request.headers.get("authorization") or "")[len("Bearer "):]
            if not (request.peer.get("cert") or token in self.tokens):
                entry["status"] = 401
                return await self.respond(w, 401, status_body(401, "Unauthorized", "Unauthorized"))

        if request.method == "POST":
            return await self.create_event(request, w, entry)
        route = RESOURCES.get(request.path)
        if route is None:
            entry["status"] = 404
            return await self.respond(w, 404, status_body(404, "NotFound", "the server could not find the requested resource"))
        resource = route[0]
        entry["resource"] = resource
        fault = self.take_fault(resource, verb, request.query) or {}
        entry["fault"] = {k: v for k, v in fault.items() if k != "count"}

        if "status" in fault:
            code = fault["status"]
            headers = list(json_headers)
            if "retryAfter" in fault:
                headers.append(("Retry-After", str(fault["retryAfter"])))
            body = json.dumps(CONTINUE_EXPIRED).encode() if fault.get("body") == "continue-expired" else \
                status_body(code, fault.get("reason", REASONS.get(code, "Error")), fault.get("message", "injected"))
            entry["status"] = code
            return await self.respond(w, code, body, headers)

        label_terms = parse_label_selector(request.query.get("labelSelector"))
        field_terms = parse_field_selector(request.query.get("fieldSelector"))
        if watch:
            await self.serve_watch(request, w, resource, label_terms, field_terms, fault, entry)
        else:
            await self.serve_list(request, w, resource, route, label_terms, field_terms, fault, entry)

    async def create_event(self, request, w, entry):
        """POST of an events.k8s.io/v1 Event: checked like the API server would, kept for `events`."""
        match = EVENTS_PATH.fullmatch(request.path)
        if match is None:
            entry["status"] = 405
            return await self.respond(w, 405, status_body(405, "MethodNotAllowed", "only events can be created here"))
        entry["resource"] = "events"
        fault = self.take_fault("events", "create", request.query) or {}
        if "status" in fault:
            entry["status"] = fault["status"]
            return await self.respond(w, fault["status"], status_body(fault["status"], REASONS.get(fault["status"], "Error"), "injected"))
        try:
            event = json.loads(request.body)
        except ValueError:
            entry["status"] = 400
            return await self.respond(w, 400, status_body(400, "BadRequest", "body is not JSON"))
        missing = [f for f in ("eventTime", "reportingController", "reportingInstance", "action", "reason", "regarding", "type")
                   if not event.get(f)]
        namespace = event.get("metadata", {}).get("namespace")
        if missing or namespace != match.group(1) or event.get("apiVersion") != "events.k8s.io/v1" \
                or event.get("type") not in ("Normal", "Warning") or len(event.get("note", "")) > 1024:
            entry["status"] = 422
            return await self.respond(w, 422, status_body(422, "Invalid", "invalid event: missing %s" % missing))
        event["metadata"]["uid"] = "event-%d" % len(self.events)
        event["metadata"]["resourceVersion"] = str(self.store.rv + 1)
        self.events.append(event)
        entry["status"] = 201
        return await self.respond(w, 201, json.dumps(event).encode())

    async def respond(self, w, code, body, headers=(("Content-Type", "application/json"),)):
        await w.start(code, list(headers), length=len(body))
        await w.write(body)
        await w.end()

    async def serve_list(self, request, w, resource, route, label_terms, field_terms, fault, entry):
        _, kind, api_version, _ = route
        query = request.query
        rv = query.get("resourceVersion", "")
        if rv not in ("", "0") and "continue" not in query and rv.isdigit() and int(rv) < self.store.compacted:
            entry["status"] = 410
            return await self.respond(w, 410, status_body(410, "Expired", "too old resource version: %s (%d)" % (rv, self.store.compacted + 1)))
        limit = int(query.get("limit") or 0)
        if "continue" in query:
            try:
                token = json.loads(base64.urlsafe_b64decode(query["continue"].encode()))
                snapshot_rv, items = self.snapshots[token["id"]]
                offset = token["offset"]
            except Exception:
                entry["status"] = 400
                return await self.respond(w, 400, status_body(400, "BadRequest", "invalid continue token"))
        else:
            snapshot_rv, items, offset = self.store.rv, self.store.matching(resource, label_terms, field_terms), 0
        page = items[offset:offset + limit] if limit else items[offset:]
        next_offset = offset + len(page)
        metadata = {"resourceVersion": str(snapshot_rv)}
        if limit and next_offset < len(items):
            snapshot_id = token["id"] if "continue" in query else next(self.snapshot_ids)
            self.snapshots[snapshot_id] = (snapshot_rv, items)
            metadata["continue"] = base64.urlsafe_b64encode(json.dumps({"id": snapshot_id, "offset": next_offset}).encode()).decode()
            metadata["remainingItemCount"] = len(items) - next_offset
        entry["status"] = 200
        entry["items"] = len(page)
        head = json.dumps({"kind": kind + "List", "apiVersion": api_version, "metadata": metadata})[:-1].encode()
        body = head + b',"items":[' + b",".join(page) + b"]}"
        await w.start(200, [("Content-Type", "application/json")], length=len(body))
        await self.write_body(w, body, fault)
        await w.end()

    async def write_body(self, w, data, fault):
        if fault.get("drip"):
            for index in range(len(data)):
                await w.write(data[index:index + 1])
                await asyncio.sleep(0)
        else:
            # In pieces, so that a large list interleaves with other streams.
            for start in range(0, len(data), 256 * 1024):
                await w.write(data[start:start + 256 * 1024])

    async def serve_watch(self, request, w, resource, label_terms, field_terms, fault, entry):
        query = request.query
        rv = query.get("resourceVersion", "")
        timeout = float(query.get("timeoutSeconds") or 1800)
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        initial = query.get("sendInitialEvents") in ("true", "1")
        if initial and self.watchlist == "rejected":
            entry["status"] = 422
            return await self.respond(w, 422, status_body(422, "Invalid", "sendInitialEvents is forbidden: WatchList is disabled"))
        if initial and self.watchlist == "supported" and query.get("resourceVersionMatch") != "NotOlderThan":
            entry["status"] = 422
            return await self.respond(w, 422, status_body(422, "Invalid", "sendInitialEvents requires resourceVersionMatch=NotOlderThan"))
        streaming_list = initial and self.watchlist == "supported"

        watcher = Watcher(resource, label_terms, field_terms)
        lines = []
        if fault.get("inject"):
            lines.append(fault["inject"].encode() if isinstance(fault["inject"], str) else fault["inject"])
        if fault.get("overlong"):
            lines.append(b'{"type":"ADDED","object":{"metadata":{"name":"' + b"x" * fault["overlong"] + b'"}}}\n')
        if streaming_list or rv in ("", "0"):
            for data in self.store.matching(resource, label_terms, field_terms):
                lines.append(b'{"type":"ADDED","object":' + data + b"}\n")
            if streaming_list:
                lines.append(self.bookmark(resource, end_marker=True))
        elif rv.isdigit() and int(rv) < self.store.compacted:
            lines.append(self.error_event(410, fault.get("reason", "Expired"), "too old resource version: %s (%d)" % (rv, self.store.compacted + 1)))
            lines.append(None)
        else:
            lines.extend(self.store.replay(watcher, int(rv) if rv.isdigit() else 0))
        entry["status"] = 200
        await w.start(200, [("Content-Type", "application/json")])
        if fault.get("stall_seconds"):
            # A stalled stream: open, alive, and silent; events queue up meanwhile.
            self.store.watchers.add(watcher)
            await asyncio.sleep(fault["stall_seconds"])
        self.store.watchers.add(watcher)
        self.store.watcher_added.set()
        for line in lines:
            watcher.queue.put_nowait(("line", line) if line is not None else ("end", None))
        deadline = asyncio.get_running_loop().time() + timeout
        events_sent = 0
        cut_after = fault.get("cut_after_events")
        try:
            while True:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    kind, line = await asyncio.wait_for(watcher.queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
                if kind == "end":
                    break
                if kind == "abort":
                    w.abort()
                    return
                if kind == "bookmark":
                    if not bookmarks:
                        continue
                    line = self.bookmark(resource, end_marker=False)
                if cut_after is not None and events_sent >= cut_after:
                    # Half an object, then the connection dies. The pause first lets the
                    # client read the whole events: a reset discards unread data.
                    await asyncio.sleep(0.3)
                    await w.write(line[: len(line) // 2])
                    await asyncio.sleep(0.05)
                    w.abort()
                    return
                await self.write_body(w, line, fault)
                events_sent += 1
            await w.end()
        finally:
            self.store.watchers.discard(watcher)

    def bookmark(self, resource, end_marker):
        _, _, kind, api_version, _ = BY_NAME[resource]
        meta = {"resourceVersion": str(self.store.rv), "creationTimestamp": None}
        if end_marker:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        obj = {"kind": kind, "apiVersion": api_version, "metadata": meta}
        if resource == "endpointslices":
            obj.update({"addressType": "", "endpoints": None, "ports": None})
        else:
            obj.update({"spec": {}, "status": {"loadBalancer": {}} if resource == "services" else {}})
        return b'{"type":"BOOKMARK","object":' + json.dumps(obj, separators=(",", ":")).encode() + b"}\n"

    @staticmethod
    def error_event(code, reason, message):
        status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": message, "reason": reason, "code": code}
        return b'{"type":"ERROR","object":' + json.dumps(status, separators=(",", ":")).encode() + b"}\n"

    # MARK: Commands

    async def command(self, cmd):
        op = cmd["op"]
        store = self.store
        if op == "upsert":
            return {"rv": str(store.upsert(cmd["resource"], cmd["object"]))}
        if op == "delete":
            rv = store.delete(cmd["resource"], cmd["key"], cmd.get("silent", False))
            return {"rv": str(rv) if rv else None}
        if op == "fault":
            fault = {k: v for k, v in cmd.items() if k != "op"}
            self.faults.append(fault)
            return {}
        if op == "clear_faults":
            self.faults.clear()
            return {}
        if op == "compact":
            store.compacted = store.rv
            return {"compacted": str(store.compacted)}
        if op == "watch_error":
            lines = self.error_event(cmd.get("code", 410), cmd.get("reason", "Expired"), cmd.get("message", "too old resource version"))
            count = 0
            for watcher in list(store.watchers):
                if watcher.resource == cmd["resource"]:
                    watcher.queue.put_nowait(("line", lines))
                    watcher.queue.put_nowait(("end", None))
                    # Ending now: wait_watchers must count only the watches that follow.
                    store.watchers.discard(watcher)
                    count += 1
            return {"watchers": count}
        if op == "restart":
            # The API server process dies (every connection reset, the port refuses
            # connections) and comes back after `down` seconds on the same port; its
            # storage (etcd) survives, resource versions included.
            self.listener.close()
            for watcher in list(store.watchers):
                watcher.queue.put_nowait(("abort", None))
                store.watchers.discard(watcher)
            for writer in list(self.connections):
                writer.transport.abort()
            await asyncio.sleep(cmd.get("down", 1))
            self.listener = await self.listen(self.port)
            return {"port": self.port}
        if op == "end_watches":
            count = 0
            for watcher in list(store.watchers):
                if cmd.get("resource") in (None, watcher.resource):
                    watcher.queue.put_nowait(("abort" if cmd.get("abort") else "end", None))
                    store.watchers.discard(watcher)
                    count += 1
            return {"watchers": count}
        if op == "bookmark":
            for watcher in list(store.watchers):
                if watcher.resource == cmd["resource"]:
                    watcher.queue.put_nowait(("bookmark", None))
            return {"rv": str(store.rv)}
        if op == "set_tokens":
            self.tokens = set(cmd["tokens"])
            return {}
        if op == "set_watchlist":
            self.watchlist = cmd["mode"]
            return {}
        if op == "requests":
            result = list(self.requests)
            if cmd.get("clear"):
                self.requests.clear()
            return {"requests": result}
        if op == "wait_watchers":
            deadline = time.monotonic() + cmd.get("timeout", 30)
            while True:
                count = sum(1 for w in store.watchers if w.resource == cmd["resource"])
                if count >= cmd.get("count", 1):
                    return {"watchers": count}
                if time.monotonic() > deadline:
                    return {"watchers": count, "timedOut": True}
                store.watcher_added.clear()
                try:
                    await asyncio.wait_for(store.watcher_added.wait(), 0.05)
                except asyncio.TimeoutError:
                    pass
        if op == "generate":
            generate(store, cmd)
            return {"rv": str(store.rv), "services": len(store.objects["services"]),
                    "endpointslices": len(store.objects["endpointslices"])}
        if op == "churn":
            asyncio.ensure_future(churn(store, cmd))
            return {}
        if op == "rv":
            return {"rv": str(store.rv)}
        if op == "events":
            result = list(self.events)
            if cmd.get("clear"):
                self.events.clear()
            return {"events": result}
        raise ValueError("unknown op " + op)


def generate(store, cmd):
    """Services with one EndpointSlice each (bulk load: no history, no watchers)."""
    services = cmd.get("services", 0)
    endpoints = cmd.get("endpointsPerSlice", 10)
    for index in range(services):
        name = "svc-%05d" % index
        namespace = "bench-%02d" % (index % 50)
        octets = (index // 250, index % 250)
        store.upsert("services", {
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.%d.%d" % octets, "clusterIPs": ["10.96.%d.%d" % octets],
                     "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "sessionAffinity": "None",
                     "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}],
                     "selector": {"app": name}, "internalTrafficPolicy": "Cluster"},
            "status": {"loadBalancer": {}},
        }, record=False)
        store.upsert("endpointslices", {
            "metadata": {"name": name + "-abcde", "namespace": namespace, "generateName": name + "-",
                         "labels": {"kubernetes.io/service-name": name,
                                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.%d.%d.%d" % (64 + (index >> 14), (index >> 6) & 255, ((index & 63) << 2) + e % 4)],
                           "conditions": {"ready": True, "serving": True, "terminating": False},
                           "nodeName": "node-%d" % (e % 3), "zone": "zone-%d" % (e % 3),
                           "targetRef": {"kind": "Pod", "namespace": namespace, "name": "%s-pod-%d" % (name, e)}}
                          for e in range(endpoints)],
            "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
        }, record=False)


async def churn(store, cmd):
    """MODIFIED events at `rate` per second, each stamped with its send time (CLOCK_MONOTONIC ns)."""
    rate = cmd.get("rate", 1000)
    count = cmd.get("count", 1000)
    keys = sorted(store.objects["services"])
    start = time.monotonic()
    for index in range(count):
        target = start + index / rate
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        key = keys[index % len(keys)]
        obj = dict(store.objects["services"][key][0])
        meta = dict(obj["metadata"])
        meta["annotations"] = dict(meta.get("annotations") or {}, **{"bench.swiftlane/sent-ns": str(time.clock_gettime_ns(time.CLOCK_MONOTONIC))})
        obj["metadata"] = meta
        store.upsert("services", obj)
    print(json.dumps({"event": "churn-done", "count": count}), flush=True)


# MARK: - Serving

async def serve_connection(server, reader, writer):
    server.connections.add(writer)
    try:
        await serve_one_connection(server, reader, writer)
    finally:
        server.connections.discard(writer)


async def serve_one_connection(server, reader, writer):
    peer = {"address": str(writer.get_extra_info("peername"))}
    ssl_object = writer.get_extra_info("ssl_object")
    if ssl_object is not None:
        cert = ssl_object.getpeercert()
        if cert:
            subject = dict(item[0] for item in cert.get("subject", ()))
            peer["cert"] = subject.get("commonName", "?")
        if ssl_object.selected_alpn_protocol() == "h2":
            await H2Session(server, reader, writer, peer).run()
            writer.close()
            return
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            body = await reader.readexactly(length) if length else b""
            request = Request(method, target, headers, "HTTP/1.1", peer, body)
            h1 = H1Writer(writer)
            await server.app(request, h1)
            if h1.aborted:
                return
    except (asyncio.IncompleteReadError, ConnectionError, ClientGone, ssl.SSLError, OSError):
        pass
    except asyncio.CancelledError:
        raise
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def control_loop(server):
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 30)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return
        cmd = json.loads(line)
        try:
            reply = await server.command(cmd)
            reply["ok"] = True
        except Exception as error:
            reply = {"ok": False, "error": repr(error)}
        reply["id"] = cmd.get("id")
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--client-ca")
    parser.add_argument("--require-client-cert", action="store_true")
    parser.add_argument("--alpn", default="h2,http/1.1")
    parser.add_argument("--token", action="append")
    parser.add_argument("--watchlist", default="supported", choices=["supported", "rejected", "ignored"])
    parser.add_argument("--host", default="127.0.0.1", help="listen address (127.0.0.1, or one in a test namespace)")
    args = parser.parse_args()

    server = FakeAPIServer(args)
    context = None
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
        context.set_alpn_protocols(args.alpn.split(","))
        if args.client_ca:
            context.load_verify_locations(args.client_ca)
            context.verify_mode = ssl.CERT_REQUIRED if args.require_client_cert else ssl.CERT_OPTIONAL
    server.listen = lambda port: asyncio.start_server(
        lambda r, w: serve_connection(server, r, w), args.host, port, ssl=context, limit=1 << 20)
    server.listener = await server.listen(0)
    server.port = server.listener.sockets[0].getsockname()[1]
    print(json.dumps({"listening": server.port}), flush=True)
    try:
        await control_loop(server)
    finally:
        server.listener.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
