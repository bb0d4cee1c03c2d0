"""A real S3-protocol server (moto's server mode) on loopback, with one public-read bucket."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer


def admin_client(endpoint: str) -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@contextmanager
def s3_server(bucket: str) -> Iterator[str]:
    """Yield the endpoint URL of a fresh S3 server holding `bucket`."""
    with pytest.MonkeyPatch.context() as mp:
        # Prove the stores need nothing from the environment (profiles, keys, ...).
        for key in list(os.environ):
            if key.startswith("AWS_"):
                mp.delenv(key)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            url = f"http://{host}:{port}"
            admin = admin_client(url)
            admin.create_bucket(Bucket=bucket)
            # Production buckets are public-read and objects are uploaded without ACLs.
            public_read = {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": "s3:GetObject",
                        "Resource": f"arn:aws:s3:::{bucket}/*",
                    }
                ],
            }
            admin.put_bucket_policy(Bucket=bucket, Policy=json.dumps(public_read))
            yield url
        finally:
            server.stop()
