import pytest

from mean_geo.losses import LOSSES, MEANLoss
from mean_geo.models.mean import MEAN
from mean_geo.models.profiling import gmacs, parameter_rows, reference_extras
from mean_geo.profile import main


@pytest.fixture(scope="module")
def full():
    return MEAN(701, backbone="convnext_tiny.fb_in22k_ft_in1k")


def test_paper_efficiency_figures(full):
    ours = sum(n for _, n in parameter_rows(full, MEANLoss()))
    assert round(ours / 1e6, 2) == 35.73
    assert round((ours + reference_extras(full)) / 1e6, 2) == 36.50  # the paper's 36.50 M
    test = gmacs(full, 384, train=False)
    assert round(test["total"], 2) == 26.18  # one drone + one satellite image, backbone only
    assert set(test) == {"total", "backbone"}  # the branches cost nothing at test time


def test_training_forward_counts_the_branches(full):
    train = gmacs(full, 256, train=True)
    assert train["gee"] > 0 and train["cea"] > 0
    assert train["total"] == pytest.approx(train["backbone"] + train["gee"] + train["cea"], rel=1e-6)


def test_cli_prints_the_table(capsys):
    assert main(["--backbone", "test_convnext", "--num-classes", "10", "--image-size", "64"]) == 0
    assert "total as the paper counts it" in capsys.readouterr().out


@pytest.mark.parametrize(
    "method,classes,expected",
    # every parameter of the authors' model objects (built with their own code: 87.566465 M,
    # 96.499052 M, 91.395442 M at 701 classes), and CAMP at SUES-200's 200
    [("sample4geo", 701, 87.57), ("dac", 701, 96.50), ("camp", 701, 91.40), ("camp", 200, 90.62)],
)
def test_the_baselines_count_as_their_authors_models(method, classes, expected):
    from mean_geo.models.profiling import build_for_profile

    model = build_for_profile(method, classes)
    ours = sum(n for _, n in parameter_rows(model, LOSSES.get(method)()))
    assert round((ours + reference_extras(model)) / 1e6, 2) == expected


def test_cli_takes_method_and_dataset_as_train_does(capsys):
    args = ["method=camp", "dataset=sues200", "--backbone", "test_convnext", "--image-size", "64"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "CAMP (test_convnext, 200 classes, 64 px)" in out and "position embedding" in out
    from tests.helpers.cli import exit_code

    assert exit_code(main, ["method=maen"]) == 2
    assert "method=maen: expected one of mean, sample4geo, dac, camp" in capsys.readouterr().err
