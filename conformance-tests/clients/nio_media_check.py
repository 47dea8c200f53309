#!/usr/bin/env python3
"""Media through an off-the-shelf client: matrix-nio uploads and downloads files.

  1. upload      alice uploads binary bytes with nio's upload()
  2. download    bob downloads them with nio's download() (authenticated media):
                 the same bytes, type and file name
  3. thumbnail   alice uploads a PNG; bob gets a 32x32 crop thumbnail with nio's thumbnail()
  4. encrypted   an attachment encrypted by nio (as in E2EE rooms) uploads, downloads and
                 decrypts to the original

Usage:
  python3 nio_media_check.py --homeserver http://127.0.0.1:8008

Prints "ok  <step> <detail>" per step and ends with "N passed, M failed".
Exit status 0 if every step passed, 1 on the first failure, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import secrets
import struct
import sys
import zlib

try:
    from nio import (
        AsyncClient,
        DownloadResponse,
        RegisterResponse,
        ResizingMethod,
        ThumbnailResponse,
        UploadResponse,
    )
    from nio.crypto.attachments import decrypt_attachment
except ImportError as exc:  # pragma: no cover - environment problem
    print(f"FAIL setup: matrix-nio is not importable ({exc}); run: pip install -r requirements.txt", file=sys.stderr)
    sys.exit(2)


class StepFailed(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise StepFailed(message)


def png(width: int, height: int) -> bytes:
    """A truecolour PNG with a gradient, written by hand so that no imaging library is needed."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in (x * 255 // width, y * 255 // height, 128))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def png_size(data: bytes) -> tuple[int, int]:
    check(data[:8] == b"\x89PNG\r\n\x1a\n", f"not a PNG: {data[:16]!r}")
    return struct.unpack(">II", data[16:24])


async def register(homeserver: str, prefix: str) -> AsyncClient:
    client = AsyncClient(homeserver, f"{prefix}{secrets.token_hex(4)}")
    resp = await client.register(client.user, "media-check-password")
    check(isinstance(resp, RegisterResponse), f"register failed: {resp}")
    return client


async def upload(client: AsyncClient, data: bytes, content_type: str, filename: str, encrypt: bool = False):
    resp, keys = await client.upload(
        io.BytesIO(data), content_type=content_type, filename=filename, encrypt=encrypt, filesize=len(data)
    )
    check(isinstance(resp, UploadResponse), f"upload failed: {resp}")
    check(resp.content_uri.startswith("mxc://"), f"not an mxc URI: {resp.content_uri}")
    return resp.content_uri, keys


async def run(homeserver: str) -> int:
    alice = await register(homeserver, "niomedia_a")
    bob = await register(homeserver, "niomedia_b")
    passed = 0
    try:
        data = secrets.token_bytes(300_000) + bytes(range(256))
        uri, _ = await upload(alice, data, "application/octet-stream", "blob.bin")
        print(f"ok  upload {uri} ({len(data)} bytes)")
        passed += 1

        resp = await bob.download(mxc=uri)
        check(isinstance(resp, DownloadResponse), f"download failed: {resp}")
        check(resp.body == data, f"downloaded {len(resp.body)} bytes that differ from the upload")
        check(resp.content_type == "application/octet-stream", f"content type {resp.content_type!r}")
        check(resp.filename == "blob.bin", f"file name {resp.filename!r}")
        print("ok  download same bytes, type and name")
        passed += 1

        picture = png(200, 150)
        uri, _ = await upload(alice, picture, "image/png", "picture.png")
        server_name, media_id = uri[len("mxc://") :].split("/", 1)
        resp = await bob.thumbnail(server_name, media_id, 32, 32, ResizingMethod.crop)
        check(isinstance(resp, ThumbnailResponse), f"thumbnail failed: {resp}")
        check(resp.content_type == "image/png", f"thumbnail type {resp.content_type!r}")
        check(png_size(resp.body) == (32, 32), f"thumbnail size {png_size(resp.body)}")
        check(len(resp.body) < len(picture), "the thumbnail is not smaller than the picture")
        print(f"ok  thumbnail 32x32 image/png, {len(resp.body)} of {len(picture)} bytes")
        passed += 1

        secret = b"attachment for an encrypted room " * 1000
        uri, keys = await upload(alice, secret, "application/octet-stream", "secret.txt", encrypt=True)
        resp = await bob.download(mxc=uri)
        check(isinstance(resp, DownloadResponse), f"download of the encrypted file failed: {resp}")
        check(resp.body != secret, "the stored attachment is not encrypted")
        plain = decrypt_attachment(resp.body, keys["key"]["k"], keys["hashes"]["sha256"], keys["iv"])
        check(plain == secret, "the attachment does not decrypt to the original")
        print("ok  encrypted attachment round trip")
        passed += 1
    except StepFailed as exc:
        print(f"FAIL {exc}")
        print(f"{passed} passed, 1 failed")
        return 1
    finally:
        await alice.close()
        await bob.close()
    print(f"{passed} passed, 0 failed")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homeserver", required=True)
    args = parser.parse_args()
    return asyncio.run(run(args.homeserver))


if __name__ == "__main__":
    sys.exit(main())
