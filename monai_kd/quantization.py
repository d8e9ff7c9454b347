"""Int8 students: ONNX export, ONNX Runtime post-training quantisation, ONNX models as torch modules, and
quantisation-aware training (a fake-quantised student the teacher can supervise).

Post-training: :func:`export_onnx` writes the fp32 student, :func:`quantize_onnx` turns it into an int8 ONNX model
with ONNX Runtime's ``quantize_static`` (activation ranges calibrated on real training images, QDQ format, int8
per-channel weights) or ``quantize_dynamic`` (weights only). :class:`OnnxNetwork` runs either file where a MONAI
inferer expects a ``torch.nn.Module`` (``monai-kd infer-dicom --ckpt_file model_int8.onnx``).

Quantisation-aware distillation: :func:`fake_quantized` inserts fake-quantisation (PyTorch FX graph mode QAT,
conv-bn-relu fused) into the student, so the KD loss is computed on the outputs of the int8-rounded student and its
weights learn to survive rounding. A config switch (``qat`` in ``student_qat.json``) wraps the bundle's student
with it; :func:`strip_fake_quant` gives back a float network with the QAT-trained (BatchNorm-folded) weights, which
is exported and quantised by :func:`quantize_onnx` like any other student.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = [
    "OnnxNetwork",
    "bundle_calibration_images",
    "calibration_images",
    "export_onnx",
    "fake_quantized",
    "has_fake_quant",
    "quantize_onnx",
    "strip_fake_quant",
]


def export_onnx(net: nn.Module, input_shape: Sequence[int], path: str | os.PathLike, opset: int = 17) -> str:
    """Export ``net`` (eval mode, CPU) to ONNX with a dynamic batch axis, input ``image``, output ``pred``.

    Args:
        net: the network.
        input_shape: channels and spatial shape of one image, e.g. ``(1, 28, 28)``.
        path: the ONNX file to write.
        opset: ONNX opset.

    Returns:
        ``path`` as a string.
    """
    net = net.cpu().eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (torch.zeros(1, *input_shape),), str(path), dynamo=False, opset_version=opset,
            input_names=["image"], output_names=["pred"], dynamic_axes={"image": {0: "batch"}, "pred": {0: "batch"}},
        )
    return str(path)


class _Batches:
    """ONNX Runtime ``CalibrationDataReader`` over an array of images, in batches."""

    def __init__(self, images: np.ndarray, batch_size: int = 64) -> None:
        self.batches = iter([{"image": images[i : i + batch_size]} for i in range(0, len(images), batch_size)])

    def get_next(self) -> dict | None:  # noqa: D102
        return next(self.batches, None)


def quantize_onnx(
    model: str | os.PathLike,
    output: str | os.PathLike,
    calibration: np.ndarray | None = None,
    mode: str = "static",
    per_channel: bool = True,
) -> str:
    """Int8 post-training quantisation of an ONNX model with ONNX Runtime.

    Args:
        model: the fp32 ONNX file (input ``image``).
        output: the int8 ONNX file to write.
        calibration: ``(N, C, *spatial)`` float32 images the activation ranges are calibrated on (real training
            images, preprocessed as in training; a few hundred suffice); required for ``mode="static"``.
        mode: ``"static"`` (weights and activations int8, QDQ format, MinMax calibration) or ``"dynamic"``
            (weights int8, activations quantised at run time).
        per_channel: int8 scales per output channel of each weight (static mode).

    Returns:
        ``output`` as a string.

    Raises:
        ValueError: for an unknown ``mode`` or static mode without calibration images.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if mode not in ("static", "dynamic"):
        raise ValueError(f'quantisation mode must be "static" or "dynamic", got "{mode}".')
    output = Path(output)
    prepared = output.with_name(output.stem + ".prep.onnx")
    quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)  # fold constants, infer shapes
    try:
        if mode == "dynamic":
            quantize_dynamic(str(prepared), str(output), weight_type=QuantType.QInt8)
        else:
            if calibration is None or len(calibration) == 0:
                raise ValueError("static quantisation needs calibration images (real training images).")
            quantize_static(
                str(prepared), str(output), _Batches(np.ascontiguousarray(calibration, dtype=np.float32)),
                quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                per_channel=per_channel,
            )
    finally:
        prepared.unlink(missing_ok=True)
    return str(output)


class OnnxNetwork(nn.Module):
    """An ONNX model (fp32 or int8) run by ONNX Runtime on CPU, usable wherever a MONAI inferer takes a network.

    Args:
        path: the ONNX file; its first input is fed the image batch, its first output is returned.
        threads: ONNX Runtime intra-op threads (``0``: its default).
    """

    def __init__(self, path: str | os.PathLike, threads: int = 0) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.path = str(path)
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        array = x.detach().cpu().numpy().astype(np.float32, copy=False)
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0]).to(x.device)


def _qat_qconfig_mapping():
    """Per-tensor uint8 activations and per-channel int8 weights with plain ``FakeQuantize`` (exportable ranges)."""
    from torch.ao.quantization import FakeQuantize, MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver
    from torch.ao.quantization import QConfig, QConfigMapping

    activation = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                                        dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    weight = FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127,
                                    dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    return QConfigMapping().set_global(QConfig(activation=activation, weight=weight))


def fake_quantized(net: nn.Module, enabled: bool = True, input_shape: Sequence[int] = (1, 28, 28)) -> nn.Module:
    """Insert int8 fake quantisation into ``net`` for quantisation-aware training (PyTorch FX graph mode).

    Conv-BatchNorm-ReLU triples are fused into QAT modules (BatchNorm folded into the quantised weights), weights are
    fake-quantised to int8 per output channel and activations to uint8 per tensor, with moving-average min/max
    ranges. The result is an ``nn.Module`` (a ``GraphModule``) trained like the original; two calls on networks of
    the same architecture give the same state-dict keys, so weight averaging and checkpoints work unchanged.

    Args:
        net: the float student (e.g. :class:`monai_kd.networks.FastStudent`).
        enabled: ``False`` returns ``net`` unchanged (the config switch).
        input_shape: channels and spatial shape of one image, for tracing.

    Returns:
        The fake-quantised network (or ``net`` when not ``enabled``).
    """
    if not enabled:
        return net
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        qat = prepare_qat_fx(net.train(), _qat_qconfig_mapping(), (torch.zeros(2, *input_shape),))
    with torch.no_grad():  # size the per-channel weight ranges now (as a first forward would), so that state dicts of
        for module in qat.modules():  # trained and fresh networks have the same shapes
            fake_quant = getattr(module, "weight_fake_quant", None)
            if fake_quant is not None and isinstance(getattr(module, "weight", None), torch.Tensor):
                fake_quant(module.weight)
    return qat


def has_fake_quant(net: nn.Module) -> bool:
    """Whether ``net`` holds fake-quantisation modules (a QAT network)."""
    from torch.ao.quantization import FakeQuantizeBase

    return any(isinstance(m, FakeQuantizeBase) for m in net.modules())


@torch.no_grad()
def strip_fake_quant(qat_net: nn.Module, float_net: nn.Module) -> nn.Module:
    """Copy a QAT network's weights into a float network of the same architecture, BatchNorm left unfolded.

    The fused QAT modules keep the original convolution weight and a ``bn`` submodule, so the float network's
    state dict is recovered by renaming; fake-quantisation buffers are dropped. The float network is then exported
    and quantised (:func:`quantize_onnx`) like a student trained without QAT.

    Args:
        qat_net: the network returned by :func:`fake_quantized` (trained).
        float_net: a fresh float network of the original architecture (its weights are overwritten).

    Returns:
        ``float_net`` in eval mode.
    """
    from torch.ao.quantization import FakeQuantizeBase

    quant_prefixes = tuple(f"{n}." for n, m in qat_net.named_modules() if isinstance(m, FakeQuantizeBase))
    source = {k: v for k, v in qat_net.state_dict().items() if not k.startswith(quant_prefixes)}
    target = float_net.state_dict()
    renamed = {}
    for key in target:
        # fused conv-bn(-relu): the BatchNorm of a MONAI ``Convolution`` (``<path>.adn.N``) becomes ``<path>.conv.bn``
        found = next((c for c in (key, key.replace(".adn.N.", ".conv.bn.")) if c in source), None)
        if found is None:
            raise KeyError(f"strip_fake_quant: no weight for '{key}' in the QAT network.")
        renamed[key] = source[found]
    float_net.load_state_dict(renamed)
    return float_net.eval()


def calibration_images(images: Iterable[np.ndarray], count: int = 256, seed: int = 0) -> np.ndarray:
    """``count`` images drawn at random (seeded) from ``images``, stacked as float32 for :func:`quantize_onnx`."""
    array = np.stack(list(images)).astype(np.float32)
    rng = np.random.default_rng(seed)
    return array[rng.choice(len(array), size=min(count, len(array)), replace=False)]


def bundle_calibration_images(config_files: Sequence[str], count: int = 256, seed: int = 0, **override) -> np.ndarray:
    """``count`` training images of a bundle (seeded draw from ``train_datalist``, through ``val_transforms``).

    Args:
        config_files: the bundle's ``train.json`` (and overlays), which define ``train_datalist`` and
            ``val_transforms``.
        count: how many images.
        seed: seed of the draw.
        override: config overrides, e.g. ``dataset_dir``.

    Raises:
        KeyError: when the configs define no ``train_datalist`` or ``val_transforms``.
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(list(config_files))
    parser.update(override)
    for key in ("train_datalist", "val_transforms"):
        if key not in parser:
            raise KeyError(f"{list(config_files)} define no '{key}' to draw calibration images from.")
    items = parser.get_parsed_content("train_datalist")
    transform = parser.get_parsed_content("val_transforms")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(items), size=min(count, len(items)), replace=False)
    return np.stack([np.asarray(transform(dict(items[i]))["image"], dtype=np.float32) for i in chosen])
