"""The multi-teacher weighting methods of the MMKD bundle, built from one ``method`` name.

A small registry (:data:`TEACHER_METHODS`) says, for each method, what the teacher weighting is trained from and
whether the method runs MMKD's bilevel step on a held-out quiz split. The component functions below turn a bundle's
``method`` key into the pieces that depend on it, so a config names them instead of writing
``$... if @method == 'mmkd' else ...`` expressions::

    "train_datalist": {"_target_": "monai_kd.data.roles.quiz_role", "provider": "@data", "role": "train",
                       "hold_out": {"_target_": "monai_kd.engines.teacher_methods.uses_quiz", "method": "@method"}},
    "weighting": {"_target_": "monai_kd.engines.teacher_methods.method_weighting", "method": "@method",
                  "weightings": "@weightings"},
    "step": {"_target_": "monai_kd.engines.teacher_methods.method_step", "method": "@method", "step": "@train#step"}

Adding a method: register its :class:`TeacherMethod` and give the bundle's ``weightings`` a module of that name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from monai_kd.networks.meta_weight import MetaWeightNetwork

__all__ = [
    "TEACHER_METHODS",
    "TeacherMethod",
    "method_feature_weighting",
    "method_step",
    "method_weighting",
    "teacher_method",
    "uses_feature_branch",
    "uses_quiz",
    "weighting_signal",
]


@dataclass(frozen=True)
class TeacherMethod:
    """What a multi-teacher weighting method switches.

    Args:
        signal: the ``weighting_signal`` of :class:`~monai_kd.losses.MultiTeacherKDLoss` (what a learned weighting
            is trained from; fixed weightings ignore it).
        meta: the bilevel step (:class:`~monai_kd.engines.MetaWeightedStep`) on a quiz split held out of training;
            only such a method can use the intermediate-layer (feature) branch.
    """

    signal: str = "label"
    meta: bool = False


#: method name -> what it switches
TEACHER_METHODS: dict[str, TeacherMethod] = {
    "uniform": TeacherMethod(),
    "camkd": TeacherMethod(),
    "gate": TeacherMethod(signal="label"),
    "mmkd": TeacherMethod(signal="kd", meta=True),
}


def teacher_method(method: str) -> TeacherMethod:
    """The registered :class:`TeacherMethod` of ``method``.

    Raises:
        ValueError: ``method`` is not registered (the message lists the registered names).
    """
    if method not in TEACHER_METHODS:
        raise ValueError(f"method must be one of {sorted(TEACHER_METHODS)}, got {method!r}.")
    return TEACHER_METHODS[method]


def method_weighting(method: str, weightings: Mapping[str, nn.Module]) -> nn.Module:
    """The teacher weighting of ``method``: ``weightings[method]``.

    Args:
        method: a registered method name.
        weightings: one weighting module per method name.

    Raises:
        ValueError: unknown method, or no weighting of that name.
    """
    teacher_method(method)
    if method not in weightings:
        raise ValueError(f"no weighting for method {method!r}; weightings: {sorted(weightings)}.")
    return weightings[method]


def weighting_signal(method: str) -> str:
    """The ``weighting_signal`` of ``method`` (``"kd"`` for MMKD's meta-learned weights, else ``"label"``)."""
    return teacher_method(method).signal


def uses_quiz(method: str) -> bool:
    """Whether ``method`` holds a quiz split out of training (its bilevel step's outer loss)."""
    return teacher_method(method).meta


def uses_feature_branch(method: str, feature_branch: bool = True) -> bool:
    """Whether the intermediate-layer (feature) branch is on: ``feature_branch`` and a meta-learned method."""
    return bool(feature_branch) and teacher_method(method).meta


def method_step(method: str, step: Any) -> Any:
    """The trainer's step hook: ``step`` (the bilevel step) for a meta-learned method, else ``None`` (plain step)."""
    return step if teacher_method(method).meta else None


def method_feature_weighting(
    method: str,
    feature_branch: bool,
    num_teachers: int,
    num_classes: int,
    teacher_layers: Sequence[str],
    teacher_channels: Sequence[int],
    student_layer: str,
    student_channels: int,
    hidden: int = 64,
) -> MetaWeightNetwork | None:
    """The per-teacher weighting of the feature terms: a second :class:`MetaWeightNetwork` (fed with logits and
    pooled features) when :func:`uses_feature_branch`, else ``None`` (not built, so it draws no random numbers).

    Args:
        method: a registered method name.
        feature_branch: the bundle's ``feature_branch`` switch.
        num_teachers: number of teachers.
        num_classes: number of classes.
        teacher_layers: tapped layer of each teacher.
        teacher_channels: channels of each teacher's tapped layer.
        student_layer: tapped layer of the student.
        student_channels: channels of the student's tapped layer.
        hidden: hidden width of the meta-weight network.
    """
    if not uses_feature_branch(method, feature_branch):
        return None
    return MetaWeightNetwork(
        num_teachers=num_teachers,
        num_classes=num_classes,
        hidden=hidden,
        use_features=True,
        teacher_layers=teacher_layers,
        teacher_channels=teacher_channels,
        student_layer=student_layer,
        student_channels=student_channels,
    )
