"""The package's shape: public API, quiet start (no TensorFlow), inference free of training code, sizes,
self-contained docstrings."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "msclr"


def _run_python(code: str, cwd: Path | None = None) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            cwd=cwd, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_public_api_is_lazy() -> None:
    out = _run_python("""
        import sys
        import msclr
        assert "torch" not in sys.modules and "h5py" not in sys.modules, "import msclr must stay light"
        msclr.Cache; msclr.load_run; msclr.train_run; msclr.predict_video
        print("ok")
    """)
    assert out.strip() == "ok"


def test_train_evaluate_info_help_do_not_import_tensorflow(tmp_path: Path) -> None:
    """`msclr train` on a tiny cache (with TensorBoard logging on), evaluate, info and --help: no TensorFlow."""
    out = _run_python(f"""
        import sys
        from pathlib import Path
        from click.testing import CliRunner
        from msclr.cli import cli
        from msclr.pipeline.cache import CacheWriter, Clip
        from msclr.pipeline.datasets.synthetic import ACTIONS, make_dataset, subject_splits

        root = Path({str(tmp_path)!r})
        samples = make_dataset(["smpl_24"], samples_per_class=4, subjects=4, seed=0)
        with CacheWriter(root / "cache", ["smpl_24"], max_persons=1, classes=list(ACTIONS)) as writer:
            for s in samples:
                writer.add(Clip(s.name, poses=s.poses, label=s.label, subject=s.subject, extractor="synthetic"))
            writer.set_splits(subject_splits(samples))
        (root / "tiny.toml").write_text('[data]\\nskeletons = ["smpl_24"]\\nlength = 16\\n[model]\\nhidden_channels = 4\\n'
                                        'hidden_dim = 8\\nfeature_dim = 8\\nqueue_size = 16\\n[pretrain]\\nbatch_size = 8\\n')
        runner = CliRunner()
        for args in (["--help"], ["train", "--help"], ["info", str(root / "cache")],
                     ["train", str(root / "cache"), "--out", str(root / "run"), "--config", str(root / "tiny.toml"),
                      "--epochs", "1", "--linear-epochs", "1", "--device", "cpu", "-q"],
                     ["evaluate", str(root / "run")]):
            result = runner.invoke(cli, args)
            assert result.exit_code == 0, (args, result.output, result.exception)
        loaded = sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow."))
        print("tensorflow modules:", loaded)
    """)
    assert "tensorflow modules: []" in out


def test_inference_never_imports_training_code() -> None:
    out = _run_python("""
        import sys
        import msclr.pipeline.predict, msclr.pipeline.rundir, msclr.models.build, msclr.pipeline.preprocess
        print(sorted(m for m in sys.modules if m.startswith("msclr.pipeline.training")))
    """)
    assert out.strip() == "[]"


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_over_500_lines_and_a_small_pipeline_root() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in _modules() if (n := len(p.read_text().splitlines())) > 500}
    assert long == {}
    assert len(list((PACKAGE / "pipeline").glob("*.py"))) <= 10


LONG_FUNCTIONS_ALLOWED = {
    # One hot loop over pickle opcodes (about 0.5 us each); splitting it would add a call per opcode.
    "pipeline/datasets/safe_pickle.py:check_nesting",
}


def test_no_function_over_80_lines() -> None:
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                where = f"{path.relative_to(PACKAGE)}:{node.name}"
                if length > 80 and where not in LONG_FUNCTIONS_ALLOWED:
                    long.append(f"{where} ({length})")
    assert long == []


def test_docstrings_cite_nothing_outside_the_repository() -> None:
    pattern = re.compile(r"method\.md|reference/|mistake #")
    hits = []
    root = PACKAGE.parent
    files = [*_modules(), *PACKAGE.rglob("*.toml"), *(root / "bench").glob("*.py"), *(root / "tests").glob("*.py")]
    for path in files:
        if path == Path(__file__).resolve():
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line) and "docs/method.md" not in line:
                hits.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert hits == []


def test_private_helpers_are_not_imported_across_modules() -> None:
    hits = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("msclr"):
                hits += [f"{path.relative_to(PACKAGE)}: {node.module}.{a.name}" for a in node.names
                         if a.name.startswith("_") and not a.name.startswith("__")]
    assert hits == []
