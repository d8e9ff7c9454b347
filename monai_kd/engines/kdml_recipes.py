"""Loss-term recipes for KD / ML / KD+ML with knowledge diversification (Niyaz, Sambyal and Bathula, file 002)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from monai_kd.engines.multi_student_trainer import FEATURE, LABELS, LOGIT, TASK, TEACHER, LossTerm

#: regime -> (the teacher shares knowledge with the students, the students share with each other)
REGIMES: dict[str, tuple[bool, bool]] = {"kd_off": (True, False), "kd_on": (True, False), "ml": (False, True), "kd_ml": (True, True)}

#: variant -> (kind T -> S1, kind T -> S2); table 1(a) of the paper
TEACHER_SHARING: dict[str, tuple[str, str]] = {"V1": (LOGIT, LOGIT), "V2": (FEATURE, FEATURE), "V3": (LOGIT, FEATURE)}

#: variant -> (kind S1 -> S2, kind S2 -> S1); table 1(b) of the paper
PEER_SHARING: dict[str, tuple[str, str]] = {"V1": (LOGIT, LOGIT), "V2": (FEATURE, FEATURE), "V3": (LOGIT, FEATURE)}


def kdml_teacher_mode(regime: str, kd_ml_teacher_mode: str = "online") -> str:
    """``teacher_mode`` of :class:`~monai_kd.engines.multi_student_trainer.MultiStudentTrainer` for a regime.

    ``kd_off`` -> ``"offline"``, ``kd_on`` -> ``"online"``, ``ml`` -> ``"none"``, ``kd_ml`` -> ``kd_ml_teacher_mode``.

    Args:
        regime: ``"kd_off"``, ``"kd_on"``, ``"ml"`` or ``"kd_ml"``.
        kd_ml_teacher_mode: teacher mode of the combined regime. The paper does not state it; the default
            ``"online"`` follows the KD+ML framework it builds on (Niyaz & Bathula 2021, its ref. [38]), which trains
            teacher and students together. Use ``"offline"`` for a pretrained frozen teacher.
    """
    regime = _check_choice("regime", regime.lower(), REGIMES)
    if kd_ml_teacher_mode not in ("online", "offline"):
        raise ValueError(f'kd_ml_teacher_mode must be "online" or "offline", got "{kd_ml_teacher_mode}".')
    return {"kd_off": "offline", "kd_on": "online", "ml": "none", "kd_ml": kd_ml_teacher_mode}[regime]


def kdml_terms(
    regime: str,
    variant: str,
    task_loss: Callable,
    kd_loss: Callable | None = None,
    feature_loss_factory: Callable[[], Callable] | None = None,
    student_layer: str | None = None,
    teacher_layer: str | None = None,
    ml_loss: Callable | None = None,
    peer_feature_loss_factory: Callable[[], Callable] | None = None,
    teacher_task_loss: Callable | None = None,
    students: Sequence[str] = ("s1", "s2"),
    task_weight: float = 1.0,
    teacher_weight: float = 1.0,
    peer_weight: float = 1.0,
    weights: Mapping[str, float] | None = None,
    kd_ml_teacher_mode: str = "online",
) -> list[LossTerm]:
    """Loss terms of one of the 12 regime x variant runs of "Leveraging different learning styles for improved
    knowledge distillation in biomedical imaging" (Niyaz, Sambyal, Bathula; file 002), for
    :class:`~monai_kd.engines.multi_student_trainer.MultiStudentTrainer`.

    One teacher T and two students S1, S2 of the same architecture. Every student always has its task term
    (CE for classification, Dice+focal for segmentation). Table 1 of the paper defines what is shared
    ("predictions" = logit KD / KL term, ``kind="logit"``; "features" = MSE between feature maps, ``kind="feature"``):

    ==================  ===========  ========  ==================================
    who learns          V1           V2        V3 (knowledge diversification)
    ==================  ===========  ========  ==================================
    S1 from T   (KD)    predictions  features  predictions
    S2 from T   (KD)    predictions  features  features
    S2 from S1  (ML)    predictions  features  predictions
    S1 from S2  (ML)    predictions  features  features
    ==================  ===========  ========  ==================================

    The KD rows are table 1(a) (T -> S1, T -> S2), the ML rows table 1(b) (S1 -> S2, S2 -> S1); table 1(c)
    (KD + ML) has both, so each student gets (from T, from the other student) = (predictions, predictions) in V1,
    (features, features) in V2, and one of each in V3. (The text copy of table 1 lost the arrows/subscripts; the
    V3 assignment follows tables 1(a), 1(b), the abstract and Sec. 3.1.)

    So in V3 KD+ML, S1 learns from the teacher's predictions and S2's features, S2 from the teacher's features
    and S1's predictions: "the teacher shares final predictions with one student and intermediate layer features
    with another. Similarly, in the ML framework, students engage in information exchange, sharing predictions
    and intermediate-layer features with one another" (Sec. 3.1). KD+ML uses the union of the KD and ML terms of
    the same variant ("using Equations 6 and 7, we can derive the loss functions for KD-only and ML-only ... by
    setting" the ML or KD weights to zero, Sec. 3.2). The regimes differ only in the teacher:

    - ``"kd_off"``: KD (off), pretrained frozen teacher (trainer ``teacher_mode="offline"``);
    - ``"kd_on"``: KD (on), teacher trained at the same time with its own task term (``"online"``);
    - ``"ml"``: ML, two students and no teacher (``"none"``);
    - ``"kd_ml"``: KD + ML, teacher mode ``kd_ml_teacher_mode`` (see :func:`kdml_teacher_mode`).

    Term names are ``<learner>_task`` and ``<learner>_<source>_<kind>``, e.g. ``s1_task``, ``s1_teacher_logit``,
    ``s2_teacher_feature``, ``s2_s1_logit``, ``s1_s2_feature``, ``teacher_task``; the trainer logs ``loss_<name>``.
    The features are, as in the paper, the last convolutional block for classification and the first decoder
    block of a U-Net for segmentation: pass those layer names.

    Args:
        regime: ``"kd_off"``, ``"kd_on"``, ``"ml"`` or ``"kd_ml"``.
        variant: ``"V1"`` (predictions), ``"V2"`` (features) or ``"V3"`` (diversified).
        task_loss: supervised loss for the students, e.g. ``CrossEntropyLoss`` or MONAI's ``DiceFocalLoss``.
        kd_loss: teacher -> student prediction loss, e.g. :class:`monai_kd.losses.KDLoss` (paper: KL, tau = 2).
        feature_loss_factory: called once per teacher -> student feature term to build a fresh loss, e.g.
            ``{"_target_": "monai_kd.losses.FeatureKDLoss", "_mode_": "callable", ...}``; one call per term so that
            each pair gets its own trainable connector.
        student_layer: student layer whose output is shared/compared (students share an architecture).
        teacher_layer: teacher layer whose output is shared.
        ml_loss: student <-> student prediction loss; default ``kd_loss``
            (e.g. :class:`monai_kd.losses.MutualLearningLoss`).
        peer_feature_loss_factory: like ``feature_loss_factory`` for student <-> student feature terms;
            default ``feature_loss_factory``.
        teacher_task_loss: task loss of the online teacher; default ``task_loss``.
        students: the two student names, (S1, S2).
        task_weight: weight of every task term.
        teacher_weight: weight of every teacher -> student term.
        peer_weight: weight of every student -> student term.
        weights: per-term weights by term name, overriding the three above (the paper grid-searches a weight
            per term); names must be ones this function can produce for ``students``.
        kd_ml_teacher_mode: ``"online"`` or ``"offline"`` teacher for ``regime="kd_ml"``.

    Raises:
        ValueError: unknown regime or variant, missing losses/layers for the requested terms, or an unknown
            name in ``weights``.
    """
    regime = _check_choice("regime", regime.lower(), REGIMES)
    variant = _check_choice("variant", variant.upper(), TEACHER_SHARING)
    if len(students) != 2 or len(set(students)) != 2:
        raise ValueError(f"kdml_terms needs exactly two distinct student names (S1, S2), got {list(students)}.")
    teacher_shares, peers_share = REGIMES[regime]
    online = teacher_shares and kdml_teacher_mode(regime, kd_ml_teacher_mode) == "online"
    ml_loss = kd_loss if ml_loss is None else ml_loss
    peer_feature_loss_factory = peer_feature_loss_factory or feature_loss_factory
    s1, s2 = students

    # (learner, source, kind, group weight); the kinds come from table 1 of the paper
    links: list[tuple[str, str, str, float]] = []
    if teacher_shares:
        links += [(s, TEACHER, k, teacher_weight) for s, k in zip(students, TEACHER_SHARING[variant])]
    if peers_share:
        to_s2, to_s1 = PEER_SHARING[variant]
        links += [(s1, s2, to_s1, peer_weight), (s2, s1, to_s2, peer_weight)]

    terms = [LossTerm(f"{s}_task", s, TASK, task_loss, LABELS, weight=task_weight) for s in students]
    if online:
        terms.append(LossTerm(f"{TEACHER}_task", TEACHER, TASK, teacher_task_loss or task_loss, LABELS, weight=task_weight))
    for learner, source, kind, weight in links:
        name = f"{learner}_{source}_{kind}"
        if kind == LOGIT:
            loss = kd_loss if source == TEACHER else ml_loss
            if loss is None:
                raise ValueError(f'{regime} {variant} shares predictions ("{name}") but kd_loss is not given.')
            terms.append(LossTerm(name, learner, LOGIT, loss, source, weight=weight))
        else:
            factory = feature_loss_factory if source == TEACHER else peer_feature_loss_factory
            source_layer = teacher_layer if source == TEACHER else student_layer
            if factory is None or not student_layer or not source_layer:
                raise ValueError(
                    f'{regime} {variant} shares features ("{name}"): give feature_loss_factory, student_layer'
                    + (" and teacher_layer." if source == TEACHER else ".")
                )
            terms.append(LossTerm(name, learner, FEATURE, factory(), source, student_layer, source_layer, weight))

    if weights:
        possible = {f"{s}_task" for s in (*students, TEACHER)}
        possible |= {f"{s}_{TEACHER}_{k}" for s in students for k in (LOGIT, FEATURE)}
        possible |= {f"{a}_{b}_{k}" for a, b in ((s1, s2), (s2, s1)) for k in (LOGIT, FEATURE)}
        unknown = sorted(set(weights) - possible)
        if unknown:
            raise ValueError(f"unknown term name(s) in weights: {unknown}; possible: {sorted(possible)}.")
        for term in terms:
            term.weight = float(weights.get(term.name, term.weight))
    return terms


def _check_choice(what: str, value: str, choices: Mapping[str, object]) -> str:
    if value not in choices:
        raise ValueError(f'unknown {what} "{value}"; choose one of {sorted(choices)}.')
    return value
