import pytest

from mean_geo.models.mean import MEAN
from mean_geo.models.profiling import gmacs, parameter_rows, reference_extras
from mean_geo.profile import main


@pytest.fixture(scope="module")
def full():
    return MEAN(701, backbone="convnext_tiny.fb_in22k_ft_in1k")


def test_paper_efficiency_figures(full):
    ours = sum(n for _, n in parameter_rows(full))
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
