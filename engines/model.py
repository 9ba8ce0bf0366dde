"""The age/gender network: a timm backbone with three small heads.

One factory, :func:`create_model`, builds it from a :class:`ModelMeta`; checkpoints are
safetensors files whose header carries the metadata as JSON, so loading never
unpickles anything.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import torch
from torch import nn

from engines.errors import RealtimeError
from engines.files import DEFAULT_WEIGHTS, META_KEY, read_checkpoint_meta
from engines.meta import ModelMeta
from engines.writes import atomic_path, same_file

log = logging.getLogger(__name__)


class AgeGenderNet(nn.Module):
    """Backbone features -> age-group logits, gender logits and age in years.

    ``forward(x)`` takes ``x`` of shape (N, 3, S, S) float32 (normalised RGB) and
    returns ``(age_logits (N, A), gender_logits (N, G), age_years (N,))``. With
    ``meta.years_bins`` > 0 the years head scores each whole age 0..bins-1 and the age
    is the expectation of their softmax; ``forward(x, years_logits=True)`` then also
    returns those scores (N, bins) for training (``None`` for a linear years head), and
    ``features=True`` appends the backbone's pooled feature (N, F) (feature distillation).
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
        self.years_head = nn.Linear(features, meta.years_bins or 1)
        if meta.years_bins:
            self.register_buffer("ages", torch.arange(meta.years_bins, dtype=torch.float32), persistent=False)
        else:
            nn.init.constant_(self.years_head.bias, 30.0)

    def forward(self, x: torch.Tensor, years_logits: bool = False, features: bool = False) -> tuple[torch.Tensor, ...]:
        pooled = self.backbone(x)
        f = self.dropout(pooled)
        raw = self.years_head(f)
        years = raw.float().softmax(1) @ self.ages if self.meta.years_bins else raw.squeeze(1)
        outputs = (self.age_head(f), self.gender_head(f), years)
        if years_logits:
            outputs += (raw if self.meta.years_bins else None,)
        return outputs + (pooled,) if features else outputs

    def probabilities(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(age_probs (N, A), gender_probs (N, G), age_years (N,))``: the heads softmaxed."""
        age, gender, years = self(x)
        return age.softmax(1), gender.softmax(1), years


def mean_outputs(outputs: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    """Several networks' ``(age_probs (N, A), gender_probs (N, G), age_years (N,))`` -> their mean."""
    return tuple(torch.stack(head).mean(0) for head in zip(*outputs))


class Ensemble(nn.Module):
    """Several trained networks run as one (``meta.members``): the mean of their
    probabilities and of their ages.

    ``forward(x)`` returns ``(log age_probs (N, A), log gender_probs (N, G), age_years
    (N,))``: logits whose softmax is the members' mean probabilities, so an ensemble
    goes wherever one network goes (engines, evaluation, a teacher). It is built from
    trained members (:func:`save_ensemble`), not trained as a whole.
    """

    def __init__(self, meta: ModelMeta, **kwargs):
        super().__init__()
        self.meta = meta
        self.members = nn.ModuleList(
            AgeGenderNet(dataclasses.replace(meta, arch=m["arch"], years_bins=m.get("years_bins", 0), members=()), **kwargs)
            for m in meta.members
        )

    def probabilities(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return mean_outputs([member.probabilities(x) for member in self.members])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        age, gender, years = self.probabilities(x)
        return age.clamp_min(1e-12).log(), gender.clamp_min(1e-12).log(), years


class ProbabilityModel(nn.Module):
    """Inference view of :class:`AgeGenderNet`: softmaxed heads, what engines run.

    Returns ``(age_probs (N, A), gender_probs (N, G), age_years (N,))``.
    """

    def __init__(self, net: AgeGenderNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.net.probabilities(x)


def create_model(arch: str | None = None, meta: ModelMeta | None = None, **kwargs) -> AgeGenderNet | Ensemble:
    """Build an (untrained unless ``pretrained``) network from an arch name or full meta."""
    if meta is None:
        meta = ModelMeta(**({"arch": arch} if arch else {}))
    elif arch and arch != meta.arch:
        raise RealtimeError(f"architecture {arch!r} does not match the metadata's {meta.arch!r}")
    return Ensemble(meta, **kwargs) if meta.members else AgeGenderNet(meta, **kwargs)


def save_checkpoint(net: AgeGenderNet | Ensemble, path: str | Path, meta: ModelMeta | None = None, half: bool = False) -> Path:
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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RealtimeError(f"{path}: cannot be written ({e.strerror})") from None
    with atomic_path(path, "model output") as tmp:  # whole or not at all, never through a link
        save_file(state, str(tmp), metadata={META_KEY: meta.to_json()})
    return path


def load_checkpoint(path: str | Path) -> AgeGenderNet | Ensemble:
    """Load a checkpoint safely (safetensors: tensors and JSON only) into eval mode."""
    from safetensors.torch import load_file

    meta = read_checkpoint_meta(path)
    net = create_model(meta=meta)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise RealtimeError(f"{path}: weights do not fit architecture {meta.arch!r} ({str(e).splitlines()[0]})") from None
    return net.eval()


#: What members of one ensemble must share: the input they are given and what they output.
_SHARED = ("input_size", "mean", "std", "crop_scale", "age_labels", "gender_labels")


def save_ensemble(paths: list[Path], output: str | Path, trained_on: str = "") -> Path:
    """Combine trained checkpoints into one ensemble checkpoint at ``output``.

    The members must agree on input size, normalisation, crop framing and labels; their
    architectures and years heads may differ. Their temperatures are not carried over
    (the mean of calibrated members is not calibrated): calibrate the ensemble itself. ``output`` may not be one of ``paths`` and
    is written whole or not at all, its weights float16 (as ``realtime train --save``)."""
    output = _combined_output(paths, output, "an ensemble")
    nets = _load_alike(paths)
    first = nets[0].meta
    for path, net in zip(paths, nets):
        if isinstance(net, Ensemble):
            raise RealtimeError(f"{path}: is already an ensemble; combine its members instead")
    members = tuple({"arch": n.meta.arch, "years_bins": n.meta.years_bins} for n in nets)
    meta = dataclasses.replace(first, arch="ensemble", years_bins=0, members=members, trained=all(n.meta.trained for n in nets),
                               temperature=(1.0, 1.0), min_gender_confidence=0.0,  # the mean's own: `realtime calibrate` it
                               trained_on=trained_on or " | ".join(n.meta.trained_on for n in nets))  # fmt: skip
    ensemble = create_model(meta=meta)
    for mine, theirs in zip(ensemble.members, nets):
        mine.load_state_dict(theirs.state_dict())
    save_checkpoint(ensemble, output, half=True)  # a file of its own beside the output, then renamed
    return output


def save_soup(paths: list[Path], weights: tuple[float, ...] | None, output: str | Path, trained_on: str = "") -> Path:
    """Average trained checkpoints in weight space (a "model soup"; Wortsman et al. 2022)
    into one model at ``output``: each floating-point tensor is ``sum_k weights[k] x
    tensor_k`` (default: equal weights), batch-norm statistics included. Meant for models
    fine-tuned from one another, e.g. a fine-tune and the model it started from (WiSE-FT:
    part of what the fine-tune gained and most of what it cost come back). The models
    must share architecture (ensembles: member by member), tensors and what ensemble
    members share; the soup costs one model's inference. Temperatures are not carried
    over: calibrate the soup. ``output`` may not be an input; written whole or not at all."""
    output = _combined_output(paths, output, "a soup")
    weights = tuple(float(w) for w in weights) if weights else (1.0 / len(paths),) * len(paths)
    if len(weights) != len(paths) or not all(math.isfinite(w) and w >= 0 for w in weights) or abs(sum(weights) - 1) > 1e-6:
        raise RealtimeError(f"--weights {','.join(map(str, weights))}: give one weight of 0 or more per model, summing to 1")
    nets = _load_alike(paths)
    first = nets[0]
    states = [n.state_dict() for n in nets]
    for path, net, state in zip(paths, nets, states):
        if (net.meta.arch, net.meta.members, net.meta.years_bins) != (first.meta.arch, first.meta.members, first.meta.years_bins) or \
                {k: v.shape for k, v in state.items()} != {k: v.shape for k, v in states[0].items()}:
            raise RealtimeError(f"{path}: not the same architecture as {paths[0]}; only models of one architecture average")
    soup = {k: sum(w * s[k].float() for w, s in zip(weights, states)).to(v.dtype) if v.is_floating_point() else v
            for k, v in states[0].items()}
    meta = dataclasses.replace(first.meta, temperature=(1.0, 1.0), min_gender_confidence=0.0,
                               trained_on=trained_on or " | ".join(f"{w:g} x ({n.meta.trained_on})" for w, n in zip(weights, nets)))
    net = create_model(meta=meta)
    net.load_state_dict(soup)
    save_checkpoint(net, output, half=True)
    return output


def _combined_output(paths: list[Path], output: str | Path, what: str) -> Path:
    """Check the inputs and the output of a command that combines models into one."""
    if len(paths) < 2:
        raise RealtimeError(f"{what} needs 2 or more models")
    output = Path(output)
    if output.suffix != ".safetensors":
        raise RealtimeError(f"{output}: write {what} to a .safetensors file")
    if any(same_file(output, p) for p in paths):
        raise RealtimeError(f"{output}: is one of the inputs; write {what} to a new file")
    for k, path in enumerate(paths):
        twice = next((p for p in paths[:k] if same_file(p, path)), None)
        if twice is not None:
            raise RealtimeError(f"{path}: the same file as {twice}; {what} of one network twice is that network (give distinct models)")
    return output


def _load_alike(paths: list[Path]) -> list[AgeGenderNet | Ensemble]:
    """Load models that must share input, framing and labels (:data:`_SHARED`)."""
    nets = [load_checkpoint(p) for p in paths]
    for path, net in zip(paths, nets):
        differ = [k for k in _SHARED if getattr(net.meta, k) != getattr(nets[0].meta, k)]
        if differ:
            raise RealtimeError(f"{path}: {', '.join(differ)} not the same as in {paths[0]}; they must share them")
        if net.meta.level_eyes != nets[0].meta.level_eyes:  # allowed: chips are level either way
            log.warning("%s: level_eyes %s, unlike %s: the result levels its crops as the first model does (%s)",
                        path, net.meta.level_eyes, paths[0], nets[0].meta.level_eyes)
    return nets


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
