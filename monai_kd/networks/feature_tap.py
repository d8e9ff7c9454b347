"""Capture intermediate outputs of any ``nn.Module`` by name with forward hooks."""

from __future__ import annotations

import difflib
import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn


class FeatureTap:
    """Records the outputs of named submodules of a model during its forward pass.

    Layers are named as in ``model.named_modules()`` (e.g. ``"layer3"`` or ``"model.1.submodule"`` for MONAI's
    ``UNet``); 2D and 3D networks alike. After a forward pass ``tap.features[name]`` holds that module's output
    (the first element if the module returns a tuple). Hooks stay until :meth:`remove` is called; the tap is
    also a context manager that removes them on exit.

    Args:
        model: the network to tap.
        layers: dotted names of the submodules whose outputs to record.
        detach: detach recorded outputs (use for frozen teachers; keep ``False`` for students so the
            feature loss can back-propagate).

    Raises:
        KeyError: a layer name is not a submodule of ``model`` (the message suggests close names).

    Example::

        with FeatureTap(teacher, ["layer3"], detach=True) as tap:
            teacher(x)
            feat = tap.features["layer3"]
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], detach: bool = False) -> None:
        self.model = model
        self.layers = list(dict.fromkeys(layers))
        self.detach = detach
        self.features: dict[str, torch.Tensor] = {}
        modules = dict(model.named_modules())
        missing = [name for name in self.layers if name not in modules or name == ""]
        if missing:
            hints = {name: difflib.get_close_matches(name, list(modules), n=3) for name in missing}
            raise KeyError(
                f"layer(s) {missing} not found in {type(model).__name__}; close names: {hints}. "
                "Use names from model.named_modules()."
            )
        self._handles = [modules[name].register_forward_hook(self._hook(name)) for name in self.layers]

    def _hook(self, name: str):
        def record(module: nn.Module, inputs: tuple, output) -> None:
            out = output[0] if isinstance(output, (tuple, list)) else output
            self.features[name] = out.detach() if self.detach else out

        return record

    def clear(self) -> None:
        """Forget the recorded features (keeps the hooks)."""
        self.features = {}

    @contextlib.contextmanager
    def capture(self) -> Iterator[dict[str, torch.Tensor]]:
        """Record the forward passes run inside into a fresh dict (yielded); restore the previous record on exit.

        A second pass of the same model (a virtual step, another view) inside ``capture()`` can therefore
        never overwrite the features recorded by an earlier pass.

        Example::

            with tap.capture() as virtual:
                model(x_quiz)          # virtual["layer3"] is this pass's feature
            tap.features               # unchanged by the pass above
        """
        previous = self.features
        self.features = {}
        try:
            yield self.features
        finally:
            self.features = previous

    def remove(self) -> None:
        """Remove all hooks from the model and forget recorded features."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.clear()

    @property
    def active(self) -> bool:
        """Whether the hooks are still registered."""
        return bool(self._handles)

    def __enter__(self) -> FeatureTap:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
