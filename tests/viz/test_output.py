"""Writing pictures: formats by extension, clear errors, and the way out when dot is missing."""
from __future__ import annotations

import pytest

from netlang.cli import main
from netlang.errors import NetlangError
from netlang.viz import GraphvizMissing, RenderError, diagram_of, render_graph, to_dot
from tests.viz.nets import mlp_graph


@pytest.mark.parametrize("ext, magic", [(".svg", b"<?xml"), (".png", b"\x89PNG"),
                                        (".pdf", b"%PDF"), (".dot", b"digraph")])
def test_the_extension_picks_the_format(tmp_path, ext, magic):
    path = render_graph(mlp_graph(), tmp_path / f"net{ext}")
    assert path.read_bytes().startswith(magic)


def test_an_unknown_extension_is_a_netlang_error_naming_the_formats(tmp_path):
    with pytest.raises(RenderError) as info:
        render_graph(mlp_graph(), tmp_path / "net.jpg")
    assert isinstance(info.value, NetlangError)
    assert str(info.value) == (f"render error: cannot render to '{tmp_path / 'net.jpg'}': "
                               "unknown format (.jpg)\n"
                               "hint: name the output .svg, .png, .pdf or .dot")


@pytest.mark.parametrize("ext", [".svg", ".dot"])
def test_an_unwritable_path_is_a_netlang_error(tmp_path, ext):
    target = tmp_path / "no_such_folder" / f"net{ext}"
    with pytest.raises(RenderError, match="cannot write .*No such file or directory"):
        render_graph(mlp_graph(), target)
    folder = tmp_path / f"taken{ext}"
    folder.mkdir()
    with pytest.raises(RenderError, match="cannot write .*Is a directory"):
        render_graph(mlp_graph(), folder)


def test_without_dot_the_source_is_still_written_with_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))   # no dot program anywhere
    with pytest.raises(GraphvizMissing) as info:
        render_graph(mlp_graph(), tmp_path / "net.svg")
    written = tmp_path / "net.dot"
    assert info.value.dot_path == written
    assert written.read_text() == to_dot(diagram_of(mlp_graph()))
    assert not (tmp_path / "net.svg").exists()
    message = str(info.value)
    assert "'dot' program was not found" in message
    assert f"written to '{written}'" in message
    assert "apt-get install graphviz" in message
    assert f"dot -Tsvg {written} -o {tmp_path / 'net.svg'}" in message


def test_without_dot_a_dot_file_needs_nothing_else(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert render_graph(mlp_graph(), tmp_path / "net.dot").read_text().startswith("digraph")


def test_unknown_detail_is_an_error():
    with pytest.raises(RenderError, match="unknown detail 'layers'"):
        diagram_of(mlp_graph(), "layers")


def test_cli_rejects_a_bad_extension_before_compiling(tmp_path, capsys):
    assert main(["render", str(tmp_path / "missing.net"), "-o", "out.gif"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("render error: cannot render to 'out.gif': unknown format (.gif)")
