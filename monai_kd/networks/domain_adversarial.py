"""Domain-adversarial (DANN) wrapper around any classifier: a domain head on a tapped feature map."""

from __future__ import annotations

import torch
from torch import nn

from monai_kd.networks.feature_tap import FeatureTap
from monai_kd.networks.gradient_reversal import GradientReversal

__all__ = ["DomainAdversarialNetwork"]

_CHANNEL_ATTRS = ("out_channels", "num_features", "num_channels", "out_features")


class DomainAdversarialNetwork(nn.Module):
    """DANN (Ganin & Lempitsky 2015) around an existing classifier.

    The output of ``network``'s submodule ``feature_layer`` (the feature extractor's output, captured with a
    :class:`monai_kd.networks.feature_tap.FeatureTap`) goes through a :class:`GradientReversal` layer, a global
    average pool over all spatial dimensions (2D or 3D) and an MLP giving ``num_domains`` logits. ``forward(x)``
    returns the classifier's logits unchanged, so the wrapper trains, validates and serves like ``network``;
    :meth:`domain_logits` returns the domain logits of the last forward pass.

    The plain network is ``classifier`` (also returned by :meth:`unwrap`): save ``classifier`` (e.g.
    ``"$@network.classifier"`` in a bundle's checkpoint saver) to get a teacher checkpoint loadable into the
    unwrapped architecture; the domain head is training-only.

    The tap's hooks are registered for the duration of each forward pass only, and the last domain logits are
    not copied, so the wrapper can be deep-copied and pickled at any time.

    Args:
        network: any classifier (e.g. MONAI ``ResNet``, ``DenseNet121``; 2D or 3D).
        feature_layer: dotted name in ``network.named_modules()`` of the feature map fed to the domain head
            (e.g. ``"layer4"`` for MONAI ``ResNet``, ``"features"`` for MONAI ``DenseNet``).
        num_domains: number of domains (2: source and target).
        hidden: width of the domain head's hidden layer.
        feature_channels: channels of the tapped feature; by default read from the last submodule of
            ``feature_layer`` that declares ``out_channels`` / ``num_features`` / ``num_channels`` / ``out_features``.
        dropout: dropout probability in the domain head.
        coefficient: initial gradient-reversal coefficient (a trainer usually schedules it, see ``coefficient``).
    """

    def __init__(
        self,
        network: nn.Module,
        feature_layer: str,
        num_domains: int = 2,
        hidden: int = 256,
        feature_channels: int | None = None,
        dropout: float = 0.0,
        coefficient: float = 1.0,
    ) -> None:
        super().__init__()
        if num_domains < 2:
            raise ValueError(f"num_domains must be >= 2, got {num_domains}.")
        FeatureTap(network, [feature_layer]).remove()  # validate the layer name early, with close-name hints
        self.classifier = network
        self.feature_layer = feature_layer
        channels = feature_channels if feature_channels is not None else _infer_channels(network, feature_layer)
        self.grl = GradientReversal(coefficient)
        self.domain_head = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_domains)
        )
        self._domain_logits: torch.Tensor | None = None

    @property
    def coefficient(self) -> float:
        """The gradient-reversal coefficient ``lambda`` (settable)."""
        return self.grl.coefficient

    @coefficient.setter
    def coefficient(self, value: float) -> None:
        self.grl.coefficient = float(value)

    def unwrap(self) -> nn.Module:
        """Return the plain classifier (without the domain head)."""
        return self.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of ``network``; the domain logits of this pass are kept for :meth:`domain_logits`."""
        with FeatureTap(self.classifier, [self.feature_layer]) as tap:
            logits = self.classifier(x)
            if self.feature_layer not in tap.features:
                raise RuntimeError(f"feature layer '{self.feature_layer}' was not run in the forward pass.")
            feature = tap.features[self.feature_layer]
        pooled = feature.flatten(2).mean(dim=2) if feature.dim() > 2 else feature.flatten(1)
        self._domain_logits = self.domain_head(self.grl(pooled))
        return logits

    def __getstate__(self) -> dict:
        # the last domain logits are a non-leaf tensor (not deep-copyable) and not part of the model
        state = super().__getstate__()
        state["_domain_logits"] = None
        return state

    def domain_logits(self) -> torch.Tensor:
        """Domain logits ``(B, num_domains)`` of the last forward pass."""
        if self._domain_logits is None:
            raise RuntimeError("domain_logits() is only available after a forward pass.")
        return self._domain_logits


def _infer_channels(network: nn.Module, layer: str) -> int:
    """Output channels of ``network``'s submodule ``layer``, read from its last module declaring them."""
    module = dict(network.named_modules())[layer]
    for sub in reversed(list(module.modules())):
        for attr in _CHANNEL_ATTRS:
            value = getattr(sub, attr, None)
            if isinstance(value, int):
                return value
    raise ValueError(f"cannot infer the channels of layer '{layer}'; pass feature_channels explicitly.")
