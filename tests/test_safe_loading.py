"""Safe loading: every checkpoint load is ``weights_only=True``; pickled objects are refused in one clear line."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest
import torch
from monai.networks.nets import ResNet

from monai_kd import cli
from monai_kd.networks import CheckpointError, load_checkpoint, load_pretrained

from conftest import REPO


def _net() -> ResNet:
    torch.manual_seed(0)
    return ResNet("basic", [1, 1, 1, 1], [4] * 4, spatial_dims=2, n_input_channels=1, num_classes=2)


class Payload:
    """An arbitrary pickled object: unpickling it could run code (``__reduce__``)."""


def test_a_checkpoint_holding_a_pickled_object_is_refused(tmp_path):
    path = tmp_path / "teacher.pt"
    torch.save({"model": _net().state_dict(), "extra": Payload()}, path)
    with pytest.raises(CheckpointError, match=rf"checkpoint '{path}' holds pickled Python objects.*refused"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="holds pickled Python objects"):
        load_pretrained(_net(), path)
    plain = tmp_path / "plain.pkl"  # a bare pickle, not a torch file
    plain.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError, match=rf"'{plain}'"):
        load_checkpoint(plain)


def test_empty_and_truncated_checkpoints_name_the_file(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(_net().state_dict(), good)
    assert set(load_checkpoint(good)) == set(_net().state_dict())
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=rf"'{empty}' is empty \(0 bytes\)"):
        load_checkpoint(empty)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=rf"'{cut}' is truncated or not a torch file"):
        load_checkpoint(cut)
    with pytest.raises(FileNotFoundError, match="none.pt"):
        load_checkpoint(tmp_path / "none.pt")


def _torch_load_calls(path: Path) -> list[tuple[int, bool]]:
    """``(line, has weights_only=True)`` of every ``torch.load(...)`` call in a Python file."""
    calls = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load":
            if isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                           for k in node.keywords)
                calls.append((node.lineno, safe))
    return calls


def test_every_checkpoint_load_in_the_package_and_scripts_is_weights_only():
    unsafe = [f"{p.relative_to(REPO)}:{line}" for folder in ("monai_kd", "scripts") for p in (REPO / folder).rglob("*.py")
              for line, safe in _torch_load_calls(p) if not safe]
    assert unsafe == []
    assert _torch_load_calls(REPO / "monai_kd" / "networks" / "pretrained.py")  # the scan does find calls


def test_root_cause_reports_the_package_error_not_the_library_exception_beneath(tmp_path):
    try:
        try:
            try:
                raise RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory")
            except RuntimeError as library:
                raise CheckpointError("checkpoint 'models/teacher.pt' is truncated or not a torch file") from library
        except CheckpointError as clear:
            raise RuntimeError("Failed to evaluate ConfigExpression: $@train#trainer.run()") from clear
    except RuntimeError as outer:
        cause = cli.root_cause(outer)
    assert isinstance(cause, CheckpointError) and "models/teacher.pt" in str(cause)
    try:  # a chain of library errors only: the innermost, as before
        try:
            raise KeyError("image")
        except KeyError as inner:
            raise RuntimeError("Failed to instantiate") from inner
    except RuntimeError as outer:
        assert isinstance(cli.root_cause(outer), KeyError)


def test_docs_say_bundle_configs_are_code():
    for doc in (REPO / "README.md", REPO / "docs" / "reliability.md"):
        text = doc.read_text()
        assert "Bundle configs are code" in text and "weights_only=True" in text, doc
