"""Checking that every peer answers the benchmark's requests with the product's bytes.

Runs in the product's environment (numpy and Pillow) at the start of every run. A PNG is compared
byte for byte; a zip (n > 1) member by member, names and bytes, since the zip's own bytes carry
the time it was written. Where bytes differ, the decoded pixels are compared too, so a report can
tell "same pixels, other encoder" from "other pixels".
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from typing import Literal

import numpy as np
from peers.servers import Server, request
from PIL import Image


@dataclass(frozen=True)
class Probe:
    """One request whose answer must be the same from every server."""

    name: str
    method: str
    target: str
    body: bytes
    content_type: str


@dataclass(frozen=True)
class Verdict:
    """How a peer's answer to a probe compares with the product's: same bytes, same pixels, or not."""

    probe: str
    same: Literal["bytes", "pixels", "no"]
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {"probe": self.probe, "same": self.same, "detail": self.detail}


def fetch(server: Server, probe: Probe) -> bytes:
    """The body of `server`'s answer to `probe`; an error if it is not a 200."""
    status, _, body = request(
        server.port, probe.method, probe.target, probe.body, {"Content-Type": probe.content_type}
    )
    if status != 200:
        raise RuntimeError(f"{server.label}: {probe.name} answered {status}: {body[:300]!r}")
    return body


def _files(body: bytes) -> dict[str, bytes]:
    """The images in a response: its zip members, or the body itself as one file."""
    if body[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            return {name: archive.read(name) for name in archive.namelist()}
    return {"body": body}


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image).astype(np.int16)


def compare(probe: Probe, expected: bytes, actual: bytes) -> Verdict:
    """Compare a peer's answer with the product's, file by file."""
    want, got = _files(expected), _files(actual)
    if list(want) != list(got):
        return Verdict(probe.name, "no", f"files {list(got)[:4]}... instead of {list(want)[:4]}...")
    differing = [name for name in want if want[name] != got[name]]
    if not differing:
        unit = "zip members" if len(want) > 1 else "PNG"
        return Verdict(probe.name, "bytes", f"byte-identical ({len(want)} {unit})")
    worst = 0
    for name in differing:
        a, b = _pixels(want[name]), _pixels(got[name])
        if a.shape != b.shape:
            return Verdict(probe.name, "no", f"{name}: shape {b.shape} instead of {a.shape}")
        worst = max(worst, int(np.abs(a - b).max()))
    if worst == 0:
        return Verdict(
            probe.name, "pixels", f"pixel-identical; {len(differing)} of {len(want)} files other bytes"
        )
    return Verdict(probe.name, "no", f"{len(differing)} files differ; max pixel difference {worst}")


def verify(product: Server, peers: list[Server], probes: list[Probe]) -> dict[str, list[Verdict]]:
    """Each peer's verdict on each probe."""
    expected = {probe.name: fetch(product, probe) for probe in probes}
    return {
        peer.name: [compare(probe, expected[probe.name], fetch(peer, probe)) for probe in probes]
        for peer in peers
    }
