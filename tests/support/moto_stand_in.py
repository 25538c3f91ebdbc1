#!/usr/bin/env python3
"""A local stand-in for S3 and SSM: moto's server on 127.0.0.1, optionally seeded.

Prints one JSON line on stdout once the server is ready and seeded:
    {"endpoint": "http://127.0.0.1:PORT", "access_key": ..., "secret_key": ...}
then serves until its standard input closes (so it dies with whoever started it: no orphan
server survives a crashed test) or until --lifetime seconds pass.

Seeding: --seed DIR uploads DIR's files to s3://BUCKET/PREFIX (except params.yaml and
secrets.yaml) and writes params.yaml as SSM String parameters and secrets.yaml as
SecureString parameters under --ssm-path. --extra-params/--extra-objects add generated load.
--asg NAME creates an autoscaling group of one instance (from a launch template) and prints
its instance id as "asg_instance". --amp-workspace creates an AMP workspace and prints its id as
"amp_workspace"; AMP's Alertmanager definition API, which moto lacks, is served by
alertmanager_stand_in (SigV4 checked with botocore) on the same endpoint.
DescribeParameters honours MaxResults (up to 50) as AWS does; moto alone answers 10 at a time.
GET /__moninit/calls returns the requests served so far by API call (JSON); DELETE resets.
--auth creates an IAM user with NO permissions, prints its keys, and turns on moto's
signature and permission checks for every later request; --allow-user SPEC also creates one
allowed SPEC (comma-separated services, each meaning SERVICE:*, or actions such as
ssm:GetParameters) and prints its keys.
"""
import argparse
import json
import os
import sys
import threading
import urllib.request

import boto3
import yaml
import alertmanager_stand_in
from lifetime import wait_for_parent
from moto.server import ThreadedMotoServer


def flatten(prefix, value, out):
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(f"{prefix}/{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = str(value).lower() if isinstance(value, bool) else str(value)


def put_params(ssm, path, doc, kind):
    flat = {}
    flatten("", doc or {}, flat)
    for name, value in flat.items():
        ssm.put_parameter(Name=path.rstrip("/") + "/" + name, Value=value, Type=kind, Overwrite=True)


def honour_describe_parameters_max_results():
    """moto answers DescribeParameters 10 at a time whatever MaxResults says; AWS honours
    MaxResults up to 50. The stand-in does as AWS does, so calls counted here are AWS's."""
    from moto.core.responses import ActionResult
    from moto.ssm.responses import SimpleSystemManagerResponse

    def describe_parameters(self):
        page_size = min(max(int(self._get_param("MaxResults") or 10), 1), 50)
        token = self._get_param("NextToken")
        token = int(token.strip()) if hasattr(token, "strip") and token.strip() else 0
        result = self.ssm_backend.describe_parameters(self._get_param("Filters"), self._get_param("ParameterFilters"))
        page = result[token:token + page_size]
        response = {"Parameters": [p.describe_response_object(False) for p in page]}
        if token + page_size < len(result):
            response["NextToken"] = str(token + page_size)
        return ActionResult(response)

    SimpleSystemManagerResponse.describe_parameters = describe_parameters


COUNTS = {}
COUNTS_LOCK = threading.Lock()


def count_requests(server):
    """Counts requests by API call, and the bytes of the answers under "bytes"; GET
    /__moninit/calls returns the counts (JSON) and DELETE /__moninit/calls resets them."""
    inner = server._server.app

    def call_name(environ):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target:
            return target.split(".")[-1]
        method, path, query = environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["workspaces"]:  # AMP's control plane
            return f"{method} workspaces"
        if method == "GET" and len(parts) == 1 and "list-type=2" in query:
            return "ListObjectsV2"
        if method == "GET" and len(parts) > 1:
            return "GetObject"
        return f"{method} {'/'.join(parts[:1])}"

    def app(environ, start_response):
        if environ.get("PATH_INFO") == "/__moninit/calls":
            with COUNTS_LOCK:
                body = json.dumps(COUNTS).encode()
                if environ["REQUEST_METHOD"] == "DELETE":
                    COUNTS.clear()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        name = call_name(environ)
        body = list(inner(environ, start_response))
        with COUNTS_LOCK:
            COUNTS[name] = COUNTS.get(name, 0) + 1
            # Bytes answered (bodies), for the cost of a watch round beside a full fetch.
            COUNTS["bytes"] = COUNTS.get("bytes", 0) + sum(len(chunk) for chunk in body)
        return body

    server._server.app = app


def check_bodyless_signatures_as_aws_does():
    """moto recomputes a signature over the request's parsed parameters when its body is
    empty, so a signed GET or DELETE of a REST-JSON API (AMP's DescribeWorkspace, every
    Describe/List/Delete of rule groups namespaces) never verifies, even from botocore. AWS
    hashes the empty body; so does this."""
    from moto.iam.access_control import IAMRequest

    create = IAMRequest._create_aws_request

    def fixed(self):
        request = create(self)
        if not self._body and self._method in ("GET", "HEAD", "DELETE"):
            request.data = b""
        return request

    IAMRequest._create_aws_request = fixed


def allowed_actions(spec):
    """--allow-user's value: comma-separated services (`ssm` = `ssm:*`) or actions."""
    return [item if ":" in item else f"{item}:*" for item in spec.split(",") if item]


def seed(args, endpoint):
    kw = dict(endpoint_url=endpoint, region_name=args.region,
              aws_access_key_id="testing", aws_secret_access_key="testing")
    s3 = boto3.client("s3", **kw)
    ssm = boto3.client("ssm", **kw)
    if args.bucket:
        s3.create_bucket(Bucket=args.bucket)
    prefix = args.prefix.strip("/") + "/" if args.prefix.strip("/") else ""
    if args.seed:
        for root, _dirs, files in os.walk(args.seed):
            for name in files:
                full = os.path.join(root, name)
                rel = os.path.relpath(full, args.seed).replace(os.sep, "/")
                if rel in ("params.yaml", "secrets.yaml"):
                    continue
                with open(full, "rb") as f:
                    s3.put_object(Bucket=args.bucket, Key=prefix + rel, Body=f.read())
        for fname, kind in (("params.yaml", "String"), ("secrets.yaml", "SecureString")):
            path = os.path.join(args.seed, fname)
            if os.path.exists(path) and args.ssm_path:
                with open(path) as f:
                    put_params(ssm, args.ssm_path, yaml.safe_load(f), kind)
    for i in range(args.extra_objects):
        body = f"object {i}\n".encode()
        s3.put_object(Bucket=args.bucket, Key=f"{prefix}extra/object-{i:04d}.txt",
                      Body=body.ljust(max(args.extra_object_bytes, len(body)), b"."))
    for i in range(args.extra_params):
        ssm.put_parameter(Name=f"{args.ssm_path.rstrip('/')}/extra/p{i:04d}", Value=f"value-{i}", Type="String",
                          Overwrite=True)
    result = {"endpoint": endpoint}
    if args.amp_workspace:
        amp = boto3.client("amp", **kw)
        result["amp_workspace"] = amp.create_workspace(alias="moninit-test")["workspaceId"]
    if args.asg:
        ec2 = boto3.client("ec2", **kw)
        autoscaling = boto3.client("autoscaling", **kw)
        ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        ec2.create_launch_template(LaunchTemplateName=f"{args.asg}-lt",
                                   LaunchTemplateData={"ImageId": ami, "InstanceType": "t3.small"})
        autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=args.asg, LaunchTemplate={"LaunchTemplateName": f"{args.asg}-lt"},
            MinSize=1, MaxSize=1, DesiredCapacity=1, AvailabilityZones=[f"{args.region}a"],
            HealthCheckGracePeriod=0)
        instances = autoscaling.describe_auto_scaling_instances()["AutoScalingInstances"]
        result["asg_instance"] = instances[0]["InstanceId"]
    if args.auth:
        iam = boto3.client("iam", **kw)
        iam.create_user(UserName="moninit-denied")
        key = iam.create_access_key(UserName="moninit-denied")["AccessKey"]
        result.update(access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"])
        # The Alertmanager stand-in checks signatures (not permissions) for moto's users too.
        alertmanager_stand_in.KEYS[key["AccessKeyId"]] = key["SecretAccessKey"]
        if args.allow_user:
            iam.create_user(UserName="moninit-allowed")
            iam.put_user_policy(UserName="moninit-allowed", PolicyName="all", PolicyDocument=json.dumps({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": allowed_actions(args.allow_user), "Resource": "*"}]}))
            key = iam.create_access_key(UserName="moninit-allowed")["AccessKey"]
            result.update(allowed_access_key=key["AccessKeyId"], allowed_secret_key=key["SecretAccessKey"])
            alertmanager_stand_in.KEYS[key["AccessKeyId"]] = key["SecretAccessKey"]
        # text/plain: with urllib's default form content type, Flask hides the body from moto.
        req = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST",
                                     headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(req, timeout=5).read()
    return result


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--seed")
    p.add_argument("--bucket", default="")
    p.add_argument("--prefix", default="")
    p.add_argument("--ssm-path", default="")
    p.add_argument("--extra-params", type=int, default=0)
    p.add_argument("--extra-objects", type=int, default=0)
    p.add_argument("--extra-object-bytes", type=int, default=0, help="pad each extra object to this size")
    p.add_argument("--auth", action="store_true")
    p.add_argument("--asg", help="create an autoscaling group of this name holding one instance")
    p.add_argument("--allow-user", help="with --auth: also create a user allowed SERVICE:*")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--amp-workspace", action="store_true", help="create an AMP workspace; print its id")
    p.add_argument("--lifetime", type=float, default=900.0, help="seconds before the server stops by itself")
    args = p.parse_args()

    honour_describe_parameters_max_results()
    check_bodyless_signatures_as_aws_does()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    alertmanager_stand_in.install(server)
    count_requests(server)
    host, port = server.get_host_and_port()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        result = seed(args, endpoint)
    except Exception as e:  # report seeding failures to the caller, then stop
        print(json.dumps({"error": repr(e)}), flush=True)
        server.stop()
        sys.exit(1)
    print(json.dumps(result), flush=True)

    wait_for_parent(args.lifetime)
    server.stop()


if __name__ == "__main__":
    main()
