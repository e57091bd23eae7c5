"""Score a folder of images or an array file with the batch API; progress bar; results as CSV.

    .venv/bin/python bench/batch_client.py digits/          --token TOKEN -o results.csv
    .venv/bin/python bench/batch_client.py mnist-test.npy   --url http://127.0.0.1:8000/
    .venv/bin/python bench/batch_client.py t10k-images-idx3-ubyte.gz

A folder is sent as one ZIP of its PNG, JPEG and WebP files (subfolders included, names relative to
the folder); a file (ZIP, .npy, IDX, gzipped or not) is sent as it is. The token comes from
--token or DIGITS_TOKEN (`python manage.py drf_create_token USERNAME` makes one), the service from
--url or DIGITS_URL. Ctrl-C cancels the job. Needs only the standard library and tqdm, so it runs
on any machine with Python, without the project's other dependencies.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path

from tqdm import tqdm

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


class ClientError(RuntimeError):
    """The API said no; `code` is its stable error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def folder_zip(folder: Path) -> bytes:
    """The folder's images as an uncompressed ZIP (images are compressed already)."""
    files = sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and path.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )
    if not files:
        raise SystemExit(f"no PNG, JPEG or WebP files in {folder}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for path in files:
            archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with one file field, and its Content-Type."""
    boundary = uuid.uuid4().hex
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return (
        head + data + f"\r\n--{boundary}--\r\n".encode(),
        f"multipart/form-data; boundary={boundary}",
    )


class Api:
    def __init__(self, base_url: str, token: str, timeout: float = 300) -> None:
        self.base = base_url.rstrip("/") + "/"
        self.headers = {"Authorization": f"Token {token}"}
        self.timeout = timeout

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        content_type: str | None = None,
        accept: str = "application/json",
    ) -> urllib.request.addinfourl:
        headers = {**self.headers, "Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(url, data=body, headers=headers, method=method)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            try:
                error = json.loads(exc.read())
            except ValueError:
                error = {}
            raise ClientError(
                exc.code, error.get("code", "http_error"), error.get("message", exc.reason)
            ) from None

    def json(self, method: str, url: str, **kwargs: object) -> dict:
        with self.request(method, url, **kwargs) as response:
            return json.loads(response.read())

    def submit(self, path: Path) -> dict:
        """Create the job from a folder or a file; the job as the API answered (202)."""
        if path.is_dir():
            body, content_type = multipart("file", f"{path.name}.zip", folder_zip(path))
        else:
            body, content_type = multipart("file", path.name, path.read_bytes())
        return self.json(
            "POST", self.base + "api/v1/batches/", body=body, content_type=content_type
        )

    def wait(self, job: dict, poll: float = 0.5, progress: bool = True) -> dict:
        """Poll until the job is done or cancelled, with a progress bar of answered items."""
        with tqdm(total=job["total"], unit="img", disable=not progress, file=sys.stderr) as bar:
            while True:
                bar.update(job["done"] + job["failed"] - bar.n)
                bar.set_postfix(failed=job["failed"], refresh=False)
                if job["status"] in ("done", "cancelled"):
                    return job
                time.sleep(poll)
                job = self.json("GET", job["url"])

    def cancel(self, job: dict) -> dict:
        return self.json("DELETE", job["url"])

    def download_csv(self, job: dict, out: Path) -> None:
        """Stream the results CSV to `out`, never holding it all in memory."""
        url = job["results_url"] + "?format=csv"
        with self.request("GET", url, accept="text/csv") as response:
            with out.open("wb") as file:
                shutil.copyfileobj(response, file)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a folder of images, or a ZIP, .npy or IDX file")
    parser.add_argument("--url", default=os.environ.get("DIGITS_URL", "http://127.0.0.1:8000/"))
    parser.add_argument("--token", default=os.environ.get("DIGITS_TOKEN"))
    parser.add_argument("-o", "--out", type=Path, help="CSV to write (default: <path>.csv)")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between progress polls")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("an API token is needed: --token or DIGITS_TOKEN")
    if not args.path.exists():
        parser.error(f"{args.path} does not exist")
    out = args.out or args.path.with_name(args.path.name.rstrip("/") + ".csv")
    api = Api(args.url, args.token)
    try:
        job = api.submit(args.path)
    except ClientError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    print(f"job {job['id']}: {job['total']} images ({job['url']})", file=sys.stderr)
    try:
        job = api.wait(job, poll=args.poll, progress=not args.quiet)
    except KeyboardInterrupt:
        job = api.cancel(job)
        print(
            f"cancelled: {job['done']} scored, {job['failed']} failed or cancelled", file=sys.stderr
        )
        return 130
    api.download_csv(job, out)
    print(
        f"{job['status']}: {job['done']} scored, {job['failed']} failed; results in {out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
