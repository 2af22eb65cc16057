"""The model registry on MLflow: registering a run twice gives one version, aliases move on
promotion (production -> archived), and all of it is there when the registry is reopened."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from quark.core.errors import ConfigError
from quark.governance.registry import DATABASE, ModelRegistry, production_run, registry_dir

from ..conftest import CONF

EXPERIMENT = "demo"


def governance(**changes: object) -> DictConfig:
    node = OmegaConf.load(CONF / "governance" / "default.yaml")
    for key, value in changes.items():
        OmegaConf.update(node, key, value, merge=False)
    return node


@pytest.fixture(scope="module")
def empty_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new registry's database, made once: MLflow's migrations of a new SQLite file take
    about 1.5 s, a copy of the result none."""
    outputs = tmp_path_factory.mktemp("template")
    ModelRegistry.open(governance(), outputs, EXPERIMENT)
    return registry_dir(outputs, EXPERIMENT) / DATABASE


@pytest.fixture
def outputs(tmp_path: Path, empty_database: Path) -> Path:
    outputs = tmp_path / "outputs"
    registry_dir(outputs, EXPERIMENT).mkdir(parents=True)
    shutil.copy(empty_database, registry_dir(outputs, EXPERIMENT) / DATABASE)
    return outputs


def run_dir(tmp_path: Path, name: str, hf: bool = True) -> Path:
    path = tmp_path / "runs" / name
    (path / "hf" if hf else path).mkdir(parents=True)
    return path


def test_registering_a_run_twice_gives_its_one_version(outputs: Path, tmp_path: Path) -> None:
    registry = ModelRegistry.open(governance(), outputs, EXPERIMENT)
    run = run_dir(tmp_path, "a")
    first = registry.register(
        run,
        lineage=[{"step": "data", "path": "/data", "files": [f"{n}.py" for n in range(20000)]}],
        metrics={"exact_match": 0.5},
        card=run / "MODEL_CARD.md",
        description="fine-tuned on arithmetic",
    )
    again = registry.register(run, lineage=[], metrics={"exact_match": 0.9})
    assert again.version == first.version == 1
    assert again.tags == first.tags
    assert first.run_dir == run.resolve()
    assert first.metrics == {"exact_match": 0.5}
    # a corpus's file list is counted, not copied: MLflow holds 100,000 characters in a tag
    assert json.loads(first.tags["lineage"]) == [
        {"step": "data", "path": "/data", "files_count": 20000}
    ]
    assert first.tags["card"] == str((run / "MODEL_CARD.md").resolve())
    assert [v.version for v in registry.versions()] == [1]
    source = registry.client.get_model_version(registry.model_name, "1").source
    assert source == str(run.resolve() / "hf")  # the model itself, not the run's logs
    other = registry.register(run_dir(tmp_path, "b", hf=False), lineage=[], metrics={})
    assert other.version == 2
    assert registry.version_of(run) == first
    assert registry.version_of(tmp_path / "never-registered") is None


def test_promotion_archives_production_and_clears_the_candidate(
    outputs: Path, tmp_path: Path
) -> None:
    registry = ModelRegistry.open(governance(), outputs, EXPERIMENT)
    first = registry.register(run_dir(tmp_path, "a"), lineage=[], metrics={})
    registry.set_alias("candidate", first)
    assert registry.by_alias("candidate") == registry.version_of(tmp_path / "runs" / "a")
    assert registry.promote(first) is None  # nothing was in production
    assert registry.by_alias("production").version == 1
    assert registry.by_alias("candidate") is None

    second = registry.register(run_dir(tmp_path, "b"), lineage=[], metrics={})
    registry.set_alias("candidate", second)
    archived = registry.promote(second)
    assert archived is not None and archived.version == 1
    assert archived.aliases == ("archived",)
    assert "archived_at" in archived.tags
    assert registry.by_alias("production").version == 2
    assert registry.by_alias("candidate") is None
    assert [(v.version, v.aliases) for v in registry.versions()] == [
        (1, ("archived",)),
        (2, ("production",)),
    ]
    assert registry.promote(second) is None  # promoting production again changes nothing
    assert registry.by_alias("archived").version == 1


def test_an_alias_outside_the_three_is_refused(outputs: Path, tmp_path: Path) -> None:
    registry = ModelRegistry.open(governance(), outputs, EXPERIMENT)
    version = registry.register(run_dir(tmp_path, "a"), lineage=[], metrics={})
    with pytest.raises(ValueError, match="staging"):
        registry.set_alias("staging", version)


def test_a_reopened_registry_holds_the_versions_and_aliases(outputs: Path, tmp_path: Path) -> None:
    registry = ModelRegistry.open(governance(), outputs, EXPERIMENT)
    version = registry.register(run_dir(tmp_path, "a"), lineage=[], metrics={"exact_match": 0.7})
    registry.promote(version)
    reopened = ModelRegistry.open(governance(), outputs, EXPERIMENT)
    assert reopened.uri == registry.uri
    assert reopened.uri == f"sqlite:///{outputs.resolve() / EXPERIMENT / 'registry' / DATABASE}"
    production = reopened.by_alias("production")
    assert production is not None and production.metrics == {"exact_match": 0.7}
    assert reopened.register(tmp_path / "runs" / "a", lineage=[], metrics={}).version == 1


def test_production_run_is_the_run_directory_of_production(outputs: Path, tmp_path: Path) -> None:
    assert production_run(governance(), tmp_path / "elsewhere", EXPERIMENT) is None
    assert not (tmp_path / "elsewhere").exists()  # asking created no registry
    assert production_run(governance(), outputs, EXPERIMENT) is None
    registry = ModelRegistry.open(governance(), outputs, EXPERIMENT)
    version = registry.register(run_dir(tmp_path, "a"), lineage=[], metrics={})
    registry.promote(version)
    assert production_run(governance(), outputs, EXPERIMENT) == (tmp_path / "runs" / "a").resolve()


def test_the_model_name_and_uri_can_be_named(tmp_path: Path, empty_database: Path) -> None:
    database = tmp_path / "shared.db"
    shutil.copy(empty_database, database)
    config = governance(**{"registry.uri": f"sqlite:///{database}", "registry.model_name": "arith"})
    registry = ModelRegistry.open(config, tmp_path / "outputs", EXPERIMENT)
    assert (registry.uri, registry.model_name) == (f"sqlite:///{database}", "arith")
    registry.register(run_dir(tmp_path, "a"), lineage=[], metrics={})
    assert "arith" in [m.name for m in registry.client.search_registered_models()]
    assert not (tmp_path / "outputs").exists()


def test_a_tracking_server_uri_is_refused_with_the_key(tmp_path: Path) -> None:
    # a server refuses versions whose source is a local path (Quark's run directories)
    with pytest.raises(ConfigError, match=r"governance\.registry\.uri: 'http://mlflow:5000'"):
        ModelRegistry.open(governance(**{"registry.uri": "http://mlflow:5000"}), tmp_path, "demo")
