"""AMP's Alertmanager definition API, which moto does not implement, in front of moto.

install(server) wraps a ThreadedMotoServer's WSGI app: requests to
/workspaces/WS/alertmanager/definition are answered here, every other request goes to moto.
Each request must carry a SigV4 signature (service `aps`; key testing/testing, or a key of an
IAM user the moto stand-in created) that botocore recomputes identically from the request as
received; a bad one gets AMP's 403. Permissions are not checked here.
  POST   create  -> 202 {"status": {"statusCode": "CREATING"}}   (409 if one exists)
  PUT    put     -> 202 {"status": {"statusCode": "UPDATING"}}   (404 if none)
  GET    describe-> {"alertManagerDefinition": {...}}; a change in progress becomes ACTIVE
                    at the next describe, or CREATION_FAILED/UPDATE_FAILED with a status
                    reason when the document contains "stand_in_refuses"; it never ends when
                    the document contains "stand_in_stays_pending"
  DELETE delete  -> 202
GET /__moninit/alertmanager returns what was received (method, decoded document, verified).
"""
import base64
import datetime
import json
import re
import threading

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

KEYS = {"testing": "testing"}
LOCK = threading.Lock()
DEFINITIONS = {}  # workspace -> dict(data=base64 text, status=code, reason=str, pending=code)
RECEIVED = []
PATH = re.compile(r"/workspaces/([^/]+)/alertmanager/definition")


def verify(environ, body):
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return "MissingAuthenticationTokenException"
    try:
        fields = dict(part.strip().split("=", 1) for part in auth[len("AWS4-HMAC-SHA256 "):].split(","))
        ak, _date, region, service, _term = fields["Credential"].split("/")
        fields["SignedHeaders"], fields["Signature"]
    except (ValueError, KeyError):
        return "IncompleteSignatureException"
    if ak not in KEYS or service != "aps":
        return "UnrecognizedClientException"
    headers = {}
    for name in fields["SignedHeaders"].split(";"):
        key = "HTTP_" + name.upper().replace("-", "_")
        if name == "content-type":
            key = "CONTENT_TYPE"
        elif name == "content-length":
            key = "CONTENT_LENGTH"
        if key not in environ:
            return "InvalidSignatureException"
        headers[name] = environ[key]
    query = environ.get("QUERY_STRING", "")
    url = f"http://{environ['HTTP_HOST']}{environ.get('PATH_INFO', '')}" + (f"?{query}" if query else "")
    request = AWSRequest(method=environ["REQUEST_METHOD"], url=url, data=body, headers=headers)
    request.context["timestamp"] = environ.get("HTTP_X_AMZ_DATE", "")
    signer = SigV4Auth(Credentials(ak, KEYS[ak]), service, region)
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    return None if expected == fields["Signature"] else "InvalidSignatureException"


def now():
    return datetime.datetime.now(datetime.timezone.utc).timestamp()


def answer(start_response, status, doc, error=None):
    body = json.dumps(doc).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    if error:
        headers.append(("X-Amzn-ErrorType", error))
    start_response(status, headers)
    return [body]


def definition(environ, start_response, workspace):
    method = environ["REQUEST_METHOD"]
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    refused = verify(environ, body)
    document = None
    if body:
        try:
            document = base64.b64decode(json.loads(body)["data"]).decode()
        except Exception:  # noqa: BLE001
            document = None
    with LOCK:
        RECEIVED.append({"method": method, "document": document, "verified": refused is None})
        if refused:
            return answer(start_response, "403 Forbidden", {"message": refused}, refused)
        current = DEFINITIONS.get(workspace)
        if method == "GET":
            if current is None:
                return answer(start_response, "404 Not Found",
                              {"message": "Alert manager definition not found"}, "ResourceNotFoundException")
            if current.get("pending") and "stand_in_stays_pending" not in base64.b64decode(current["data"]).decode():
                pending, current["pending"] = current["pending"], None
                if "stand_in_refuses" in base64.b64decode(current["data"]).decode():
                    current["status"] = "CREATION_FAILED" if pending == "CREATING" else "UPDATE_FAILED"
                    current["reason"] = "stand-in: the definition contains stand_in_refuses"
                else:
                    current["status"], current["reason"] = "ACTIVE", None
            status = {"statusCode": current["status"]}
            if current.get("reason"):
                status["statusReason"] = current["reason"]
            return answer(start_response, "200 OK", {"alertManagerDefinition": {
                "data": current["data"], "status": status, "createdAt": now(), "modifiedAt": now()}})
        if method == "POST":
            if current is not None:
                return answer(start_response, "409 Conflict",
                              {"message": "definition exists", "resourceId": workspace,
                               "resourceType": "AlertManagerDefinition"}, "ConflictException")
            DEFINITIONS[workspace] = {"data": json.loads(body)["data"], "status": "CREATING", "pending": "CREATING"}
            return answer(start_response, "202 Accepted", {"status": {"statusCode": "CREATING"}})
        if method == "PUT":
            if current is None:
                return answer(start_response, "404 Not Found",
                              {"message": "Alert manager definition not found"}, "ResourceNotFoundException")
            if current.get("pending"):
                return answer(start_response, "409 Conflict",
                              {"message": "a change is in progress", "resourceId": workspace,
                               "resourceType": "AlertManagerDefinition"}, "ConflictException")
            current.update(data=json.loads(body)["data"], status="UPDATING", pending="UPDATING", reason=None)
            return answer(start_response, "202 Accepted", {"status": {"statusCode": "UPDATING"}})
        if method == "DELETE":
            if DEFINITIONS.pop(workspace, None) is None:
                return answer(start_response, "404 Not Found",
                              {"message": "Alert manager definition not found"}, "ResourceNotFoundException")
            return answer(start_response, "202 Accepted", {})
    return answer(start_response, "405 Method Not Allowed", {"message": method})


def install(server):
    inner = server._server.app

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/__moninit/alertmanager":
            with LOCK:
                return answer(start_response, "200 OK", RECEIVED)
        match = PATH.fullmatch(path)
        if match:
            return definition(environ, start_response, match.group(1))
        return inner(environ, start_response)

    server._server.app = app
