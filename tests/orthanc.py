"""A real Orthanc with the DICOMweb plugin for the tests, and a small HTTP proxy that misbehaves on purpose.

:class:`Orthanc` starts Debian's ``Orthanc`` on a free localhost port with a temporary storage folder
(remote access off, DICOM port off; authentication only when asked for) and stops it after.
:class:`FaultyProxy` stands between a client and that Orthanc to show what a client does when a server
breaks in ways Orthanc itself never does: it cuts a retrieve off mid-transfer, drops one instance of a
multipart retrieve, or wants a bearer token.  Everything else it passes through unchanged.
"""

from __future__ import annotations

import base64
import glob
import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import socketserver
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

PLUGIN_GLOBS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so*",
                "/usr/lib/*/orthanc/libOrthancDicomWeb.so*", "/usr/local/share/orthanc/plugins/libOrthancDicomWeb.so*")


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc") if Path(p).exists()),
                                           None)


def dicomweb_plugin() -> str | None:
    for pattern in PLUGIN_GLOBS:
        hits = sorted(glob.glob(pattern))
        if hits:
            return hits[0]
    return None


def _die_with_parent() -> None:
    """In the child before exec: Linux sends it SIGTERM when the test process dies, however it dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """One Orthanc process on 127.0.0.1 with DICOMweb at ``dicomweb_url``; use as a context manager."""

    def __init__(self, workdir: Path, users: dict[str, str] | None = None):
        self.workdir = Path(workdir)
        self.users = users
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dicomweb_url = f"{self.url}/dicom-web"
        self.process: subprocess.Popen | None = None

    def _headers(self) -> dict:
        if not self.users:
            return {}
        user, password = next(iter(self.users.items()))
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    def start(self, timeout_s: float = 60) -> "Orthanc":
        binary, plugin = orthanc_binary(), dicomweb_plugin()
        if binary is None or plugin is None:
            raise RuntimeError("Orthanc or its DICOMweb plugin is not installed (make orthanc)")
        storage = self.workdir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "lungseg-test", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
            "HttpPort": self.port, "HttpServerEnabled": True, "DicomServerEnabled": False,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users or {}, "Plugins": [plugin], "HttpThreadsCount": 8,
            "StorageCompression": False, "OverwriteInstances": True, "UnknownSopClassAccepted": True,
            "HttpDescribeErrors": False, "ConcurrentJobs": 1, "StableAge": 1, "KeepAlive": True,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "Host": f"127.0.0.1:{self.port}",
                         "Ssl": False, "StudiesMetadata": "Full", "SeriesMetadata": "Full"},
        }
        conf = self.workdir / "orthanc.json"
        conf.write_text(json.dumps(config, indent=1))
        self.log = open(self.workdir / "orthanc.log", "wb")
        self.process = subprocess.Popen([binary, "--logdir=" + str(self.workdir), str(conf)], stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}; see {self.workdir / 'orthanc.log'}")
            try:
                self.get("/system")
                return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {timeout_s:.0f} s")

    def get(self, path: str):
        req = urllib.request.Request(self.url + path, headers=self._headers())
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")

    def upload(self, path: Path) -> int:
        """Send a DICOM file or a zip of DICOM files to Orthanc's REST ``/instances``; returns instances stored."""
        data = Path(path).read_bytes()
        req = urllib.request.Request(self.url + "/instances", data=data, method="POST",
                                     headers={"Content-Type": "application/zip" if str(path).endswith(".zip")
                                              else "application/dicom", **self._headers()})
        with urllib.request.urlopen(req, timeout=300) as r:
            answer = json.loads(r.read())
        return len(answer) if isinstance(answer, list) else 1

    def delete(self, path: str) -> None:
        req = urllib.request.Request(self.url + path, method="DELETE", headers=self._headers())
        urllib.request.urlopen(req, timeout=30).read()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.process = None
        if getattr(self, "log", None):
            self.log.close()

    def __enter__(self) -> "Orthanc":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _ThreadingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FaultyProxy:
    """An HTTP proxy to ``upstream`` that passes requests through, except as ``mode`` says for WADO-RS
    series retrieves (``GET …/series/UID`` with no further path):

    * ``"cut"``: sends the headers and the first ``cut_fraction`` of the body, then closes the connection;
    * ``"drop-one"``: leaves the last instance out of the multipart answer (the series looks complete
      to anyone who does not count);
    * ``"bearer"``: every request without ``Authorization: Bearer <token>`` gets 401.
    """

    def __init__(self, upstream: str, mode: str, token: str = "", cut_fraction: float = 0.4):
        self.upstream = upstream.rstrip("/")
        self.mode, self.token, self.cut_fraction = mode, token, cut_fraction
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _forward(self):
                if proxy.mode == "bearer" and self.headers.get("Authorization") != f"Bearer {proxy.token}":
                    body = b'{"error": "unauthorised"}'
                    self.send_response(401)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("WWW-Authenticate", 'Bearer realm="test"')
                    self.end_headers()
                    self.wfile.write(body)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "authorization", "connection", "accept-encoding")}
                req = urllib.request.Request(proxy.upstream + self.path, data=body, method=self.command,
                                             headers=headers)
                try:
                    with urllib.request.urlopen(req, timeout=120) as r:
                        status, out, ctype = r.status, r.read(), r.headers.get("Content-Type", "")
                except urllib.error.HTTPError as e:
                    status, out, ctype = e.code, e.read(), e.headers.get("Content-Type", "")
                path = self.path.split("?", 1)[0].rstrip("/")
                is_retrieve = self.command == "GET" and path.split("/")[-2:-1] == ["series"] and status == 200
                if is_retrieve and proxy.mode == "drop-one":
                    out = _drop_last_part(out, ctype)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                if is_retrieve and proxy.mode == "cut":
                    self.wfile.write(out[: int(len(out) * proxy.cut_fraction)])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(out)

            do_GET = do_POST = do_DELETE = _forward

        self.server = _ThreadingServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FaultyProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _drop_last_part(body: bytes, content_type: str) -> bytes:
    boundary = next((p.split("=", 1)[1].strip().strip('"') for p in content_type.split(";")
                     if p.strip().lower().startswith("boundary=")), None)
    if boundary is None:
        return body
    marker = b"--" + boundary.encode()
    parts = body.split(marker)
    # parts: preamble, part 1 … part n, closing "--\r\n"
    if len(parts) < 4:
        return body
    return marker.join(parts[:-2] + parts[-1:])


def wait_for(predicate, timeout_s: float, step_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    return None


def http_status(url: str, headers: dict | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, http.client.HTTPException):
        return 0
