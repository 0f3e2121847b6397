"""What `pm` prints: hints and errors survive rich markup, all plugin problems are reported
before any data is loaded, and TensorFlow's start-up chatter stays off the terminal."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
from click.testing import CliRunner

from placedemarche.cli.main import cli
from placedemarche.core import plugins


def _missing(monkeypatch, kind, name, modules):
    """Make a built-in plugin look as in a core-only install, where ``modules`` are absent."""
    cls = plugins.get_plugin_class(kind, name)
    monkeypatch.setattr(cls, "missing_dependencies", classmethod(lambda c: list(modules)))
    return cls


def test_error_keeps_the_extra_of_the_install_hint(monkeypatch, tiny_catalog, tmp_path):
    _missing(monkeypatch, "text", "bert", ["torch", "sentence_transformers"])
    result = CliRunner().invoke(cli, ["evaluate", "--data", str(tiny_catalog), "--text", "bert",
                                      "--out", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 1
    assert 'pip install "placedemarche[torch]"' in result.output, result.output


def test_list_extractors_status_keeps_the_extra(monkeypatch):
    _missing(monkeypatch, "text", "bert", ["torch"])
    result = CliRunner().invoke(cli, ["list-extractors", "--modality", "text"])
    assert result.exit_code == 0, result.output
    bert_row = next(line for line in result.output.splitlines() if "│ bert" in line)
    assert 'pip install "placedemarche[torch]"' in bert_row, result.output


def test_warnings_are_printed_without_markup(capsys):
    from placedemarche.cli.render import show_warnings_as_lines

    with warnings.catch_warnings():  # restores warnings.showwarning afterwards
        warnings.simplefilter("always")
        show_warnings_as_lines()
        warnings.warn('for lemmas: pip install "placedemarche[nltk]" or set [bold]NLTK_DATA')
    err = capsys.readouterr().err
    assert 'pip install "placedemarche[nltk]" or set [bold]NLTK_DATA' in err, err


def test_evaluate_reports_every_unusable_plugin_before_loading_data(monkeypatch, tmp_path):
    _missing(monkeypatch, "text", "use", ["tensorflow", "tensorflow_hub"])
    _missing(monkeypatch, "image", "nasnet", ["tensorflow", "keras"])
    # --data does not exist: a catalogue error would mean the plugins were checked too late.
    missing_data = str(tmp_path / "no-such.csv")
    for command in (["evaluate", "--out", str(tmp_path / "out")], ["train", "--out", str(tmp_path / "model")]):
        result = CliRunner().invoke(cli, [*command, "--data", missing_data, "--text", "use",
                                          "--image", "nasnet", "--text", "tfidf:max_featurez=3"])
        assert result.exit_code == 1, result.output
        error = result.output.strip()
        assert error.startswith("error: 3 problems with the requested plugins"), error
        assert "plugin 'use' needs tensorflow, tensorflow_hub" in error
        assert "plugin 'nasnetmobile' needs tensorflow, keras" in error
        assert 'pip install "placedemarche[keras]"' in error
        assert "no parameter 'max_featurez'" in error
        assert "no-such.csv" not in error


@pytest.fixture
def noisy_tensorflow(tmp_path):
    """A fake ``tensorflow`` that logs like the real one at import (native writes to file
    descriptor 2, a pkg_resources deprecation warning) and issues one real warning; and a
    script running `pm` with an extra command that imports it."""
    fake = tmp_path / "fake"
    (fake / "tensorflow").mkdir(parents=True)
    (fake / "tensorflow" / "__init__.py").write_text(textwrap.dedent("""
        import os, warnings
        os.write(2, b"I0000 00:00:1.0 1 cudart_stub.cc:31] Could not find cuda drivers\\n")
        os.write(2, b"oneDNN custom operations are on.\\n")
        warnings.warn("pkg_resources is deprecated as an API.", UserWarning)
        warnings.warn("a warning users need [keep it]", UserWarning)
        """))
    script = tmp_path / "pm_with_import.py"
    script.write_text(textwrap.dedent("""
        import os, sys
        import click
        from placedemarche.cli.main import cli

        @cli.command("import-tf")
        def import_tf():
            import tensorflow
            click.echo(f"imported; TF_CPP_MIN_LOG_LEVEL={os.environ.get('TF_CPP_MIN_LOG_LEVEL')}")

        cli(sys.argv[1:], prog_name="pm")
        """))
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(fake), os.environ.get("PYTHONPATH")]))

    def run(*args):
        return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                              env=env, timeout=120)

    return run


def test_library_chatter_is_hidden_by_default(noisy_tensorflow):
    result = noisy_tensorflow("import-tf")
    assert result.returncode == 0, result.stderr
    assert "imported; TF_CPP_MIN_LOG_LEVEL=3" in result.stdout
    for chatter in ("cudart_stub", "oneDNN", "pkg_resources"):
        assert chatter not in result.stderr, result.stderr
    assert "warning: a warning users need [keep it]" in result.stderr


def test_verbose_shows_library_chatter(noisy_tensorflow):
    result = noisy_tensorflow("--verbose", "import-tf")
    assert result.returncode == 0, result.stderr
    assert "imported; TF_CPP_MIN_LOG_LEVEL=0" in result.stdout
    for chatter in ("cudart_stub", "oneDNN", "pkg_resources is deprecated", "a warning users need"):
        assert chatter in result.stderr, result.stderr


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs the keras extra")
def test_evaluate_with_a_keras_cnn_prints_no_tensorflow_chatter(tiny_catalog, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    pm = [sys.executable, "-c", "from placedemarche.cli.main import cli; cli(prog_name='pm')"]
    result = subprocess.run(
        [*pm, "evaluate", "--data", str(tiny_catalog), "--image", "mobilenet:alpha=0.75,weights=None,input_size=32",
         "--seeds", "1", "--cluster-on", "reduced", "--reducer", "pca:n_components=3",
         "--out", str(tmp_path / "out"), "--no-progress"],
        capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "mobilenet" in result.stdout
    for chatter in ("cudart_stub", "absl::InitializeLog", "cpu_feature_guard", "oneDNN", "pkg_resources"):
        assert chatter not in result.stderr, result.stderr
