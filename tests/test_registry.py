"""The extractor registry (msclr/extractors/registry.py) and TensorFlow's quiet start (tensorflow_env.py)."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest
from conftest import require_module

from msclr.errors import MsclrError
from msclr.extractors.registry import (
    EXTRACTOR_KINDS,
    build_extractor,
    can_produce,
    check_options,
    default_conventions,
    describe_outputs,
    extractor_factory,
    resolve_conventions,
)


def test_what_each_kind_produces() -> None:
    assert set(EXTRACTOR_KINDS) == {"metrabs", "mediapipe"}
    assert default_conventions("metrabs") == ("smpl_24", "smplx_42", "berkeley_mhad_43", "kinectv2_25")
    assert default_conventions("mediapipe") == ("blazepose_33",)
    assert can_produce("metrabs", "smplx_42") and can_produce("mediapipe", "blazepose_33")
    # sensor ground truth comes from no extractor; BlazePose only from MediaPipe
    for kind in EXTRACTOR_KINDS:
        assert not can_produce(kind, "ntu_kinect_25") and not can_produce(kind, "kinect_v1_20")
    assert not can_produce("metrabs", "blazepose_33") and not can_produce("mediapipe", "smpl_24")
    text = describe_outputs()
    assert "metrabs: smpl_24, smplx_42, berkeley_mhad_43, kinectv2_25" in text and "mediapipe: blazepose_33" in text


def test_unknown_kinds_and_conventions_are_clear_errors() -> None:
    with pytest.raises(MsclrError, match="metrabs"):
        build_extractor("openpose")
    with pytest.raises(MsclrError, match="mediapipe"):
        resolve_conventions("mediapipe", "smpl_24")
    assert [s.name for s in resolve_conventions("metrabs", "smpl_24,smplx_42")] == ["smpl_24", "smplx_42"]
    assert [s.name for s in resolve_conventions("mediapipe", None)] == ["blazepose_33"]


def test_options_a_kind_does_not_use_are_refused() -> None:
    check_options("metrabs", fov=60.0, pose_model="dir")
    with pytest.raises(MsclrError, match="--fov"):
        check_options("mediapipe", fov=60.0)
    with pytest.raises(MsclrError, match="--pose-model"):
        check_options("mediapipe", pose_model="dir")
    with pytest.raises(MsclrError, match="--fov or --intrinsics"):
        check_options("metrabs", fov=60.0, intrinsics="k.json")
    with pytest.raises(TypeError, match="unknown options"):
        extractor_factory("metrabs", None, colour="red")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)


def test_the_registry_imports_no_backend() -> None:
    result = _run("""
        import sys
        import msclr.extractors.registry, msclr.cli
        print(sorted(m for m in ("tensorflow", "mediapipe", "torch") if m in sys.modules))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_tensorflow_starts_quietly_unless_verbose() -> None:
    """TensorFlow's C++ start-up lines reach stderr only with verbose=True (`msclr -v`)."""
    require_module("tensorflow")
    code = """
        import os
        os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        from msclr.extractors.tensorflow_env import import_tensorflow
        import logging
        tf = import_tensorflow(verbose={verbose})
        tf.constant([1.0]) + 1.0
        print("imported", os.environ.get("TF_CPP_MIN_LOG_LEVEL"), logging.getLogger("tensorflow").level)
    """
    loud, quiet = _run(code.format(verbose=True)), _run(code.format(verbose=False))
    assert loud.returncode == 0 and quiet.returncode == 0, loud.stderr + quiet.stderr
    assert quiet.stdout.strip() == f"imported 3 {logging.ERROR}" and quiet.stderr.strip() == ""
    # The settings themselves, checked even where this TensorFlow build prints nothing either way.
    printed, level, logger_level = loud.stdout.split()
    assert printed == "imported" and level != "3" and logger_level == str(logging.NOTSET)
    if not loud.stderr.strip():
        pytest.skip("this TensorFlow build prints nothing at start-up, so quietness cannot be told apart")
