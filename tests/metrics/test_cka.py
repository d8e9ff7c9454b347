from __future__ import annotations

import math

import pytest
import torch

from monai_kd.metrics.cka import cka_matrix, linear_cka, save_cka_heatmap


def _features(n: int = 12, p: int = 6) -> torch.Tensor:
    """Deterministic, non-degenerate representation ``(n, p)``: sines of different frequencies and phases."""
    i = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    j = torch.arange(p, dtype=torch.float64).unsqueeze(0)
    return torch.sin(0.7 * i * (j + 1) + j) + 0.1 * j


def _householder(p: int) -> torch.Tensor:
    """Orthogonal reflection ``I - 2 v v^T / v^T v``."""
    v = torch.arange(1, p + 1, dtype=torch.float64).unsqueeze(1)
    return torch.eye(p, dtype=torch.float64) - 2 * v @ v.T / (v.T @ v)


def _rotation(p: int, angle: float = 0.6) -> torch.Tensor:
    """Orthogonal product of Givens rotations in planes (0, 1), (1, 2), ..."""
    q = torch.eye(p, dtype=torch.float64)
    c, s = math.cos(angle), math.sin(angle)
    for k in range(p - 1):
        g = torch.eye(p, dtype=torch.float64)
        g[k, k], g[k, k + 1], g[k + 1, k], g[k + 1, k + 1] = c, -s, s, c
        q = q @ g
    return q


def test_cka_of_a_representation_with_itself_is_one():
    x = _features()
    assert linear_cka(x, x).item() == pytest.approx(1.0, abs=1e-12)
    fmap = x.reshape(12, 1, 2, 3)  # feature maps are flattened per sample
    assert linear_cka(fmap, x).item() == pytest.approx(1.0, abs=1e-12)


def test_hand_computed_one_dimensional_case_is_squared_correlation():
    # centred x = (-1.5, -0.5, 0.5, 1.5), centred y = (-1.5, 0.5, -0.5, 1.5): x.y = 4, |x|^2 = |y|^2 = 5
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    y = torch.tensor([[1.0], [3.0], [2.0], [4.0]])
    assert linear_cka(x, y).item() == pytest.approx((4 / 5) ** 2)


def test_invariant_to_orthogonal_transforms_and_isotropic_scaling():
    x, y = _features(), _features(12, 4)[:, [2, 0, 3, 1]] ** 3
    reference = linear_cka(x, y).item()
    assert 0.05 < reference < 0.95  # a non-trivial value, so invariance is not vacuous
    for q in (_householder(6), _rotation(6)):
        assert torch.allclose(q.T @ q, torch.eye(6, dtype=torch.float64))
        assert linear_cka(x @ q, y).item() == pytest.approx(reference, abs=1e-10)
    assert linear_cka(3.5 * x, 0.2 * y).item() == pytest.approx(reference, abs=1e-10)
    assert linear_cka(x + 7.0, y).item() == pytest.approx(reference, abs=1e-10)  # centring


def test_not_invariant_to_a_non_orthogonal_transform():
    x, y = _features(), _features(12, 4) ** 3
    anisotropic = torch.diag(torch.tensor([1.0, 10.0, 0.1, 1.0, 5.0, 0.5], dtype=torch.float64))
    assert abs(linear_cka(x @ anisotropic, y).item() - linear_cka(x, y).item()) > 1e-3
    assert linear_cka(x, x @ anisotropic).item() < 1 - 1e-3


def test_cka_matrix_and_errors():
    x, y = _features(), _features(12, 3)
    m = cka_matrix({"a": x, "b": y}, {"c": y, "d": x, "e": x * 2})
    assert m.shape == (2, 3)
    assert m[0, 1].item() == pytest.approx(1.0) and m[1, 0].item() == pytest.approx(1.0)
    assert m[0, 0].item() == pytest.approx(linear_cka(x, y).item())
    assert math.isnan(linear_cka(torch.ones(4, 3), x[:4]).item())  # constant features: undefined
    with pytest.raises(ValueError, match="same samples"):
        linear_cka(x, y[:5])
    with pytest.raises(ValueError, match="same samples"):
        cka_matrix({"a": x}, {"b": y[:5]})


def test_heatmap_is_a_png_written_atomically(tmp_path):
    pytest.importorskip("matplotlib")  # optional dependency ("plots" extra)
    path = tmp_path / "plots" / "cka.png"
    m = torch.tensor([[1.0, 0.2, float("nan")], [0.5, 0.9, 0.1]])
    assert save_cka_heatmap(m, ["t1", "t2"], ["s1", "s2", "s3"], path, title="teacher vs s1") == str(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["cka.png"]
    with pytest.raises(ValueError, match="does not match"):
        save_cka_heatmap(m, ["t1"], ["s1"], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
