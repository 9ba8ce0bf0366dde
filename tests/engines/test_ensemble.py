"""`realtime ensemble`: trained checkpoints combined into one model that averages them."""

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from engines.registry import create_engine
from engines.meta import ModelMeta
from engines.model import Ensemble, ProbabilityModel, create_model, load_checkpoint, save_checkpoint, save_ensemble
from realtime.cli import cli
from realtime.errors import RealtimeError

pytestmark = pytest.mark.slow  # conversions and several networks: not in the quick run


def member(path: Path, seed: int, **meta) -> Path:
    """A small checkpoint whose outputs vary with the input (batch-norm statistics of
    random inputs, spread heads), different for each seed."""
    torch.manual_seed(seed)
    net = create_model(meta=ModelMeta(**{"input_size": 48, "trained": True, **meta}))
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats(), setattr(m, "momentum", None)
    with torch.no_grad():
        net.train()(torch.randn(32, 3, 48, 48))
        for head in (net.age_head, net.gender_head, net.years_head):
            head.weight.normal_(0, 1)
    return save_checkpoint(net.eval(), path, half=True)  # as trained models are saved, and ensembles


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("members")
    return [member(folder / "a.safetensors", 1), member(folder / "b.safetensors", 2, years_bins=101)]


def test_an_ensemble_averages_its_members_on_every_backend(members, tmp_path):
    path = save_ensemble(members, tmp_path / "ab.safetensors", trained_on="two test nets")
    net = load_checkpoint(path)
    assert isinstance(net, Ensemble) and net.meta.arch == "ensemble" and net.meta.trained_on == "two test nets"
    assert net.meta.members == ({"arch": "mobilenetv3_small_100", "years_bins": 0}, {"arch": "mobilenetv3_small_100", "years_bins": 101})
    x = torch.randn(5, 3, 48, 48)
    with torch.no_grad():
        a, b = (ProbabilityModel(load_checkpoint(p))(x) for p in members)
        want = [((ha + hb) / 2).numpy() for ha, hb in zip(a, b)]
        logits = net(x)
    assert (a[0] - b[0]).abs().max() > 0.05  # the members disagree, so the mean means something
    assert torch.allclose(logits[0].softmax(1), torch.from_numpy(want[0]), atol=1e-5)  # usable as a teacher
    for backend, tol in (("torch", 1e-5), ("onnxruntime", 1e-4)):
        out = create_engine(path, backend=backend).infer(x.numpy())
        assert np.abs(out.age_probs - want[0]).max() < tol and np.abs(out.gender_probs - want[1]).max() < tol, backend
        assert np.abs(out.age_years - want[2]).max() < 100 * tol, backend


def test_bad_ensembles_are_refused_and_leave_nothing(members, tmp_path):
    other = member(tmp_path / "c.safetensors", 3, input_size=64)
    out = tmp_path / "out.safetensors"
    for paths, output, message in (
        (members[:1], out, "needs 2 or more"),
        (members, members[0], "is one of the inputs"),
        (members, tmp_path / "out.onnx", "a .safetensors file"),
        ([members[0], other], out, "input_size not the same as in"),
        ([members[0], tmp_path / "missing.safetensors"], out, "not found"),
        (members, tmp_path / "c.safetensors" / "out.safetensors", "cannot be written"),  # under a file
    ):
        with pytest.raises(RealtimeError, match=message):
            save_ensemble(paths, output)
    nested = save_ensemble(members, tmp_path / "ab.safetensors")
    with pytest.raises(RealtimeError, match="already an ensemble"):
        save_ensemble([nested, members[0]], out)
    assert not out.exists() and not list(tmp_path.glob("*.partial"))
    assert load_checkpoint(members[0]).meta.members == ()  # the inputs are untouched


def test_ensemble_command(members, tmp_path):
    out = tmp_path / "ab.safetensors"
    result = CliRunner().invoke(cli, ["ensemble", *map(str, members), "-o", str(out)])
    assert result.exit_code == 0 and "ensemble of 2 models written to" in result.output, result.output
    assert len(load_checkpoint(out).members) == 2
    result = CliRunner().invoke(cli, ["ensemble", str(members[0]), "-o", str(tmp_path / "one.safetensors")])
    assert result.exit_code == 1 and result.stderr.strip().splitlines() == ["error: an ensemble needs 2 or more models"]


def test_fine_tuning_an_ensemble_starts_from_its_first_member(members, tmp_path):
    from train.losses import Teachers
    from train.trainer import init_weights

    path = save_ensemble(members, tmp_path / "ab.safetensors")
    net = create_model(meta=ModelMeta(input_size=48))
    init_weights(net, path)
    first = load_checkpoint(members[0]).state_dict()
    assert all(torch.equal(v, first[k]) for k, v in net.state_dict().items())
    # as a teacher, an ensemble teaches its members' mean
    x = torch.randn(3, 3, 48, 48)
    age, _, years = Teachers((path,), net.meta)(x)
    with torch.no_grad():
        want = load_checkpoint(path).probabilities(x)
    assert torch.allclose(age, want[0], atol=1e-5) and torch.allclose(years, want[2], atol=1e-3)


def test_a_soup_averages_the_weights_and_runs_as_one_model(members, tmp_path):
    from engines.model import save_soup

    a, b = members[0], member(tmp_path / "a2.safetensors", 4)  # one architecture, two sets of weights
    path = save_soup([a, b], (0.25, 0.75), tmp_path / "soup.safetensors")
    soup, na, nb = (load_checkpoint(p) for p in (path, a, b))
    assert not isinstance(soup, Ensemble) and soup.meta.temperature == (1.0, 1.0) and "0.25 x" in soup.meta.trained_on
    sa, sb = na.state_dict(), nb.state_dict()
    for k, v in soup.state_dict().items():  # every tensor, batch-norm statistics too (stored as float16)
        if v.is_floating_point():
            want = 0.25 * sa[k] + 0.75 * sb[k]
            assert torch.allclose(v, want, atol=2e-3 * max(1.0, float(want.abs().max()))), k  # float16 storage: half an ulp is 4.9e-4
    assert any(not torch.equal(sa[k], sb[k]) for k in sa)  # the two really differ
    x = np.random.default_rng(0).standard_normal((4, 3, 48, 48)).astype(np.float32)
    same = save_soup([a, b], (1.0, 0.0), tmp_path / "just_a.safetensors")  # all of a: a's outputs
    want = create_engine(a, backend="torch").infer(x)
    got = create_engine(same, backend="onnxruntime").infer(x)
    assert np.abs(got.gender_probs - want.gender_probs).max() < 1e-3 and np.abs(got.age_probs - want.age_probs).max() < 1e-3
    ens = save_soup([save_ensemble([a, b], tmp_path / "ab.safetensors"), save_ensemble([b, a], tmp_path / "ba.safetensors")],
                    None, tmp_path / "ens_soup.safetensors")  # ensembles average member by member
    halves = load_checkpoint(ens).members[0].state_dict()
    assert torch.allclose(halves["gender_head.weight"], (sa["gender_head.weight"] + sb["gender_head.weight"]) / 2, atol=1e-3)


def test_bad_soups_are_refused_in_one_line(members, tmp_path):
    from engines.model import save_soup

    a, b = members[0], member(tmp_path / "a2.safetensors", 4)
    out = tmp_path / "out.safetensors"
    for paths, weights, message in (
        (members, None, "not the same architecture"),  # b has a years distribution head
        ([a, b], (0.5, 0.6), "summing to 1"),
        ([a, b], (1.5, -0.5), "summing to 1"),
        ([a, b], (1.0,), "one weight of 0 or more per model"),
        ([a], None, "needs 2 or more"),
    ):
        with pytest.raises(RealtimeError, match=message):
            save_soup(paths, weights, out)
    assert not out.exists()
    runner = CliRunner()
    result = runner.invoke(cli, ["soup", str(a), str(b), "--weights", "half,half", "-o", str(out)])
    assert result.exit_code == 1 and result.stderr.strip().splitlines() == ["error: --weights half,half: give numbers separated by commas, e.g. 0.5,0.5"]
    result = runner.invoke(cli, ["soup", str(a), str(b), "-o", str(a)])
    assert result.exit_code == 1 and "is one of the inputs" in result.stderr and not out.exists()
    result = runner.invoke(cli, ["soup", str(a), str(b), "--weights", "0.5,0.5", "-o", str(out)])
    assert result.exit_code == 0 and "average of 2 models written to" in result.output and out.exists()


def test_models_that_level_their_crops_and_not_combine_with_a_warning(members, tmp_path, caplog):
    """Every member of an ensemble (and a soup) gets the same crop: the first model's
    level_eyes is the result's, and a model that differs is named in a warning."""
    from engines.model import save_soup

    levelled = member(tmp_path / "levelled.safetensors", 1, level_eyes=True)
    with caplog.at_level("WARNING", logger="engines.model"):
        ens = save_ensemble([levelled, members[1]], tmp_path / "ens.safetensors")
        soup = save_soup([members[0], levelled], None, tmp_path / "soup.safetensors")
    assert load_checkpoint(ens).meta.level_eyes is True and load_checkpoint(soup).meta.level_eyes is False
    warned = [r.getMessage() for r in caplog.records if "level_eyes" in r.getMessage()]
    assert len(warned) == 2 and str(members[1]) in warned[0] and str(levelled) in warned[1]
