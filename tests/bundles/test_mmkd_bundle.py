"""The MMKD bundle run in-process on real data with tiny overrides: every stage, every weighting, 3D, evaluate."""

from __future__ import annotations

import json

import pytest
import torch

import monai_kd.data
from monai.bundle import ConfigParser, run

from conftest import REPO, load_script

BUNDLE = REPO / "bundles" / "mmkd"
CONFIG = str(BUNDLE / "configs" / "train.json")
META = str(BUNDLE / "configs" / "metadata.json")
TINY = {  # a fifth of BreastMNIST's training split, one short epoch: wiring, not accuracy
    "full_train_datalist": "$monai_kd.data.medmnist_datalist(@dataset_dir, 'train', @dataset_file, fraction=0.2)",
    "teacher_epochs": 1,
    "max_epochs": 1,
    "batch_size": 32,
    "quiz_batch_size": 16,
}


def _run(stage: str, root, dataset_dir, config=CONFIG, **override):
    run(stage, config_file=config, meta_file=META, bundle_root=str(root), dataset_dir=str(dataset_dir), **override)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """Teachers, student alone and the MMKD student (logit + feature branches) on real BreastMNIST."""
    root = tmp_path_factory.mktemp("mmkd")
    _run("run", root, data_dir / "breastmnist", **TINY)
    return root


def test_train_writes_every_checkpoint(trained):
    names = sorted(p.name for p in (trained / "models").iterdir())
    assert names == ["model.pt", "student_alone.pt", "teachers.pt"]
    teachers = torch.load(trained / "models" / "teachers.pt", weights_only=True)
    assert {k.split(".")[0] for k in teachers} == {"resnet", "densenet", "cnn"}
    assert torch.load(trained / "models" / "model.pt", weights_only=True)["fc.weight"].shape == (2, 64)


def test_evaluate_reports_teachers_and_students_on_test_split(trained, data_dir):
    _run("run", trained, data_dir / "breastmnist", config=[CONFIG, str(BUNDLE / "configs" / "evaluate.json")], **TINY)
    metrics = json.loads((trained / "eval" / "metrics.json").read_text())
    assert set(metrics) == {"teacher_resnet", "teacher_densenet", "teacher_cnn", "student_alone", "student_mmkd"}
    for entry in metrics.values():
        assert 0.0 <= entry["test_auc"] <= 1.0 and 0.0 <= entry["test_acc"] <= 1.0 and entry["test_nll"] > 0.0
    assert metrics["student_mmkd"]["parameters"] * 20 <= 11_172_162  # at most 1/20 of ResNet-18
    # the model card comes from this evaluation's per-sample predictions
    card = json.loads((trained / "eval" / "model_card.json").read_text())
    assert set(card["models"]) == set(metrics) and card["models"]["student_mmkd"]["role"] == "student"
    test = card["models"]["student_mmkd"]["test"]
    assert test["samples"] == 156 and test["accuracy"]["value"] == pytest.approx(metrics["student_mmkd"]["test_acc"], abs=1e-6)
    assert test["auc"]["ci95"][0] <= test["auc"]["value"] <= test["auc"]["ci95"][1]
    assert card["training_data"]["splits"]["test"]["images"] == 156 and "CC BY 4.0" in card["licence"]["training_data"]
    assert card["input_contract"]["modality"] == ["DX", "CR"] and card["card_version"].startswith("0.1.0+card.")


def test_evaluate_on_the_validation_split(trained, data_dir):
    """``--eval_split val``: every model on the validation split into ``eval/val_metrics.json``, no model card."""
    _run("run", trained, data_dir / "breastmnist", config=[CONFIG, str(BUNDLE / "configs" / "evaluate.json")],
         eval_split="val", output_dir=str(trained / "eval_val"), **TINY)
    metrics = json.loads((trained / "eval_val" / "val_metrics.json").read_text())
    assert set(metrics) == {"teacher_resnet", "teacher_densenet", "teacher_cnn", "student_alone", "student_mmkd"}
    assert len(json.loads((trained / "eval_val" / "val_predictions.json").read_text())["student_alone"]["labels"]) == 78
    assert not (trained / "eval_val" / "model_card.json").exists()


@pytest.mark.parametrize("checkpoint, member", [("teachers.pt", "cnn"), ("teachers.pt", ["resnet", "densenet", "cnn"]),
                                               ("student_alone.pt", None), ("model.pt", None)])
def test_evidence_scores_through_evaluate_json_as_in_process(trained, tmp_path, data_dir, checkpoint, member):
    """``scripts/mmkd_evidence.py`` scores one checkpoint with ``evaluate.json`` (``run_checkpoint``; a teacher by
    ``--eval_network @teachers --eval_member NAME``): the record fields it always had, equal to the scores the
    script computed in-process before (logits of the network on the MedMNIST split, ``classification_scores``)."""
    import numpy as np

    from monai_kd.evidence.evaluate import classification_scores, predict_logits
    from monai_kd.networks import load_pretrained, member_name, select_member

    ev = load_script("mmkd_evidence")
    ckpt = trained / "models" / checkpoint
    got = (ev._evaluate("breastmnist", tmp_path, ckpt, "@teachers", member) if member
           else ev._evaluate("breastmnist", tmp_path, ckpt, student="large"))
    assert list(got) == ["accuracy", "auc", "test_nll", "val_accuracy", "val_auc", "val_nll", "parameters"]
    committed = json.loads((BUNDLE / "docs" / "results.json").read_text())
    assert list(got) == list(committed["teachers"]["breastmnist"]["resnet"])  # the fields of the records on file
    parser = ConfigParser()
    parser.read_config(CONFIG)
    if member:  # a teacher, or the uniform mixture of the three (what the teacher check scores besides each)
        net = select_member(load_pretrained(parser.get_parsed_content("teachers"), ckpt), member)
    else:
        net = load_pretrained(parser.get_parsed_content("network_def"), ckpt)
    for split, names in (("test", ("accuracy", "auc", "test_nll")), ("val", ("val_accuracy", "val_auc", "val_nll"))):
        items = monai_kd.data.medmnist_datalist(data_dir / "breastmnist", split)
        x = torch.as_tensor(np.stack([i["image"] for i in items]))
        y = torch.as_tensor(np.array([i["label"] for i in items]))
        expected = classification_scores(predict_logits(net, x, 256), y)
        for name, metric in zip(names, ("accuracy", "auc", "nll")):
            assert got[name] == pytest.approx(expected[metric], abs=1e-5), (split, name)
    assert got["parameters"] == sum(p.numel() for p in net.parameters())
    name = member_name(member, ckpt)
    assert set(json.loads((tmp_path / "eval" / "val_metrics.json").read_text())) == {name}
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())[name]["test_nll"] == got["test_nll"]

def test_evidence_int8_scores_a_recorded_student_beside_its_fp32_model(trained, tmp_path, data_dir):
    """``scripts/mmkd_evidence.py --int8``: a recorded student's checkpoint, exported and quantised to int8 (ONNX
    Runtime, static), is scored on the test split beside its fp32 model by the same code; the fp32 scores are those of
    the network itself; a run whose checkpoint is gone is skipped (logged), and nothing is scored twice."""
    import shutil

    import numpy as np

    from monai_kd.evidence.evaluate import classification_scores, predict_logits
    from monai_kd.networks import load_pretrained

    ev = load_script("mmkd_evidence")
    work, out = tmp_path / "work", tmp_path / "out"
    root = ev.student_root(work, "breastmnist", 0, "large", "mmkd_logits_features")
    (root / "models").mkdir(parents=True)
    shutil.copy(trained / "models" / "model.pt", root / "models" / "model.pt")
    run0 = {"dataset": "breastmnist", "student": "large", "method": "mmkd_logits_features", "seed": 0,
            "accuracy": 0.8, "auc": 0.8}
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"runs": [run0, {**run0, "seed": 1}]}))  # seed 1: no checkpoint
    evidence = ev.Evidence(work, out / "results.json", out / "README.md", out / "w.png", tmp_path / "none.json", 1)
    assert evidence.quantize(["breastmnist"], ["large"], ["mmkd_logits_features"], [0, 1]) == 1
    entry = evidence.results["int8"]["breastmnist/large/mmkd_logits_features/0"]
    parser = ConfigParser()
    parser.read_config(CONFIG)
    net = load_pretrained(parser.get_parsed_content("network_def"), root / "models" / "model.pt")
    items = monai_kd.data.medmnist_datalist(data_dir / "breastmnist", "test")
    x = torch.as_tensor(np.stack([i["image"] for i in items]))
    y = torch.as_tensor(np.array([i["label"] for i in items])).reshape(-1)
    expected = classification_scores(predict_logits(net, x), y)
    assert entry["fp32_auc"] == pytest.approx(expected["auc"], abs=1e-6)
    assert entry["fp32_accuracy"] == pytest.approx(expected["accuracy"], abs=1e-6)
    assert (root / "onnx" / "model_int8.onnx").is_file() and entry["recorded_auc"] == 0.8
    # int8 is a different model (not the fp32 one scored twice), but close to it
    assert entry["test_nll"] != entry["fp32_test_nll"]
    assert entry["agreement"] >= 0.9 and abs(entry["auc"] - entry["fp32_auc"]) < 0.03
    assert evidence.quantize(["breastmnist"], ["large"], ["mmkd_logits_features"], [0, 1]) == 0
    assert json.loads((out / "results.json").read_text())["int8"].keys() == {"breastmnist/large/mmkd_logits_features/0"}
    lines = ev._int8_lines("breastmnist", evidence.results["int8"], None)
    assert lines[-1].startswith("| large | mmkd_logits_features | 1 | ") and "(1 seed)" in lines[-1]


def _trainer(data_dir, **override):
    parser = ConfigParser()
    parser.read_config(CONFIG)
    parser.update({"bundle_root": "/nonexistent", "dataset_dir": str(data_dir / "breastmnist"), **TINY, **override})
    return parser


@pytest.mark.parametrize("method", ["uniform", "camkd", "gate", "mmkd"])
def test_every_weighting_runs_one_distillation_epoch(trained, data_dir, method):
    parser = _trainer(data_dir, method=method, feature_branch=False, ckpt_dir=str(trained / "models"))
    parser.update({"train#trainer#train_handlers": "$@train#handlers[:1]"})  # load the fixture's teachers only
    trainer = parser.get_parsed_content("train#trainer")
    trainer.run()
    out = trainer.state.output[0]
    assert out["teacher_weights"].shape == (3,) and torch.isclose(out["teacher_weights"].sum(), torch.tensor(1.0))
    assert ("loss_quiz" in out) == (method == "mmkd") and "loss_feature" not in out
    n_train = len(parser.get_parsed_content("train_datalist"))
    n_all = len(parser.get_parsed_content("full_train_datalist"))
    assert (n_train < n_all) == (method == "mmkd")  # only MMKD holds the quiz role out of the student's loss


def test_quiz_role_is_disjoint_from_the_student_training_data(data_dir):
    parser = _trainer(data_dir)
    train = {it["index"] for it in parser.get_parsed_content("train_datalist")}
    quiz = {it["index"] for it in parser.get_parsed_content("quiz_datalist")}
    assert quiz and not train & quiz


def test_quiz_list_of_a_users_datalist_is_the_bundles_quiz(tmp_path, data_dir):
    """``--datalist my.json`` with a ``quiz`` list: those items (disjoint from training) are the quiz role."""
    from PIL import Image

    items = monai_kd.data.medmnist_datalist(data_dir / "breastmnist", "train")[:24]
    (tmp_path / "img").mkdir()
    entries = []
    for k, it in enumerate(items):
        Image.fromarray((it["image"][0] * 255).round().astype("uint8")).save(tmp_path / "img" / f"{k}.png")
        entries.append({"image": f"img/{k}.png", "label": int(it["label"])})
    datalist = tmp_path / "my.json"
    datalist.write_text(json.dumps({"training": entries[:16], "quiz": entries[16:20], "validation": entries[20:],
                                    "test": entries[20:]}))
    parser = _trainer(data_dir, datalist=str(datalist))
    parser.update({"full_train_datalist": {"_target_": "monai_kd.data.role_items", "provider": "@data", "role": "train"}})
    names = {key: [it["path"].rsplit("/", 1)[-1] for it in parser.get_parsed_content(key)]
             for key in ("quiz_datalist", "train_datalist")}
    assert names["quiz_datalist"] == ["16.png", "17.png", "18.png", "19.png"]
    assert names["train_datalist"] == [f"{k}.png" for k in range(16)]
    assert parser.get_parsed_content("quiz_datalist")[0]["image"].shape == (1, 28, 28)


@pytest.mark.slow
def test_3d_configuration_runs_every_stage_on_adrenalmnist3d(tmp_path, data_dir):
    tiny_3d = {**TINY, "batch_size": 8, "quiz_batch_size": 8,
               "full_train_datalist": "$monai_kd.data.medmnist_datalist(@dataset_dir, 'train', @dataset_file, fraction=0.05)"}
    run("run", config_file=[CONFIG, str(BUNDLE / "configs" / "train_3d.json")], meta_file=META,
        bundle_root=str(tmp_path), **tiny_3d)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["model.pt", "student_alone.pt", "teachers.pt"]


def test_evidence_teacher_check_and_timing_from_records():
    ev = load_script("mmkd_evidence")
    rec = dict(dataset="breastmnist", seed=0, accuracy=0.8, auc=0.85)
    results = {
        "runs": [
            {**rec, "student": "small", "method": "student_alone", "val_accuracy": 0.80, "val_auc": 0.85, "val_nll": 0.40},
            {**rec, "student": "large", "method": "student_alone", "val_accuracy": 0.82, "val_auc": 0.84, "val_nll": 0.45},
            {**rec, "student": "small", "method": "uniform", "seconds_per_iteration": 0.2},
            {**rec, "student": "small", "method": "mmkd_logits", "seconds_per_iteration": 0.5},
        ],
        "teachers": {"breastmnist": {
            "good": {"val_accuracy": 0.9, "val_auc": 0.9, "val_nll": 0.3},
            "overconfident": {"val_accuracy": 0.9, "val_auc": 0.9, "val_nll": 0.5},
        }},
    }
    check = ev.teacher_check(results)["breastmnist"]
    assert check["best_student_alone"] == {"val_accuracy": 0.82, "val_auc": 0.85, "val_nll": 0.40}
    assert check["teacher_better"]["good"] == {"val_accuracy": True, "val_auc": True, "val_nll": True}
    assert check["teacher_better"]["overconfident"]["val_nll"] is False and check["teachers_better"] is False
    assert ev.timing(results) == {"breastmnist/small/mmkd_logits": pytest.approx(2.5)}


@pytest.mark.slow
def test_evidence_script_records_the_issue_keys_and_resumes(tmp_path, data_dir):
    ev = load_script("mmkd_evidence")
    args = ["--datasets", "breastmnist", "--students", "small", "--methods", "student_alone", "mmkd_logits_features",
            "--seeds", "0", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"),
            "--breast-student-epochs", "1", "--teacher-recipes", "legacy_e20", "stem1bn_e20", "--set", "teacher_epochs=1",
            'full_train_datalist="$monai_kd.data.medmnist_datalist(@dataset_dir, \'train\', @dataset_file, fraction=0.2)"']
    ev.main(args)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(r["method"], r["seed"]) for r in results["runs"]] == [("student_alone", 0), ("mmkd_logits_features", 0)]
    for r in results["runs"]:
        assert {"dataset", "student", "method", "seed", "accuracy", "auc"} <= set(r)
    assert set(results["runs"][1]["weights"]) == {"resnet", "densenet", "cnn"}
    assert "breastmnist" in results["teachers"] and (tmp_path / "out" / "mmkd_weights.png").is_file()
    # the teacher recipe is chosen on mean validation NLL, every candidate's validation metrics kept; the students
    # were built with the chosen recipe's teacher architecture (else its checkpoint would not have loaded)
    selection = results["selection"]["breastmnist/teacher_recipe"]
    nll = {r: sum(t["val_nll"] for t in v.values()) / 3 for r, v in selection["validation"].items()}
    assert set(nll) == {"legacy_e20", "stem1bn_e20"} and selection["chosen"] == min(nll, key=nll.get)
    assert nll == pytest.approx(selection["mean_val_nll"])
    assert selection["recipes"]["legacy_e20"]["teachers_def#resnet#conv1_t_stride"] == 2
    assert results["teachers"]["breastmnist"]["cnn"]["val_nll"] == selection["validation"][selection["chosen"]]["cnn"]["val_nll"]
    assert "student_alone" in (tmp_path / "out" / "README.md").read_text()
    ev.main(args)  # resumed: nothing retrained, nothing duplicated
    again = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["seconds"] for r in again["runs"]] == [r["seconds"] for r in results["runs"]]


def test_evidence_prints_every_teacher_recipe_with_its_validation_numbers():
    ev = load_script("mmkd_evidence")
    val = lambda nll: {"val_nll": nll, "val_auc": 0.9, "val_accuracy": 0.85}  # noqa: E731
    selection = {"chosen": "b", "mean_val_nll": {"a": 0.4, "b": 0.3},
                 "recipes": {"a": {"teachers_def#resnet#conv1_t_stride": 2, "teacher_epochs": 20}, "b": {"teacher_epochs": 20}},
                 "validation": {"a": {"resnet": val(0.5), "cnn": val(0.3)}, "b": {"resnet": val(0.25), "cnn": val(0.35)}}}
    lines = ev._recipe_lines(selection)
    assert "**b**" in lines[1]
    assert lines[3] == "| recipe | overrides | mean val NLL | resnet val NLL / AUC / ACC | cnn val NLL / AUC / ACC |"
    assert lines[5] == "| a | `resnet#conv1_t_stride=2`, `teacher_epochs=20` | 0.400 | 0.500 / 0.900 / 0.850 | 0.300 / 0.900 / 0.850 |"
    assert ev._recipe_lines(None) == []
    for recipe, overrides in ev.TEACHER_RECIPES.items():  # every recipe is a set of keys the bundle has
        assert all(k.split("#")[0] in json.loads((BUNDLE / "configs" / "train.json").read_text()) for k in overrides), recipe
    for dataset, grid in ev.TEACHER_RECIPE_GRID.items():
        assert set(grid) <= set(ev.TEACHER_RECIPES), dataset


@pytest.mark.parametrize("dataset, files, recipe", [
    ("pneumoniamnist", ["train.json"], "stem1bn_e12"),
    ("breastmnist", ["train.json", "train_breastmnist.json"], "stem1bn_e20_lr1e3"),
])
def test_bundle_defaults_are_the_chosen_teacher_recipes(dataset, files, recipe):
    """The recipes the validation search chose (README's generated tables) are what the bundle trains by default."""
    ev = load_script("mmkd_evidence")
    assert recipe in ev.TEACHER_RECIPE_GRID[dataset]
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / f) for f in files])
    for key, value in ev.TEACHER_RECIPES[recipe].items():
        assert parser.get_parsed_content(key) == value, key


def test_records_of_the_legacy_teachers_are_never_resumed():
    ev = load_script("mmkd_evidence")
    run = {"dataset": "breastmnist", "student": "small", "method": "uniform", "seed": 0}
    legacy = {"runs": [run], "selection": {"breastmnist/teacher_epochs": {"chosen": 20}}}
    assert "legacy teachers" in ev.stale_records(legacy, ["breastmnist"])
    assert ev.stale_records(legacy, ["pneumoniamnist"]) is None  # no records of that dataset
    fresh = {"runs": [run], "selection": {"breastmnist/teacher_recipe": {"chosen": "stem1bn_e20_lr1e3"}}}
    assert ev.stale_records(fresh, ["breastmnist"]) is None
    # the records of the first round (moved aside) predate the recipe search: resuming from them must stop
    committed = json.loads((REPO / "bundles" / "mmkd" / "docs" / "results_legacy_teachers.json").read_text())
    assert ev.stale_records(committed, ["breastmnist", "pneumoniamnist"]) is not None
