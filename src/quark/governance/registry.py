"""The model registry: each registered model run is a version of one MLflow registered model,
and the aliases candidate, production and archived say which version is which.

By default the registry is a SQLite file beside the experiment's runs,
<paths.output_dir>/<experiment>/registry/mlflow.db (mlflow ui --backend-store-uri
sqlite:///... shows it); governance.registry.uri names any other MLflow registry (a server).
A version points at its run directory (source: the run's hf/ when it has one) and carries in
its tags the run directory, its lineage (each input's record, a list by its length) and metrics
(JSON) and its model card's path.

MLflow is imported only when a registry is opened (about a second).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quark.core.errors import ConfigError

REGISTRY_DIR = "registry"
DATABASE = "mlflow.db"
AUDIT_LOG = "audit.jsonl"
SQLITE = "sqlite:///"
# version tags: where the version came from and what it measured
RUN_DIR_TAG, LINEAGE_TAG, METRICS_TAG, CARD_TAG = "run_dir", "lineage", "metrics", "card"


@dataclass(frozen=True)
class RegisteredVersion:
    """One version of the registered model: its number, the run it is, its aliases and tags."""

    version: int
    run_dir: Path
    aliases: tuple[str, ...]
    tags: dict[str, str]

    @property
    def metrics(self) -> dict[str, float]:
        """The metrics recorded when the version was registered."""
        return {k: float(v) for k, v in json.loads(self.tags.get(METRICS_TAG, "{}")).items()}

    @property
    def label(self) -> str:
        return f"version {self.version} ({self.run_dir})"


# what governance.registry.uri may be: a database MLflow's SQLAlchemy store opens
DATABASE_SCHEMES = ("sqlite:", "postgresql", "mysql", "mssql")


def registry_dir(output_dir: Path, experiment: str) -> Path:
    return Path(output_dir).resolve() / experiment / REGISTRY_DIR


def registry_uri(governance: Any, output_dir: Path, experiment: str) -> str:
    """governance.registry.uri, or the experiment's SQLite registry."""
    given = governance.registry.uri
    if given:
        return str(given)
    return f"{SQLITE}{registry_dir(output_dir, experiment) / DATABASE}"


def audit_log_path(governance: Any, output_dir: Path, experiment: str) -> Path:
    """governance.audit_log, or audit.jsonl in the experiment's registry directory."""
    given = governance.audit_log
    if given:
        return Path(str(given)).expanduser()
    return registry_dir(output_dir, experiment) / AUDIT_LOG


class ModelRegistry:
    """One registered model in an MLflow registry, its versions and its aliases."""

    ALIASES = ("candidate", "production", "archived")

    def __init__(self, client: Any, uri: str, model_name: str) -> None:
        self.client = client
        self.uri = uri
        self.model_name = model_name

    @classmethod
    def open(cls, governance: Any, output_dir: Path, experiment: str) -> ModelRegistry:
        """The registry governance.registry names (default: the experiment's SQLite file),
        with its registered model created if it is not there yet.

        Raises:
            ConfigError: the registry cannot be opened (governance.registry.uri), or MLflow
                is not installed.
        """
        uri = registry_uri(governance, output_dir, experiment)
        name = str(governance.registry.model_name or experiment)
        if not uri.startswith(DATABASE_SCHEMES):
            # an MLflow tracking server refuses a version whose source is a local path unless
            # an MLflow run holds it; Quark's versions point at run directories
            raise ConfigError(
                "governance.registry.uri", f"'{uri}' is not a database URI",
                f"a database MLflow's registry stores to ({', '.join(DATABASE_SCHEMES)}...), "
                "or null for the experiment's SQLite file; a tracking server is not supported yet",
            )  # fmt: skip
        if uri.startswith(SQLITE):
            Path(uri.removeprefix(SQLITE)).parent.mkdir(parents=True, exist_ok=True)
        client = _client(uri)
        from mlflow.exceptions import MlflowException

        try:
            client.create_registered_model(name, description=f"Quark experiment {experiment}")
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise ConfigError(
                    "governance.registry.uri",
                    f"the registry at {uri} refused model '{name}' ({_first_line(exc)})",
                    "a database URI (sqlite:///path.db, postgresql://host/db), or null",
                ) from None
        return cls(client, uri, name)

    def register(
        self,
        run_dir: Path,
        *,
        lineage: list[dict[str, Any]],
        metrics: dict[str, float],
        card: Path | None = None,
        description: str = "",
    ) -> RegisteredVersion:
        """The version for `run_dir`: the one already registered, else a new one."""
        run_dir = Path(run_dir).resolve()
        existing = self.version_of(run_dir)
        if existing is not None:
            return existing
        tags = {
            RUN_DIR_TAG: str(run_dir),
            LINEAGE_TAG: json.dumps([_flat(item) for item in lineage], sort_keys=True, default=str),
            METRICS_TAG: json.dumps({k: float(v) for k, v in metrics.items()}, sort_keys=True),
        }
        if card is not None:
            tags[CARD_TAG] = str(Path(card).resolve())
        source = run_dir / "hf" if (run_dir / "hf").is_dir() else run_dir
        created = self.client.create_model_version(
            self.model_name, str(source), tags=tags, description=description or None
        )
        return self._version(created, self._aliases())

    def version_of(self, run_dir: Path) -> RegisteredVersion | None:
        """The version registered for `run_dir`, or None."""
        wanted = str(Path(run_dir).resolve())
        for version in self.versions():
            if str(version.run_dir) == wanted:
                return version
        return None

    def by_alias(self, alias: str) -> RegisteredVersion | None:
        """The version `alias` points at, or None when it points at none."""
        self._check_alias(alias)
        pointed = self._aliases().get(alias)
        if pointed is None:
            return None
        found = self.client.get_model_version(self.model_name, str(pointed))
        return self._version(found, self._aliases())

    def set_alias(self, alias: str, version: RegisteredVersion) -> None:
        """Point `alias` at `version` (an alias points at one version at a time)."""
        self._check_alias(alias)
        self.client.set_registered_model_alias(self.model_name, alias, str(version.version))

    def promote(self, candidate: RegisteredVersion) -> RegisteredVersion | None:
        """Make `candidate` production; the production version before it becomes archived and
        is returned (None: there was none, or it was `candidate` already)."""
        from quark.core.run import now_iso

        current = self.by_alias("production")
        if current is not None and current.version == candidate.version:
            return None
        if current is not None:
            self.set_alias("archived", current)
            self.client.set_model_version_tag(
                self.model_name, str(current.version), "archived_at", now_iso()
            )
        self.set_alias("production", candidate)
        self.client.set_model_version_tag(
            self.model_name, str(candidate.version), "promoted_at", now_iso()
        )
        if self._aliases().get("candidate") == candidate.version:
            self.client.delete_registered_model_alias(self.model_name, "candidate")
        return self.by_alias("archived") if current is not None else None

    def attach_card(self, version: RegisteredVersion, card: Path) -> None:
        """Record `card` (the version's model card, written once its evaluation and decision
        are known) in the version's `card` tag."""
        self.client.set_model_version_tag(
            self.model_name, str(version.version), CARD_TAG, str(Path(card).resolve())
        )

    def versions(self) -> list[RegisteredVersion]:
        """Every version, oldest first."""
        aliases = self._aliases()
        found: list[Any] = []
        token = None
        while True:
            page = self.client.search_model_versions(
                f"name = '{self._quoted_name()}'", page_token=token
            )
            found.extend(page)
            token = page.token
            if not token:
                break
        return sorted((self._version(v, aliases) for v in found), key=lambda v: v.version)

    def _aliases(self) -> dict[str, int]:
        # search_model_versions may leave each version's aliases empty (it does with the
        # SQLite store, MLflow 3): the registered model holds them all, alias -> version
        model = self.client.get_registered_model(self.model_name)
        return {str(alias): int(number) for alias, number in (model.aliases or {}).items()}

    def _version(self, found: Any, aliases: dict[str, int]) -> RegisteredVersion:
        number = int(found.version)
        tags = {str(k): str(v) for k, v in (found.tags or {}).items()}
        source = Path(str(found.source))
        run_dir = Path(tags.get(RUN_DIR_TAG) or (source.parent if source.name == "hf" else source))
        mine = tuple(alias for alias, pointed in sorted(aliases.items()) if pointed == number)
        return RegisteredVersion(number, run_dir, mine, tags)

    def _check_alias(self, alias: str) -> None:
        if alias not in self.ALIASES:
            raise ValueError(f"alias '{alias}' is not one of {', '.join(self.ALIASES)}")

    def _quoted_name(self) -> str:
        return self.model_name.replace("'", "\\'")


def production_run(governance: Any, output_dir: Path, experiment: str) -> Path | None:
    """The run directory of the production version, or None when there is no registry yet or
    no version is in production. Without a registry file, MLflow is not imported."""
    local = not governance.registry.uri
    if local and not (registry_dir(output_dir, experiment) / DATABASE).is_file():
        return None
    production = ModelRegistry.open(governance, output_dir, experiment).by_alias("production")
    return production.run_dir if production is not None else None


def _client(uri: str) -> Any:
    # A registry of local files should not report usage over the network (MLflow 3 does unless
    # told not to); a user who wants it sets MLFLOW_DISABLE_TELEMETRY=false.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        from mlflow.tracking import MlflowClient
    except ModuleNotFoundError as exc:
        raise ConfigError(
            "governance",
            f"the model registry needs the '{exc.name}' package, which is not installed",
            "pip install 'quark[loggers]'",
        ) from None
    # MLflow logs each schema migration of a new SQLite store at INFO (through alembic); its
    # import sets the level of its own logger, so this comes after it
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    """A lineage record without its lists and mappings, each list by its length: a corpus input
    lists every file it read, and MLflow holds at most 100,000 characters in a tag."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, list):
            flat[f"{key}_count"] = len(value)
        elif not isinstance(value, dict):
            flat[key] = value
    return flat


def _first_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]
