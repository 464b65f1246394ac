"""llmds.report: sections keep what they print, plots land beside the report, and a missing
matplotlib leaves a note instead of an error."""

from __future__ import annotations

import builtins

import pytest

import numpy as np

from llmds.report import Report, machine_summary, package_version


def test_package_version_names_the_installed_version_or_says_it_is_missing() -> None:
    assert package_version("numpy") == np.__version__
    assert package_version("no-such-distribution-llmds") == "not installed"
    assert any(f"numpy {np.__version__}" in line for line in machine_summary())


def test_sections_keep_their_output_and_still_print_it(tmp_path, capsys):
    report = Report("title", tmp_path / "r.md")
    report.preamble.append("- something measured")
    with report.section("Fenced"):
        print("line 1")
    with report.section("Markdown", fenced=False):
        print("| a | b |")
    path = report.write()
    out = capsys.readouterr().out
    assert "== Fenced\nline 1\n" in out and "| a | b |" in out
    text = path.read_text()
    assert text.startswith("# title\n\n- something measured\n")
    assert "## Fenced\n\n```text\nline 1\n```" in text
    assert "## Markdown\n\n| a | b |" in text


def test_a_section_keeps_its_output_when_it_raises(tmp_path):
    report = Report("t", tmp_path / "r.md")
    with pytest.raises(RuntimeError), report.section("Broken"):
        print("before")
        raise RuntimeError("boom")
    assert report.sections[0].text == "before\n"


def test_plots_are_pngs_linked_relative_to_the_report(tmp_path):
    pytest.importorskip("matplotlib")
    report = Report("t", tmp_path / "docs" / "r.md", images=tmp_path / "docs" / "img")
    with report.section("With a plot"):
        path = report.plot("line", "A line", lambda ax: ax.plot([1, 2], [3, 4]))
    assert path == tmp_path / "docs" / "img" / "line.png"
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert "![A line](img/line.png)" in report.write().read_text()


def test_without_matplotlib_the_report_says_so(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    report = Report("t", tmp_path / "r.md")
    with report.section("S"):
        assert report.plot("p", "P", lambda ax: None) is None
    assert "matplotlib is not installed" in report.write().read_text()
    assert not (tmp_path / "p.png").exists()


def test_machine_summary_names_the_versions():
    lines = machine_summary(("numpy", "surely-not-a-package"))
    assert lines[0].startswith("- Date: ") and "cores" in lines[1]
    assert "llmds " in lines[2] and "surely-not-a-package not installed" in lines[2]
