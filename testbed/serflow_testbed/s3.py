"""Uploading to an S3-compatible server in the tests (Versity's gateway, on 127.0.0.1 or
through a port-forward to the kind cluster): one object, or a bucket, per signed PUT.

Signed with awscrt, as the storage initializer signs its GETs (boto3 cannot share the
development environment with the control plane's kubernetes client)."""

from __future__ import annotations

import http.client
import urllib.parse
from collections.abc import Callable


def signed_put(
    endpoint: str, key: str, secret: str, region: str
) -> Callable[[str, bytes], None]:
    """A function that PUTs ``body`` at ``path`` (``bucket/key``, or ``bucket`` to make
    it) on ``endpoint``, SigV4-signed; a status other than 200 fails the test."""
    from awscrt import auth  # type: ignore[import-untyped]
    from awscrt import http as crt_http

    ep = urllib.parse.urlsplit(endpoint)
    creds = auth.AwsCredentialsProvider.new_static(key, secret)

    def put(path: str, body: bytes) -> None:
        target = urllib.parse.quote("/" + path, safe="/")
        config = auth.AwsSigningConfig(
            credentials_provider=creds,
            region=region,
            service="s3",
            use_double_uri_encode=False,
            should_normalize_uri_path=False,
            signed_body_value=auth.AwsSignedBodyValue.UNSIGNED_PAYLOAD,
            signed_body_header_type=auth.AwsSignedBodyHeaderType.X_AMZ_CONTENT_SHA_256,
        )
        req = crt_http.HttpRequest("PUT", target, crt_http.HttpHeaders(
            [("Host", ep.netloc), ("Content-Length", str(len(body)))]))  # fmt: skip
        signed = auth.aws_sign_request(req, config).result(10)
        conn = http.client.HTTPConnection(ep.hostname or "", ep.port, timeout=30)
        try:
            conn.request("PUT", target, body=body, headers=dict(signed.headers))
            resp = conn.getresponse()
            assert resp.status == 200, (path, resp.status, resp.read()[:300])
        finally:
            conn.close()

    return put
