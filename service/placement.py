"""Which execution provider ran each node of a session, read from onnxruntime's own profile.

onnxruntime silently moves nodes the CUDA provider cannot run (the brief's example: a
ConvTranspose with asymmetric pads) to the CPU provider, with only a log line; every such node
costs a device-to-host and a host-to-device copy per run (3,100 vs 358,000 images/s for the CIFAR
DCGAN in the brief). The repository profiles the warm-up runs of each CUDA session and reports the
nodes left on the CPU, so a deployment can be checked instead of trusted.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import onnxruntime as ort


def enable_placement_profile(options: ort.SessionOptions, directory: Path, name: str) -> None:
    """Profile the session's runs until `node_placement` ends it (only warm-up is ever profiled)."""
    options.enable_profiling = True
    options.profile_file_prefix = str(directory / f"placement-{name}")


def node_placement(session: ort.InferenceSession) -> dict[str, Counter[str]]:
    """End `session`'s profiling and return, per provider, how many nodes of each op type it ran.

    Only node kernels that actually ran are counted; the profile file is deleted.
    """
    path = Path(session.end_profiling())
    try:
        events = json.loads(path.read_text())
    finally:
        path.unlink(missing_ok=True)
    seen: dict[str, tuple[str, str]] = {}
    for event in events:
        args = event.get("args", {})
        if event.get("cat") == "Node" and "provider" in args:
            seen[event["name"].removesuffix("_kernel_time")] = (args["provider"], args.get("op_name", "?"))
    placement: dict[str, Counter[str]] = {}
    for provider, op in seen.values():
        placement.setdefault(provider, Counter())[op] += 1
    return placement
