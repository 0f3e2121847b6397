"""The plugin manager: built-ins, entry points, lookups, failures, sklearn compatibility."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from placedemarche import Classifier, Clusterer, TextExtractor, hookimpl
from placedemarche.cli.main import cli
from placedemarche.core import plugins
from placedemarche.core.errors import MissingDependencyError, PluginConfigError, UnknownPluginError


class ShoutExtractor(TextExtractor):
    name = "shout"
    description = "Counts capital letters"

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def transform(self, X):
        return np.array([[sum(c.isupper() for c in t) * self.scale] for t in X], dtype=np.float32)


class _ShoutPlugin:
    @staticmethod
    @hookimpl
    def register_text_extractors(register):
        register(ShoutExtractor)


class NeedsMissingLib(TextExtractor):
    name = "needs-missing"
    description = "Needs a library that is not installed"
    requires = ("placedemarche_no_such_module",)
    extra = "nothing"


@pytest.fixture
def shout_plugin():
    name = plugins.register_plugin(_ShoutPlugin, name="shout-plugin", provider="tests")
    yield
    plugins.unregister_plugin(name)


def test_builtins_are_registered_through_the_hooks():
    text = plugins.available_plugins("text")
    assert {"bow", "tfidf"} <= set(text)
    assert text["tfidf"].provider == "placedemarche"
    assert {"pca", "svd", "tsne"} <= set(plugins.available_plugins("reducer"))
    hooks = {row["name"]: row["hooks"] for row in plugins.loaded_plugins()}
    assert hooks["placedemarche.plugins.text.tfidf"] == ["register_text_extractors"]


def test_runtime_plugin_is_found_and_created(shout_plugin):
    ext = plugins.create_plugin("text", "shout:scale=2")
    assert isinstance(ext, ShoutExtractor) and ext.scale == 2
    assert ext.fit_transform(["AbC"])[0, 0] == 4.0
    assert plugins.available_plugins("text")["shout"].provider == "tests"


def test_unknown_name_suggests_the_closest():
    with pytest.raises(UnknownPluginError) as err:
        plugins.get_plugin_class("text", "tfidff")
    message = str(err.value)
    assert "did you mean 'tfidf'" in message and "bow" in message and "\n" not in message


def test_aliases_resolve():
    assert plugins.get_plugin_class("text", "tf-idf").name == "tfidf"


def test_an_alias_cannot_take_another_plugins_name(install_distribution):
    install_distribution("alias-thief", "alias_thief_mod", """
        from placedemarche import TextExtractor, hookimpl

        class Thief(TextExtractor):
            name = "thief"
            description = "test"
            aliases = ("tfidf", "tf-idf", "robber")

        @hookimpl
        def register_text_extractors(register):
            register(Thief)
        """)
    assert plugins.get_plugin_class("text", "tfidf").__name__ == "TfidfExtractor"
    assert plugins.get_plugin_class("text", "tf-idf").__name__ == "TfidfExtractor"
    assert plugins.get_plugin_class("text", "robber").__name__ == "Thief"
    errors = [f.error for f in plugins.plugin_failures() if f.plugin == "alias-thief"]
    assert any("alias 'tfidf' of 'thief'" in e and "placedemarche" in e for e in errors), errors


def test_bad_parameters_are_reported():
    with pytest.raises(PluginConfigError, match="no parameter 'max_featurez'.*max_features"):
        plugins.create_plugin("text", "tfidf:max_featurez=10")
    with pytest.raises(PluginConfigError, match="key=value"):
        plugins.create_plugin("text", "tfidf:oops")


def test_spec_parsing_keeps_tuples_and_strings():
    name, params = plugins.parse_plugin_spec("tfidf:ngram_range=(1,2),min_df=3,weights=/a/b.h5,x=None")
    assert name == "tfidf"
    assert params == {"ngram_range": (1, 2), "min_df": 3, "weights": "/a/b.h5", "x": None}


def test_missing_dependency_names_the_extra(monkeypatch):
    bert = plugins.get_plugin_class("text", "bert")
    monkeypatch.setattr(bert, "missing_dependencies", classmethod(lambda cls: ["torch"]))
    assert bert.install_hint() == 'pip install "placedemarche[torch]"'
    with pytest.raises(MissingDependencyError, match=r'needs torch: pip install "placedemarche\[torch\]"'):
        bert.require()
    # No package registered this class, so its extra belongs to no known package.
    assert not NeedsMissingLib.is_available()
    assert NeedsMissingLib.install_hint() == "pip install placedemarche_no_such_module"
    with pytest.raises(MissingDependencyError, match=r"needs placedemarche_no_such_module: pip install"):
        NeedsMissingLib.require()


def test_hint_without_extra_names_distributions_not_import_names(monkeypatch):
    class NeedsLibraries(TextExtractor):
        name = "needs-libraries"
        requires = ("sklearn", "cv2", "PIL", "yaml", "sklearn.cluster", "placedemarche_no_such_module")

    monkeypatch.setattr(NeedsLibraries, "missing_dependencies", classmethod(lambda cls: list(cls.requires)))
    # Case-insensitive: installed distributions keep their own spelling (PyYAML), as pip does.
    assert NeedsLibraries.install_hint().lower() == (
        "pip install scikit-learn opencv-python-headless pillow pyyaml placedemarche_no_such_module")


def test_pip_name_knows_common_packages_that_are_not_installed(monkeypatch):
    from placedemarche.core import base

    monkeypatch.setattr(base, "_installed_distributions", lambda: {})
    assert [base.pip_name(m) for m in ("cv2", "sklearn", "PIL", "yaml", "umap", "gensim")] == [
        "opencv-python-headless", "scikit-learn", "pillow", "pyyaml", "umap-learn", "gensim"]


def test_sklearn_clone_and_pipeline_accept_extractors():
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline

    ext = plugins.create_plugin("text", "tfidf:min_df=1")
    copy = clone(ext)
    assert copy.get_params() == ext.get_params() and copy is not ext
    texts = ["steel watch dial", "analog watch strap", "wrist watch men", "watch for women",
             "cotton baby romper", "baby diaper soft", "infant cotton towel", "baby kids romper"] * 2
    y = [0] * 4 + [1] * 4
    y = y * 2
    scores = cross_val_score(make_pipeline(ext, LogisticRegression()), texts, y, cv=2)
    assert scores.mean() > 0.9



class _LoadedModel(TextExtractor):
    name = "loaded-test"
    transient = ("model_",)

    def __init__(self, size: int = 3):
        self.size = size


def test_transient_attributes_are_left_out_of_pickles():
    import pickle

    ext = _LoadedModel(size=5)
    ext.model_ = lambda text: text  # a loaded model: not picklable
    ext.vocabulary_ = {"watch": 0}  # learned state: kept
    copy = pickle.loads(pickle.dumps(ext))
    assert copy.size == 5 and copy.vocabulary_ == {"watch": 0} and not hasattr(copy, "model_")
    assert ext.model_("x") == "x"  # the original keeps its model


@pytest.fixture
def install_distribution(tmp_path, monkeypatch):
    """Install a fake distribution whose ``placedemarche`` entry point is one module, then
    reload the plugins; it is off sys.path again after the test."""

    def install(dist_name, module_name, module_source):
        (tmp_path / f"{module_name}.py").write_text(textwrap.dedent(module_source))
        info = tmp_path / f"{dist_name}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[placedemarche]\n{dist_name} = {module_name}\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        plugins.reset_plugins()

    return install


def test_plugin_that_raises_on_import_is_reported_not_fatal(install_distribution):
    install_distribution("broken-plugin", "broken_plugin_mod", "raise RuntimeError('boom at import')\n")
    failures = plugins.plugin_failures()
    assert any(f.plugin == "broken-plugin" and "boom at import" in f.error for f in failures)
    # other commands keep working, and `pm plugins` shows the failure
    runner = CliRunner()
    listed = runner.invoke(cli, ["list-extractors", "--json"])
    assert listed.exit_code == 0 and '"tfidf"' in listed.output
    shown = runner.invoke(cli, ["plugins", "--json"])
    assert shown.exit_code == 0 and "boom at import" in shown.output


def test_pm_load_plugins_restricts_entry_points(install_distribution, monkeypatch):
    install_distribution("shout-dist", "shout_dist_mod", """
        import numpy as np
        from placedemarche import TextExtractor, hookimpl

        class Loud(TextExtractor):
            name = "loud"
            description = "test"
            def transform(self, X):
                return np.zeros((len(X), 1), dtype=np.float32)

        @hookimpl
        def register_text_extractors(register):
            register(Loud)
        """)
    assert plugins.available_plugins("text")["loud"].provider == "shout-dist"
    monkeypatch.setenv("PM_LOAD_PLUGINS", "")
    plugins.reset_plugins()
    assert "loud" not in plugins.available_plugins("text")


def test_third_party_cannot_replace_a_builtin(install_distribution):
    install_distribution("impostor", "impostor_mod", """
        from placedemarche import TextExtractor, hookimpl

        class FakeTfidf(TextExtractor):
            name = "tfidf"
            description = "impostor"

        @hookimpl
        def register_text_extractors(register):
            register(FakeTfidf)
        """)
    assert plugins.available_plugins("text")["tfidf"].provider == "placedemarche"
    assert any("already provided by placedemarche" in f.error for f in plugins.plugin_failures())


def test_third_party_hint_names_the_providing_distribution(install_distribution):
    install_distribution("acme-plugins", "acme_plugins_mod", """
        from placedemarche import TextExtractor, hookimpl

        class GpuText(TextExtractor):
            name = "gpu-text"
            description = "test"
            requires = ("acme_no_such_module",)
            extra = "gpu"

        @hookimpl
        def register_text_extractors(register):
            register(GpuText)
        """)
    cls = plugins.get_plugin_class("text", "gpu-text")
    assert cls.install_hint() == 'pip install "acme-plugins[gpu]"'
    with pytest.raises(MissingDependencyError, match=r'pip install "acme-plugins\[gpu\]"'):
        plugins.create_plugin("text", "gpu-text")
    listed = CliRunner().invoke(cli, ["list-extractors"])
    assert 'pip install "acme-plugins[gpu]"' in listed.output, listed.output


def test_pm_plugins_prints_errors_verbatim(install_distribution):
    install_distribution("bracket-plugin", "bracket_plugin_mod",
                         "raise ImportError('install it with pip install \"bracket-plugin[gpu]\"')\n")
    shown = CliRunner().invoke(cli, ["plugins"])
    assert shown.exit_code == 0, shown.output
    assert 'bracket-plugin[gpu]' in shown.output, shown.output


def test_check_specs_reports_every_problem_at_once(monkeypatch):
    for kind, name in (("text", "use"), ("image", "nasnet")):
        monkeypatch.setattr(plugins.get_plugin_class(kind, name), "missing_dependencies",
                            classmethod(lambda cls: ["tensorflow"]))
    plugins.check_specs({"text": ["tfidf", "bow:min_df=1"], "image": ["sift"], "reducer": ["pca"]})
    with pytest.raises(MissingDependencyError) as err:
        plugins.check_specs({"text": ["use", "use"], "image": ["nasnet"]})
    message = str(err.value)
    assert message.startswith("2 problems with the requested plugins: ")
    assert "plugin 'use' needs tensorflow" in message and "plugin 'nasnetmobile' needs tensorflow" in message
    with pytest.raises(PluginConfigError) as err:
        plugins.check_specs({"text": ["use", "tfidff", "tfidf:oops", "bow:max_featurez=2"],
                             "image": ["sift:vocabulary=(", ":x=1"]})
    message = str(err.value)
    assert message.startswith("6 problems") and "\n" not in message
    for expected in ("plugin 'use' needs", "unknown text extractor 'tfidff'", "cannot read parameter 'oops'",
                     "no parameter 'max_featurez'", "no parameter 'vocabulary'", "empty plugin name"):
        assert expected in message, message
    # One problem keeps its own class and message.
    with pytest.raises(UnknownPluginError, match="^unknown image extractor 'sfit'"):
        plugins.check_specs({"image": ["sfit"]})


def test_example_third_party_package_is_installed_and_listed():
    rows = {r["name"]: r for r in __import__("json").loads(
        CliRunner().invoke(cli, ["list-extractors", "--json"]).output)}
    assert "colour-histogram" in rows, (
        "install the example plugin: pip install ./examples/placedemarche-colour-histogram")
    assert rows["colour-histogram"]["provider"] == "placedemarche-colour-histogram"
    assert rows["char-ngrams"]["kind"] == "text"


@pytest.mark.parametrize("command", [["list-extractors"], ["list"]])
def test_listing_plugins_imports_no_heavy_library(command):
    code = ("import sys; from click.testing import CliRunner; from placedemarche.cli.main import cli;"
            f"r = CliRunner().invoke(cli, {command!r}); assert r.exit_code == 0, r.output;"
            "heavy = [m for m in ('tensorflow', 'torch', 'keras', 'sklearn', 'gensim', 'cv2',"
            " 'sentence_transformers', 'tensorflow_hub', 'hdbscan', 'umap') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


class _GroupsByRow(Clusterer):
    name = "every-row"
    description = "One cluster per row [bold]not markup[/bold]"

    def fit_predict(self, X, y=None):
        return np.arange(X.shape[0])


class _MajorityHead(Classifier):
    name = "majority-test"
    description = "Always the most frequent class"
    requires = ("placedemarche_no_such_module",)


class _ListedPlugins:
    @staticmethod
    @hookimpl
    def register_clusterers(register):
        register(_GroupsByRow)

    @staticmethod
    @hookimpl
    def register_classifiers(register):
        register(_MajorityHead)


@pytest.fixture
def clusterer_and_head():
    name = plugins.register_plugin(_ListedPlugins, name="listed-plugins", provider="tests [extra]")
    yield
    plugins.unregister_plugin(name)


def test_pm_list_shows_every_kind_with_provider_and_status(clusterer_and_head):
    result = CliRunner().invoke(cli, ["list"])
    assert result.exit_code == 0, result.output
    for title in ("Text extractors", "Image extractors", "Reducers", "Sources", "Clusterers", "Classifier heads"):
        assert title in result.output, title
    for name in ("tfidf", "sift", "svd (lsa)", "openfoodfacts", "every-row", "majority-test"):
        assert name in result.output, name
    # user strings are shown verbatim, not read as rich markup
    assert "[bold]not markup[/bold]" in result.output and "tests [extra]" in result.output
    assert "pip install placedemarche_no_such_module" in result.output
    rows = json.loads(CliRunner().invoke(cli, ["list", "--json"]).output)
    assert {row["kind"] for row in rows} == set(plugins.KINDS)


def test_pm_list_one_kind(clusterer_and_head):
    result = CliRunner().invoke(cli, ["list", "clusterer"])
    assert result.exit_code == 0, result.output
    assert "Clusterers" in result.output and "every-row" in result.output
    assert "tfidf" not in result.output and "Reducers" not in result.output
    rows = json.loads(CliRunner().invoke(cli, ["list", "classifiers", "--json"]).output)  # plurals too
    assert {row["kind"] for row in rows} == {"classifier"}
    head = next(row for row in rows if row["name"] == "majority-test")
    assert head["provider"] == "tests [extra]" and not head["available"]


def test_pm_list_unknown_kind_is_a_one_line_error():
    result = CliRunner().invoke(cli, ["list", "extractorz"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "unknown plugin kind 'extractorz'" in lines[0]
    assert all(kind in lines[0] for kind in plugins.KINDS), lines[0]


def test_list_aliases_keep_their_output():
    assert (CliRunner().invoke(cli, ["list-reducers", "--json"]).output
            == CliRunner().invoke(cli, ["list", "reducer", "--json"]).output)
    extractors = json.loads(CliRunner().invoke(cli, ["list-extractors", "--json"]).output)
    assert {row["kind"] for row in extractors} == {"text", "image"}
    table = CliRunner().invoke(cli, ["list-extractors"]).output
    assert "Extractors" in table and "modality" in table


def test_the_core_imports_no_plugin_module():
    """Helpers the core and plugins share live in the core (core/runtime.py): a plugin module
    may be absent or fail to load, and the core must not depend on one."""
    import ast
    from pathlib import Path

    import placedemarche.core

    core = Path(placedemarche.core.__file__).parent
    offenders = []
    for path in core.rglob("*.py"):
        package = ["placedemarche", "core", *path.parent.relative_to(core).parts]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                names = [".".join([*base, node.module] if node.module else base)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            offenders += [f"{path.relative_to(core)}:{node.lineno} {name}"
                          for name in names if name.startswith("placedemarche.plugins")]
    assert not offenders, offenders


def test_example_third_party_plugins_run_in_pm_evaluate(tiny_catalog, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [
        "evaluate", "--data", str(tiny_catalog), "--text", "char-ngrams", "--image", "colour-histogram",
        "--seeds", "1", "--cluster-on", "reduced", "--reducer", "pca:n_components=5",
        "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    runs = {r["name"]: r for r in __import__("json").loads((out / "results.json").read_text())["runs"]}
    assert set(runs) == {"char-ngrams", "colour-histogram", "char-ngrams + colour-histogram"}
    # the generated categories differ in colour: the colour histogram separates them
    assert runs["colour-histogram"]["spaces"]["reduced"]["ari_mean"] > 0.5
