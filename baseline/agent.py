"""Baseline agent: the Python HTTP agent of the classic set-up, exec'd by init.sh.

Serves GET /ready (200, the same JSON schema as chinit's ready document: agent::proto::Ready) and
GET /healthz on BASELINE_IP:BASELINE_PORT with the standard library's http.server, and POST
/v1/shutdown (202, then `busybox poweroff -f`). As PID 1 it reaps orphans and ends on SIGTERM or
SIGINT. Used only to compare against chinit
(docs/benchmarks.md).

`python3 agent.py --list-modules` serves one request on 127.0.0.1 and prints the file of every module
it loaded, one a line: what an image needs of the standard library.
"""

import time

PY_START_US = time.clock_gettime_ns(time.CLOCK_BOOTTIME) // 1000

import json
import os
import signal
import socket
import socketserver
import sys
from http.server import BaseHTTPRequestHandler


def boottime_offset_us():
    """CLOCK_BOOTTIME minus CLOCK_REALTIME, in µs: turns the shell's $EPOCHREALTIME stamps into
    boot time. The boot-time reading is bracketed by two real-time ones; of five tries the tightest
    bracket wins, so a preemption between the reads does not skew the offset."""
    best = None
    for _ in range(5):
        r1 = time.time_ns()
        b = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        r2 = time.time_ns()
        if best is None or r2 - r1 < best[0]:
            best = (r2 - r1, b - (r1 + r2) // 2)
    return best[1] // 1000


def parse_stamps(text, offset_us):
    """`start=1.000001 mounts=1.000200 ...` ($EPOCHREALTIME, seconds) -> {name: boottime µs}."""
    out = {}
    for word in text.split():
        name, _, value = word.partition("=")
        sec, _, frac = value.partition(".")
        if not sec.isdigit():
            continue
        us = int(sec) * 1_000_000 + int((frac + "000000")[:6] or 0)
        out[name] = us + offset_us
    return out


def ready_document(stamps, py_start_us, ready_us, ip, mode):
    """The ready document in chinit's schema; steps from the shell's stamps and the agent's own."""
    steps = []
    prev = stamps.get("start")
    for name in ("mounts", "cmdline", "network"):
        if prev is not None and name in stamps:
            steps.append({"name": name, "start_us": prev, "end_us": stamps[name]})
            prev = stamps[name]
    if prev is not None:
        steps.append({"name": "python", "start_us": prev, "end_us": py_start_us})
    steps.append({"name": "agent", "start_us": py_start_us, "end_us": ready_us})
    return {
        "ready": True,
        "version": "baseline",
        "mode": mode,
        "init_start_us": stamps.get("start", py_start_us),
        "ready_us": ready_us,
        "steps": steps,
        "ip": ip,
        "generation": 1,
    }


class Handler(BaseHTTPRequestHandler):
    body = b"{}"

    def reply(self, send_body):
        if self.path == "/ready":
            status, body = 200, self.body
        elif self.path == "/healthz":
            status, body = 200, b'{"ok":true}'
        else:
            status, body = 404, b'{"error":"no such path"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def do_GET(self):
        self.reply(True)

    def do_HEAD(self):
        self.reply(False)

    def do_POST(self):
        # The one control call the host's tools make when they are done: power off, as chinit does.
        if self.path != "/v1/shutdown":
            return self.reply(True)
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.wfile.flush()
        os.sync()
        os.execv("/bin/busybox", ["poweroff", "-f"])

    def log_message(self, format, *args):
        pass


class Server(socketserver.TCPServer):
    # TCPServer, not HTTPServer: HTTPServer.server_bind looks the address up (getfqdn), which waits
    # for DNS where there is none.
    allow_reuse_address = True


def reap(_sig, _frame):
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def stop(_sig, _frame):
    raise SystemExit(0)


def list_modules():
    import threading

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.handle_request, daemon=True).start()
    with socket.create_connection(server.server_address) as c:
        c.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
        c.recv(4096)
    for f in sorted(set(getattr(m, "__file__", None) or "" for m in list(sys.modules.values()))):
        if f:
            print(f)


def main():
    if sys.argv[1:] == ["--list-modules"]:
        return list_modules()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGCHLD, reap)
    reap(None, None)
    ip = os.environ.get("BASELINE_IP", "127.0.0.1/8")
    port = int(os.environ.get("BASELINE_PORT", "1024"))
    mode = os.environ.get("BASELINE_MODE", "vm")
    stamps = parse_stamps(os.environ.get("BASELINE_STAMPS", ""), boottime_offset_us())
    server = Server((ip.split("/")[0], port), Handler)
    ready_us = time.clock_gettime_ns(time.CLOCK_BOOTTIME) // 1000
    doc = ready_document(stamps, PY_START_US, ready_us, ip, mode)
    Handler.body = json.dumps(doc, separators=(",", ":")).encode()
    print("baseline: ready " + Handler.body.decode(), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
