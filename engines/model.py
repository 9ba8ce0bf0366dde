"""The age/gender network: a timm backbone with three small heads.

One factory, :func:`create_model`, builds it from a :class:`ModelMeta`; checkpoints are
safetensors files whose header carries the metadata as JSON, so loading never
unpickles anything.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from engines.errors import RealtimeError
from engines.files import DEFAULT_WEIGHTS, file_sha256  # noqa: F401  (re-exported)
from engines.files import META_KEY as _META_KEY
from engines.files import read_checkpoint_meta as read_meta
from engines.meta import ModelMeta

log = logging.getLogger(__name__)


class AgeGenderNet(nn.Module):
    """Backbone features -> age-group logits, gender logits and age in years.

    ``forward(x)`` takes ``x`` of shape (N, 3, S, S) float32 (normalised RGB) and
    returns ``(age_logits (N, A), gender_logits (N, G), age_years (N,))``.
    """

    def __init__(self, meta: ModelMeta, pretrained: bool = False, drop_rate: float = 0.2):
        super().__init__()
        import timm

        self.meta = meta
        try:
            self.backbone = timm.create_model(meta.arch, pretrained=pretrained, num_classes=0)
        except RuntimeError as e:  # timm: "Unknown model (...)"
            raise RealtimeError(
                f"unknown architecture {meta.arch!r}: use a timm model name, "
                f"e.g. mobilenetv3_small_100 or resnet50 ({e})"
            ) from None
        features = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        self.dropout = nn.Dropout(drop_rate)
        self.age_head = nn.Linear(features, len(meta.age_labels))
        self.gender_head = nn.Linear(features, len(meta.gender_labels))
        self.years_head = nn.Linear(features, 1)
        nn.init.constant_(self.years_head.bias, 30.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.dropout(self.backbone(x))
        return self.age_head(f), self.gender_head(f), self.years_head(f).squeeze(1)


class ProbabilityModel(nn.Module):
    """Inference view of :class:`AgeGenderNet`: softmaxed heads, what engines run.

    Returns ``(age_probs (N, A), gender_probs (N, G), age_years (N,))``.
    """

    def __init__(self, net: AgeGenderNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        age, gender, years = self.net(x)
        return age.softmax(1), gender.softmax(1), years


def create_model(arch: str | None = None, meta: ModelMeta | None = None, **kwargs) -> AgeGenderNet:
    """Build an (untrained unless ``pretrained``) network from an arch name or full meta."""
    if meta is None:
        meta = ModelMeta(**({"arch": arch} if arch else {}))
    elif arch and arch != meta.arch:
        raise RealtimeError(f"architecture {arch!r} does not match the metadata's {meta.arch!r}")
    return AgeGenderNet(meta, **kwargs)


def save_checkpoint(net: AgeGenderNet, path: str | Path, meta: ModelMeta | None = None, half: bool = False) -> Path:
    """Write weights and metadata to one safetensors file.

    ``half`` stores floating point weights as float16 (halves the file); they load back
    as float32.
    """
    from safetensors.torch import save_file

    meta = meta or net.meta
    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={_META_KEY: meta.to_json()})
    return path


def load_checkpoint(path: str | Path) -> AgeGenderNet:
    """Load a checkpoint safely (safetensors: tensors and JSON only) into eval mode."""
    from safetensors.torch import load_file

    meta = read_meta(path)
    net = AgeGenderNet(meta)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise RealtimeError(f"{path}: weights do not fit architecture {meta.arch!r} ({str(e).splitlines()[0]})") from None
    return net.eval()


def untrained_model(arch: str | None = None) -> AgeGenderNet:
    """A randomly initialised model (seeded), for when no trained weights exist."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return create_model(arch).eval()


def default_model() -> AgeGenderNet:
    """The shipped default weights, or an untrained model (meta.trained False) if absent."""
    if DEFAULT_WEIGHTS.exists():
        return load_checkpoint(DEFAULT_WEIGHTS)
    log.warning("no trained default weights at %s: using an UNTRAINED model", DEFAULT_WEIGHTS)
    return untrained_model()
