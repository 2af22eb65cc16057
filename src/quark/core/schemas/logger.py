"""Schema of the `logger` group: where training metrics go besides logs/metrics.csv."""

from __future__ import annotations

from dataclasses import dataclass

from quark.core.schemas.fields import choice

LOGGERS = ("csv", "tensorboard", "mlflow", "wandb")


@dataclass
class LoggerSchema:
    name: str = choice("csv", LOGGERS)
    # mlflow: the tracking store (a file: URI or a server address)
    tracking_uri: str | None = None
    # mlflow: the experiment; wandb: the project
    project: str | None = None
    # wandb: offline writes locally and never touches the network
    mode: str = choice("offline", ("offline", "online"))
