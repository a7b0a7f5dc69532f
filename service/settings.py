"""Settings: the one declaration in conf/parse.toml, read into frozen dataclasses.

Every other part of the service (app, CLI, deploy renderer) asks this module, so a value is
declared once and cannot disagree between Nginx, uWSGI, systemd and the app.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "conf" / "parse.toml"
PIPELINES = ("parse", "rapidocr")


@dataclass(frozen=True)
class ModelSettings:
    family: str = "ppocr"
    weights_dir: Path = ROOT / "weights"
    precision: str = "auto"
    winograd: bool = True
    # ppocr only: "parse" (page orientation, width-grouped batches) or "rapidocr" (RapidOCR
    # 3.10.0's default pipeline reproduced exactly, per-line 180-degree classifier included).
    pipeline: str = "parse"


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_side: int = 16384
    max_images: int = 8
    deadline_seconds: float = 60.0
    worker_memory_mib: int = 3072

    @property
    def worker_memory_bytes(self) -> int:
        return self.worker_memory_mib << 20


@dataclass(frozen=True)
class NginxSettings:
    listen: str = "127.0.0.1:8100"
    rate_per_second: int = 20
    rate_burst: int = 40


@dataclass(frozen=True)
class AuthSettings:
    keys_file: Path | None = None
    metrics_allow: tuple[str, ...] = ()


@dataclass(frozen=True)
class ResultsSettings:
    dir: Path = ROOT / "run" / "results"
    ttl_seconds: int = 3600
    max_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True)
class Instance:
    port: int
    weight: int = 1
    device: str = "cpu"
    processes: int = 1
    threads: int = 1


@dataclass(frozen=True)
class Settings:
    path: Path
    model: ModelSettings = field(default_factory=ModelSettings)
    limits: Limits = field(default_factory=Limits)
    nginx: NginxSettings = field(default_factory=NginxSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    results: ResultsSettings = field(default_factory=ResultsSettings)
    instances: tuple[Instance, ...] = ()

    def instance(self, port: int) -> Instance:
        """The declared instance on `port`; a port that is not declared is a configuration error."""
        for inst in self.instances:
            if inst.port == port:
                return inst
        raise ValueError(f"port {port} is not declared under [[instances]] in {self.path}")

    def current_instance(self) -> Instance:
        """This process's instance, named by PARSE_PORT (set per instance by uWSGI's environment)."""
        port = os.environ.get("PARSE_PORT")
        if port:
            return self.instance(int(port))
        return self.instances[0] if self.instances else Instance(port=0)


def _path(value: str, base: Path) -> Path:
    p = Path(value)
    return p if p.is_absolute() else base / p


def load(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read the settings file: `path`, else $PARSE_CONFIG, else conf/parse.toml."""
    cfg_path = Path(path or os.environ.get("PARSE_CONFIG") or DEFAULT_CONFIG).resolve()
    with open(cfg_path, "rb") as fh:
        raw = tomllib.load(fh)
    # Relative paths are taken from the repository root when the file sits in conf/, else from its folder.
    base = cfg_path.parent.parent if cfg_path.parent.name == "conf" else cfg_path.parent

    model = dict(raw.get("model", {}))
    if "weights_dir" in model:
        model["weights_dir"] = _path(model["weights_dir"], base)
    if not isinstance(model.get("winograd", True), bool):  # a quoted "false" would read as true
        raise ValueError(f"[model] winograd in {cfg_path} must be true or false, not {model['winograd']!r}")
    if model.get("pipeline", "parse") not in PIPELINES:
        raise ValueError(f"[model] pipeline in {cfg_path} must be one of {PIPELINES}, not {model['pipeline']!r}")
    auth = dict(raw.get("auth", {}))
    auth["keys_file"] = _path(auth["keys_file"], base) if auth.get("keys_file") else None
    auth["metrics_allow"] = tuple(auth.get("metrics_allow", ()))
    results = dict(raw.get("results", {}))
    if "dir" in results:
        results["dir"] = _path(results["dir"], base)

    instances = tuple(Instance(**i) for i in raw.get("instances", ()))
    ports = [i.port for i in instances]
    if len(set(ports)) != len(ports):
        raise ValueError(f"duplicate instance ports in {cfg_path}: {ports}")
    return Settings(
        path=cfg_path,
        model=ModelSettings(**model),
        limits=Limits(**raw.get("limits", {})),
        nginx=NginxSettings(**raw.get("nginx", {})),
        auth=AuthSettings(**auth),
        results=ResultsSettings(**results),
        instances=instances,
    )
