"""The benchmark's pure parts: the within-round ratio, the typed results' JSON form, the generated README block.

No processes and no broker: these modules import only the standard library.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench import publish, report, results
from tests.bench.goals import _provider_goals, goals
from tests.bench.ratios import paired_ratio, per_round
from tests.bench.results import (
    BASELINE,
    Drain,
    ProviderResult,
    ProviderRun,
    ScalingConfig,
    ScalingResult,
    ScalingRun,
)

COMMITTED = Path(__file__).resolve().parents[1] / "bench" / "results.json"


def test_ratio_is_taken_within_each_round_then_the_median() -> None:
    # Round 1 was disturbed for both contenders: a ratio of medians (200/100 = 2.0) would hide that a is 3x b.
    a = {0: 300.0, 1: 30.0, 2: 330.0}
    b = {0: 100.0, 1: 100.0, 2: 110.0}
    assert paired_ratio(a, b) == 3.0


def test_ratio_uses_only_rounds_both_sides_have() -> None:
    assert paired_ratio({0: 2.0, 1: 4.0}, {1: 2.0}) == 2.0
    with pytest.raises(ValueError):
        paired_ratio({0: 1.0}, {1: 1.0})


def test_per_round_refuses_two_rows_of_one_round() -> None:
    row = Drain("celery", 1, 0, 10, 10, 1.0, 10.0, 1.0, 1.0, 1.0)
    assert per_round([row], "mails_per_s", contender="celery") == {0: 10.0}
    with pytest.raises(ValueError):
        per_round([row, row], "mails_per_s", contender="celery")


def test_scaling_efficiency_divides_by_processes_and_speedup_does_not() -> None:
    c8, c16 = ScalingConfig(8, 1), ScalingConfig(1, 16, 16)
    sc = ScalingResult(0.05, 3.0, [ScalingRun(BASELINE, 0, 20.0), ScalingRun(c8, 0, 144.0), ScalingRun(c16, 0, 300.0)])
    assert sc.efficiency(c8) == 0.9
    assert sc.efficiency(c16) == 15.0
    assert c16.label == "1 process x CONCURRENCY=16, SMTP_POOL_SIZE=16"


def test_committed_results_load_dump_and_render_to_the_committed_files() -> None:
    loaded = results.load(COMMITTED.read_text())
    assert results.dump(loaded, goals(loaded)) == COMMITTED.read_text()  # its goals are the ones derived from it
    assert report.results_markdown(loaded) == (COMMITTED.parent / "RESULTS.md").read_text()


def test_readme_block_is_replaced_between_the_markers_only() -> None:
    doc = f"intro\n{publish.START}\nold table\n{publish.END}\noutro\n"
    assert publish.replace_block(doc, "new\n") == f"intro\n{publish.START}\nnew\n{publish.END}\noutro\n"
    with pytest.raises(publish.MarkersMissing, match="bench-table:start"):
        publish.replace_block("intro\nold table\n", "new\n", "README.md")


def test_publish_checks_every_document_before_writing(tmp_path: Path) -> None:
    loaded = results.load(COMMITTED.read_text())
    readme, docs, out = tmp_path / "README.md", tmp_path / "benchmarks.md", tmp_path / "RESULTS.md"
    readme.write_text("no markers here\n")
    with pytest.raises(publish.MarkersMissing):
        publish.publish(loaded, out, {readme: "block\n"}, {docs: "all\n"})
    assert not out.exists()
    readme.write_text(f"# x\n{publish.START}\n{publish.END}\n")
    # docs/benchmarks.md absent: skipped
    assert publish.publish(loaded, out, {readme: "block\n"}, {docs: "all\n"}) == [out, readme]
    assert readme.read_text() == f"# x\n{publish.START}\nblock\n{publish.END}\n"


def test_committed_tables_are_the_generated_ones() -> None:
    """README.md, docs/benchmarks.md and RESULTS.md show exactly what `make bench-report` renders: never edited."""
    loaded = results.load(COMMITTED.read_text())
    root = COMMITTED.parents[2]
    for path, block in ((root / "README.md", report.readme_block(loaded)),
                        (root / "docs" / "benchmarks.md", report.results_block(loaded))):
        text = path.read_text()
        assert publish.replace_block(text, block, str(path)) == text, f"{path} differs: run make bench-report"


def provider_run(contender: str, delivered: int, dead: int, drain_s: float) -> ProviderRun:
    return ProviderRun(contender, 0, 100, delivered, 0, dead, 100 - delivered - dead, 3, 8, drain_s, 2.5, True)


def test_provider_goals_need_everything_delivered_within_1_3x_ideal_and_beating_both_peers() -> None:
    pr = ProviderResult(40, 8, 4, 200, [provider_run("ours", 100, 0, 3.0), provider_run("ours-budget", 100, 0, 3.5),
                                        provider_run("celery", 90, 10, 20.0), provider_run("dramatiq", 100, 0, 3.2)])
    met = {g.goal: g.met for g in _provider_goals(pr)}
    assert met == {
        "provider limits, ours: every signup delivered, drain <= 1.3x ideal": True,  # 3.0 <= 3.25
        "provider limits, ours: fewer dead letters and a shorter drain than Celery and Dramatiq": True,
        "provider limits, ours-budget: every signup delivered, drain <= 1.3x ideal": False,  # 3.5 > 3.25
        "provider limits, ours-budget: fewer dead letters and a shorter drain than Celery and Dramatiq": False}
    assert "| email-service, default settings, no budget | 100 | 0 | 0 |" in "\n".join(report._provider(pr))
    unfinished = ProviderRun("dramatiq", 0, 100, 99, 0, 0, 1, 0, 8, 200.0, 2.5, False)  # stopped at the deadline
    def beats(ours: ProviderRun) -> bool:
        return [g for g in _provider_goals(ProviderResult(40, 8, 4, 200, [ours, unfinished]))
                if "shorter drain" in g.goal][0].met

    assert beats(provider_run("ours", 100, 0, 250.0))  # a finished drain beats one stopped at the deadline
    assert not beats(ProviderRun("ours", 0, 100, 90, 0, 0, 10, 0, 8, 150.0, 2.5, False))  # unfinished: no win
