"""``netlang render`` as a user runs it."""
from __future__ import annotations

from pathlib import Path

from netlang.cli import main
from tests.viz.svg import read_svg

MNIST = str(Path(__file__).resolve().parents[2] / "specs" / "mnist.net")


def test_render_writes_the_picture_and_says_where(tmp_path, capsys):
    out = tmp_path / "mnist.svg"
    assert main(["render", MNIST, "-o", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    assert "conv1" in read_svg(out.read_bytes()).nodes


def test_the_default_output_is_the_spec_name_as_svg(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["render", MNIST]) == 0
    assert (tmp_path / "mnist.svg").read_bytes().startswith(b"<?xml")


def test_options_pick_the_view(tmp_path):
    out = tmp_path / "t.svg"
    assert main(["render", MNIST, "-o", str(out), "--train", "--optimized",
                 "--detail", "op"]) == 0
    pic = read_svg(out.read_bytes())
    assert pic.of_class("grad") and "optimized for training" in pic.texts


def test_without_dot_the_cli_writes_the_dot_file_and_says_how_to_install(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "mnist.png"
    assert main(["render", MNIST, "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("render error: Graphviz's 'dot' program was not found, so "
                          f"'{out}' was not made; the graph was written to "
                          f"'{tmp_path / 'mnist.dot'}' instead\n")
    assert "hint: install Graphviz (Debian/Ubuntu: sudo apt-get install graphviz" in err
    assert (tmp_path / "mnist.dot").read_text().startswith("digraph mnist")
    assert not out.exists()


def test_errors_are_printed_not_raised(tmp_path, capsys):
    assert main(["render", str(tmp_path / "nope.net"), "-o", str(tmp_path / "x.svg")]) == 1
    assert "cannot read spec" in capsys.readouterr().err
    assert main(["render", MNIST, "-o", str(tmp_path / "missing" / "x.svg")]) == 1
    assert "cannot write" in capsys.readouterr().err
