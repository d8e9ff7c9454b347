"""``stage_handlers``: the handler list a bundle stage attaches, in attach order, with its settings."""

from __future__ import annotations

import torch
from ignite.engine import Engine
from monai.engines import SupervisedEvaluator
from monai.handlers import CheckpointSaver, LrScheduleHandler, StatsHandler, ValidationHandler

from monai_kd.handlers import DistillationStatsHandler, WeightAveraging, stage_handlers


def test_order_names_and_settings(tmp_path):
    net, avg = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)
    validator = SupervisedEvaluator(device="cpu", val_data_loader=[{"image": torch.zeros(1, 2), "label": torch.zeros(1)}],
                                    network=avg)
    handlers = stage_handlers("teacher_a", net, avg, scheduler, validator, str(tmp_path), swa_start_fraction=0.5,
                              val_interval=2, log_dir=str(tmp_path / "logs"), scalar_keys=["loss_domain"])
    kinds = [type(h).__name__ for h in handlers]
    assert kinds == ["WeightAveraging", "LrScheduleHandler", "ValidationHandler", "StatsHandler",
                     "DistillationStatsHandler", "ProgressBar", "CheckpointSaver"]
    wa, _, val, stats, dsh, bar, saver = handlers
    assert isinstance(wa, WeightAveraging) and wa.start_fraction == 0.5 and wa.averaged is avg
    assert isinstance(val, ValidationHandler) and val.interval == 2 and val.validator is validator
    assert isinstance(stats, StatsHandler) and stats.tag_name == "teacher_a_loss"
    assert isinstance(dsh, DistillationStatsHandler)
    assert isinstance(saver, CheckpointSaver) and saver._final_filename == "teacher_a.pt"
    trainer = Engine(lambda e, b: None)
    trainer.state.max_epochs = 4
    wa.attach(trainer)
    assert wa.start_epoch == 3  # int(4 * 0.5) + 1
    plain = stage_handlers("student_alone", net, avg, scheduler, validator, str(tmp_path), ckpt_name="alone.pt")
    assert [type(h) for h in plain][:3] == [WeightAveraging, LrScheduleHandler, ValidationHandler]
    assert len(plain) == 6 and plain[-1]._final_filename == "alone.pt"  # no per-iteration log without log_dir
