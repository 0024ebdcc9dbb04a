"""A real SOAP server (spyne) that mih's SOAP transport is tested against.

    .tools/spyne/bin/python testkit/soap/server.py PORT

Listens on 127.0.0.1:PORT and prints `ready PORT` once it accepts connections. It exits when its
standard input closes, so a test process that dies never leaves it behind.

Endpoints:
  POST /soap11            SOAP 1.1 (WSDL at GET /soap11?wsdl), schema-validated by lxml
  POST /soap12            the same service over SOAP 1.2
  GET  /_received         every request answered so far, as JSON (see `Hub.__call__`)
  ANY  /_status/CODE      answers CODE with a non-SOAP body (Retry-After: 7 on 429 and 503)
A SOAP endpoint with `?delay_ms=N` waits N ms before answering (timeouts).

The service (namespace `urn:mih:test:moodle`, qualified elements) is a slice of what a student
information system offers Moodle:
  EnrolUser(userid, courseid, role) -> str   a negative id is a Client fault (Client.InvalidId)
  CreateUser(username, firstname, lastname, email) -> str
  SyncGrades(courseid) -> str                always a Server fault (the gradebook is down)
"""

import json
import os
import sys
import threading
import time
from io import BytesIO
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from lxml import etree
from spyne import Application, Fault, Integer, ServiceBase, Unicode, rpc
from spyne.protocol.soap import Soap11, Soap12
from spyne.server.wsgi import WsgiApplication

TNS = "urn:mih:test:moodle"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
SOAP_ENVELOPES = (
    "http://schemas.xmlsoap.org/soap/envelope/",
    "http://www.w3.org/2003/05/soap-envelope",
)
RECORD_KEY = "mih.record"


def note_call(ctx, operation, **args):
    """Puts what spyne parsed beside the raw request, so tests see values after XML decoding."""
    record = ctx.transport.req_env.get(RECORD_KEY)
    if record is not None:
        record["call"] = {"operation": operation, "args": args}


class MoodleService(ServiceBase):
    @rpc(Integer, Integer, Unicode, _returns=Unicode)
    def EnrolUser(ctx, userid, courseid, role):
        note_call(ctx, "EnrolUser", userid=userid, courseid=courseid, role=role)
        if userid is None or courseid is None or userid < 0 or courseid < 0:
            raise Fault(
                faultcode="Client.InvalidId",
                faultstring=f"no such user or course (user {userid}, course {courseid})",
            )
        return f"enrolled user {userid} in course {courseid} as {role}"

    @rpc(Unicode, Unicode, Unicode, Unicode, _returns=Unicode)
    def CreateUser(ctx, username, firstname, lastname, email):
        note_call(
            ctx,
            "CreateUser",
            username=username,
            firstname=firstname,
            lastname=lastname,
            email=email,
        )
        return f"created {username}"

    @rpc(Integer, _returns=Unicode)
    def SyncGrades(ctx, courseid):
        note_call(ctx, "SyncGrades", courseid=courseid)
        raise Fault(faultcode="Server", faultstring="the gradebook backend is unavailable")


def application(protocol_in, protocol_out):
    return WsgiApplication(
        Application(
            [MoodleService],
            tns=TNS,
            name="MoodleService",
            in_protocol=protocol_in,
            out_protocol=protocol_out,
        )
    )


def ws_security(body):
    """The UsernameToken of a WS-Security header, if the envelope carries one."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    try:
        root = etree.fromstring(body, parser)
    except etree.XMLSyntaxError:
        return None
    security = root.find(f"./{{*}}Header/{{{WSSE}}}Security")
    if security is None:
        return None
    token = security.find(f"{{{WSSE}}}UsernameToken")
    if token is None:
        return {"username": None}
    password = token.find(f"{{{WSSE}}}Password")
    nonce = token.find(f"{{{WSSE}}}Nonce")
    must_understand = next(
        (security.get(f"{{{ns}}}mustUnderstand") for ns in SOAP_ENVELOPES
         if security.get(f"{{{ns}}}mustUnderstand") is not None),
        None,
    )
    return {
        "must_understand": must_understand,
        "username": token.findtext(f"{{{WSSE}}}Username"),
        "password": None if password is None else password.text,
        "password_type": None if password is None else password.get("Type"),
        "nonce": None if nonce is None else nonce.text,
        "nonce_encoding": None if nonce is None else nonce.get("EncodingType"),
        "created": token.findtext(f"{{{WSU}}}Created"),
    }


def request_headers(environ):
    headers = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers[key[5:].replace("_", "-").lower()] = value
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            headers[key.replace("_", "-").lower()] = value
    return headers


class Hub:
    """Routes to the SOAP applications and remembers every request."""

    def __init__(self):
        self.endpoints = {
            "/soap11": application(Soap11(validator="lxml"), Soap11()),
            "/soap12": application(Soap12(validator="lxml"), Soap12()),
        }
        self.received = []
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/_received":
            with self.lock:
                payload = json.dumps(self.received).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [payload]
        if path.startswith("/_status/"):
            return self.status(path, start_response)
        endpoint = self.endpoints.get(path)
        if endpoint is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"no such endpoint\n"]

        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        query = environ.get("QUERY_STRING", "")
        record = {
            "method": environ.get("REQUEST_METHOD"),
            "path": path,
            "query": query,
            "headers": request_headers(environ),
            "envelope": body.decode("utf-8", "replace"),
            "ws_security": ws_security(body) if body else None,
            "call": None,
        }
        delay = dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("delay_ms")
        if delay:
            time.sleep(int(delay) / 1000)
            environ["QUERY_STRING"] = ""
        environ["wsgi.input"] = BytesIO(body)
        environ[RECORD_KEY] = record
        try:
            # Run spyne to the end before publishing the record, so a test that sees the
            # request also sees the call spyne made of it.
            return list(endpoint(environ, start_response))
        finally:
            with self.lock:
                self.received.append(record)

    @staticmethod
    def status(path, start_response):
        code = path.rsplit("/", 1)[-1]
        headers = [("Content-Type", "text/html")]
        if code in ("429", "503"):
            headers.append(("Retry-After", "7"))
        start_response(f"{code} Test Status", headers)
        return [f"<html><body>status {code}</body></html>".encode()]


class ThreadingServer(ThreadingMixIn, WSGIServer):
    # A delayed request must not hold up the next test request.
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass


def exit_with_parent():
    sys.stdin.read()
    os._exit(0)


def main():
    port = int(sys.argv[1])
    server = make_server(
        "127.0.0.1", port, Hub(), server_class=ThreadingServer, handler_class=QuietHandler
    )
    threading.Thread(target=exit_with_parent, daemon=True).start()
    print(f"ready {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
