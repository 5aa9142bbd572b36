"""The benchmarks' ledger of scored results: what survives a new machine, and what is reused."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def scripts(monkeypatch, tmp_path):
    """The benchmark modules, their ledger moved to a temporary folder."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import common
    import frontier
    import privacy
    import utility

    monkeypatch.setattr(common, "LEDGER", tmp_path / "results")
    return argparse.Namespace(common=common, frontier=frontier, privacy=privacy, utility=utility)


def test_a_recorded_result_reads_back_whole_and_in_name_order(scripts, tmp_path):
    common = scripts.common
    for name, accuracy in (("b-key1", 0.5), ("a-key0", 0.75)):
        common.record(common.ledger_path("utility", "set", "s1", name), {"accuracy": accuracy})
    assert common.recorded("utility", "set", "s1") == [{"accuracy": 0.75}, {"accuracy": 0.5}]
    assert common.recorded("utility", "set", "other") == []
    # Whole or not at all: no temporary file is left beside a kept result.
    assert sorted(p.name for p in (tmp_path / "results/utility/set/s1").iterdir()) == [
        "a-key0.json", "b-key1.json",
    ]


def test_settings_that_change_a_result_change_its_ledger_folder(scripts):
    parse = scripts.utility.build_parser().parse_args
    base = scripts.utility.run_settings(parse(["data"]))
    assert base == "size224-rank32-in64-ep8-bs32-lr0.001-none-d4"
    for option in (["--input-size", "96"], ["--epochs", "4"], ["--size", "160"],
                   ["--rank", "16"], ["--augment", "flip"], ["--stem-lr-scale", "10"]):
        assert scripts.utility.run_settings(parse(["data", *option])) != base, option
    assert scripts.utility.run_settings(parse(["data", "--stem-lr-scale", "1"])) == base
    # Which keys and schemes are run is not a setting: more keys join the same folder.
    assert scripts.utility.run_settings(parse(["data", "--keys", "2", "--first-key", "1"])) == base

    privacy = scripts.privacy.build_parser().parse_args
    one = scripts.privacy.privacy_settings(privacy(["data", "--attacks", "reid"]))
    assert one != scripts.privacy.privacy_settings(privacy(["data", "--attacks", "kpl"]))
    assert one != scripts.privacy.privacy_settings(
        privacy(["data", "--attacks", "reid", "--distinct-groups"])
    )


def test_the_frontier_counts_default_stem_runs_at_its_own_settings(scripts):
    common, frontier = scripts.common, scripts.frontier
    args = frontier.build_parser().parse_args(["somewhere/brain-tumor-mri/Training"])
    settings = scripts.utility.run_settings(
        scripts.utility.build_parser().parse_args(["data"])
    )

    def keep(scheme, key, stem_option, accuracy, settings=settings, model="smallcnn"):
        common.record(
            common.ledger_path("utility", "brain-tumor-mri", settings,
                               f"{scheme}-key{key}-{model}-{stem_option}"),
            {"scheme": scheme, "model": model, "stem_option": stem_option, "key": key,
             "accuracy": accuracy},
        )

    keep("multistage", 0, "default", 0.8)
    keep("multistage", 1, "default", 0.9)
    keep("multistage", 0, "fitted", 0.1)  # another stem: not the frontier's point
    keep("multistage", 2, "default", 0.1, settings="size224-rank32-in96-ep4-bs32-lr0.001-none-d4")
    keep("multistage", 2, "default", 0.1, model="resnet50")
    keep("plaintext", 0, "default", 0.95)
    keep("svd", 0, "default", 0.85)  # not asked for
    keep("multistage", 3, "default", 0.2)  # a fourth key: beyond the frontier's --keys 3
    rows = frontier._utility_rows(args, ["multistage"])
    assert sorted(zip(rows["scheme"], rows["accuracy"], strict=True)) == [
        ("multistage", 0.8), ("multistage", 0.9), ("plaintext", 0.95),
    ]
