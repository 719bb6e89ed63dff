"""Evaluation protocols of `msclr train --protocol` (linear, finetune, semi:P, scratch), `--init`, and predict's
choice of the fine-tuned model, on tiny synthetic caches (CPU, reduced sizes, a few seconds each)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from tiny_runs import recipe_file, train, write_cache

from msclr.cli import cli

CONVS = ("kinectv2_25", "smpl_24")


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    return recipe_file(tmp_path_factory.mktemp("recipe"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return write_cache(tmp_path_factory.mktemp("cache") / "cache", CONVS)


@pytest.fixture(scope="module")
def run(cache: Path, recipe: Path, tmp_path_factory) -> Path:
    """linear + finetune + semi:0.5 over the joint and bone streams."""
    out = tmp_path_factory.mktemp("runs") / "run"
    result = train(cache, out, recipe, "--split", "xsub", "--stream", "joint,bone",
                   "--protocol", "linear,finetune,semi:0.5")
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_finetune_changes_the_encoder_linear_does_not(run: Path) -> None:
    from msclr.pipeline.rundir import RunFolder
    from msclr.pipeline.training.pretrain import load_pretrained_encoder

    model = RunFolder(run).read_model()
    assert list(model.protocols) == ["linear", "finetune", "semi:0.5"]
    for stream in ("joint", "bone"):
        pretrained = load_pretrained_encoder(run / "streams" / stream / "checkpoints" / "last.pt")
        assert _same(model.pretrained[stream], pretrained)
        assert _same(model.protocols["linear"][stream].encoder, pretrained)  # frozen: untouched
        for name in ("finetune", "semi:0.5"):
            tuned = model.protocols[name][stream].encoder
            assert tuned.keys() == pretrained.keys()
            changed = [k for k in tuned if k.startswith("blocks.") and not torch.equal(tuned[k], pretrained[k])]
            assert len(changed) > 10, name  # the shared blocks were trained ...
            assert all(torch.equal(tuned[k], pretrained[k]) for k in tuned if k.startswith("fc."))  # ... not the MLP
            for conv in CONVS:  # each convention's own parts too, and a head per convention
                key = f"conventions.{conv}.data_bn.weight"
                assert not torch.equal(tuned[key], pretrained[key]), (name, key)
                assert model.protocols[name][stream].classifiers[conv]["weight"].shape == (6, 16)


def test_every_protocol_reports_ensemble_and_fusion(run: Path) -> None:
    metrics = json.loads((run / "metrics.json").read_text())
    # linear keeps its layout at the top level; the others have the same layout under "protocols"
    assert metrics["protocol"]["name"] == "linear" and set(metrics["streams"]) == {"joint", "bone"}
    assert list(metrics["protocols"]) == ["finetune", "semi:0.5"]
    for name, section in metrics["protocols"].items():
        assert section["protocol"]["name"] == name and section["protocol"]["reported"] == "last epoch"
        assert set(section["streams"]) == {"joint", "bone"}
        for stream in section["streams"].values():
            assert set(stream["conventions"]) == set(CONVS) and stream["ensemble"]["mode"] == "softmax"
            assert len(stream["conventions"]["smpl_24"]["per_class"]) == 6
        assert set(section["fusion"]["results"]) == {*CONVS, "ensemble"}
    assert metrics["protocols"]["finetune"]["protocol"]["train_clips"] == metrics["protocol"]["train_clips"] == 24
    assert metrics["protocols"]["semi:0.5"]["protocol"]["train_clips"] == 12
    info = json.loads((run / "run.json").read_text())
    assert info["protocols"] == ["linear", "finetune", "semi:0.5"]
    scores = np.load(run / "test_scores.npz")
    assert {"joint__smpl_24", "finetune__joint__smpl_24", "semi_0.5__bone__kinectv2_25"} <= set(scores.files)
    for name in ("confusion_fusion_ensemble.png", "confusion_finetune_fusion_ensemble.png",
                 "confusion_semi_0.5_joint_ensemble.png"):
        assert (run / "report" / name).is_file(), name
    per_class = json.loads((run / "report" / "per_class.json").read_text())
    assert {"joint/ensemble", "finetune/joint/ensemble", "semi_0.5/fusion/ensemble"} <= set(per_class)
    # evaluate: one row group per protocol
    table = CliRunner().invoke(cli, ["evaluate", str(run)])
    assert table.exit_code == 0
    lines = table.output.splitlines()
    for name in ("linear", "finetune", "semi:0.5"):
        assert any(line.startswith(f"│ {name} ") for line in lines), name
    assert "3-stream fusion" in table.output and "fine-tuned with 50% of the labels" in table.output


def test_predict_uses_the_finetuned_model(run: Path, cache: Path) -> None:
    from msclr.models.fusion import topk_accuracy
    from msclr.pipeline.cache import Cache
    from msclr.pipeline.predict import predict_skeletons
    from msclr.pipeline.preprocess import preprocess_cache
    from msclr.pipeline.trained import load_run

    assert load_run(run).protocol == "finetune"  # preferred over linear and semi
    c = Cache(cache)
    name = c.splits["xsub_val"][0]
    chosen = predict_skeletons(run, c.clip(name).poses, top_k=6)
    finetuned = predict_skeletons(load_run(run, protocol="finetune"), c.clip(name).poses, top_k=6)
    linear = predict_skeletons(run, c.clip(name).poses, top_k=6, protocol="linear")
    assert chosen.protocol == "finetune" and linear.protocol == "linear"
    np.testing.assert_array_equal(chosen.probabilities, finetuned.probabilities)
    assert not np.allclose(chosen.probabilities, linear.probabilities)
    # the fine-tuned model rebuilt from model.pt reproduces the fine-tuned protocol's reported accuracy
    names = [n for n in c.splits["xsub_val"] if n in set(c.names)]
    inputs = {conv: preprocess_cache(c, conv, names, length=16) for conv in CONVS}
    scores = load_run(run, protocol="finetune").scores(inputs)
    labels = np.asarray(c.metadata(names)["label"])
    metrics = json.loads((run / "metrics.json").read_text())["protocols"]["finetune"]
    got = topk_accuracy(scores["streams"]["joint"], labels, 1)
    assert got == pytest.approx(metrics["streams"]["joint"]["ensemble"]["top1"], abs=1e-6)
    assert topk_accuracy(scores["final"], labels, 1) == pytest.approx(metrics["fusion"]["results"]["ensemble"]["top1"])
    # the CLI names the protocol in the table and in --json
    args = ["predict", "--model", str(run), "--from-cache", str(cache), "--clip", name]
    out = CliRunner().invoke(cli, [*args, "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["protocol"] == "finetune" and data["protocols"] == ["linear", "finetune", "semi:0.5"]
    out = CliRunner().invoke(cli, [*args, "--protocol", "semi:.5"])
    assert out.exit_code == 0 and "the run's semi:0.5 protocol" in out.stdout
    out = CliRunner().invoke(cli, [*args, "--protocol", "scratch"])
    assert out.exit_code == 1 and "no scratch model" in out.output and "linear, finetune, semi:0.5" in out.output


def test_label_subset_is_class_balanced_and_seeded() -> None:
    from msclr.pipeline.training.finetune import label_subset

    labels = np.array([0] * 50 + [1] * 30 + [2] * 7 + [-1] * 5 + [3] * 2)
    rng = np.random.default_rng(1)
    labels = labels[rng.permutation(len(labels))]
    picked = label_subset(labels, 0.1, seed=0)
    counts = {c: int((labels[picked] == c).sum()) for c in range(4)}
    assert counts == {0: 5, 1: 3, 2: 1, 3: 1}  # round(P * n), at least one clip per class
    assert (labels[picked] >= 0).all() and len(set(picked.tolist())) == len(picked)
    assert np.array_equal(picked, label_subset(labels, 0.1, seed=0))
    assert not np.array_equal(picked, label_subset(labels, 0.1, seed=1))
    assert len(label_subset(labels, 0.01, seed=0)) == 4  # one per class


def test_semi_trains_on_the_balanced_subset_and_no_other_label(cache: Path, recipe: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from msclr.pipeline.cache import Cache
    from msclr.pipeline.preprocess import preprocess_cache
    from msclr.pipeline.training import finetune

    seen: list[tuple[dict, np.ndarray]] = []
    real = finetune.finetune_stream

    def spy(encoder, train_arrays, y_train, *args, **kwargs):
        seen.append(({c: np.array(a) for c, a in train_arrays.items()}, np.array(y_train)))
        return real(encoder, train_arrays, y_train, *args, **kwargs)

    monkeypatch.setattr(finetune, "finetune_stream", spy)
    out = tmp_path / "run"
    result = train(cache, out, recipe, "--split", "xsub", "--protocol", "semi:0.1")
    assert result.exit_code == 0, result.output
    names = (out / "protocols" / "semi_0.1" / "train_clips.txt").read_text().split()
    c = Cache(cache)
    labels = np.asarray(c.metadata(names)["label"])
    assert sorted(labels.tolist()) == list(range(6))  # 10 % of 4 clips per class: one clip of each class
    assert set(names) <= set(c.splits["xsub_train"])
    (arrays, y_train), = seen  # one stream, trained once, on exactly those clips and labels
    np.testing.assert_array_equal(y_train, labels)
    for conv in CONVS:
        np.testing.assert_array_equal(arrays[conv], preprocess_cache(c, conv, names, length=16))
    metrics = json.loads((out / "metrics.json").read_text())
    assert "streams" not in metrics and metrics["protocols"]["semi:0.1"]["protocol"]["train_clips"] == 6
    assert metrics["protocols"]["semi:0.1"]["protocol"]["label_fraction"] == 0.1


def test_scratch_pretrains_nothing(cache: Path, recipe: Path, tmp_path: Path) -> None:
    from msclr.pipeline.rundir import RunFolder
    from msclr.pipeline.trained import load_run

    out = tmp_path / "run"
    result = train(cache, out, recipe, "--split", "xsub", "--protocol", "scratch")
    assert result.exit_code == 0, result.output
    assert not (out / "streams").exists()  # no pretraining when no protocol uses it
    model = RunFolder(out).read_model()
    assert model.pretrained == {} and list(model.protocols) == ["scratch"]
    assert json.loads((out / "metrics.json").read_text())["protocols"]["scratch"]["protocol"]["encoder"] == \
        "random init (scratch)"
    assert load_run(out).protocol == "scratch"
    refused = train(cache, tmp_path / "next", recipe, "--split", "xsub", "--init", str(out))
    assert refused.exit_code == 1 and "holds no pretrained encoder" in refused.output


def test_init_starts_from_the_source_encoder(run: Path, recipe: Path, tmp_path: Path) -> None:
    from msclr.models.build import convention_state
    from msclr.pipeline.rundir import RunFolder

    target = write_cache(tmp_path / "target", ("smpl_24",), splits=False, per_class=6)
    out = tmp_path / "transfer"
    result = train(target, out, recipe, "--init", str(run), "--stream", "bone", "--skeletons", "smpl_24")
    assert result.exit_code == 0, result.output
    assert "no pretraining" in result.output and not (out / "streams").exists()
    source = RunFolder(run).read_model()
    model = RunFolder(out).read_model()
    expected = convention_state(source.pretrained["bone"], ["smpl_24"])
    assert _same(model.pretrained["bone"], expected) and _same(model.protocols["linear"]["bone"].encoder, expected)
    assert not any(k.startswith("conventions.kinectv2_25") for k in model.pretrained["bone"])
    assert json.loads((out / "run.json").read_text())["config"]["pretrain"]["init"] == str(run.resolve())
    # a convention the source lacks: one error naming both lists, nothing written
    other = write_cache(tmp_path / "other", ("ntu_kinect_25", "smpl_24"), per_class=4)
    refused = train(other, tmp_path / "refused", recipe, "--init", str(run), "--skeletons", "ntu_kinect_25,smpl_24",
                    "--split", "xsub")
    assert refused.exit_code == 1 and not (tmp_path / "refused").exists()
    line = next(line for line in refused.output.splitlines() if line.startswith("Error:"))
    assert "has no ntu_kinect_25" in line and "kinectv2_25, smpl_24" in line and "ntu_kinect_25, smpl_24" in line


def test_protocol_names_with_a_label_fraction() -> None:
    from msclr.errors import MsclrError
    from msclr.pipeline.config import parse_protocol, parse_protocols

    assert parse_protocols("linear,scratch:0.10,semi:.1,scratch") == ("linear", "scratch:0.1", "semi:0.1", "scratch")
    assert parse_protocol("scratch:0.1").fraction == 0.1 and not parse_protocol("scratch:0.1").pretrained
    assert parse_protocol("semi:0.01").fraction == 0.01 and parse_protocol("semi:0.01").pretrained
    for bad in ("linear:0.5", "scratch:1", "semi", "semi:x"):
        with pytest.raises(MsclrError):
            parse_protocol(bad)
