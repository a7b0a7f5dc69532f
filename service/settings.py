"""Settings: the one declaration in conf/parse.toml, read into frozen dataclasses.

Every other part of the service (app, CLI, deploy renderer) asks this module, so a value is
declared once and cannot disagree between Nginx, uWSGI, systemd and the app.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "conf" / "parse.toml"
# The uWSGI stats server of the instance on port P listens on 127.0.0.1:P+STATS_OFFSET.
STATS_OFFSET = 1000
PIPELINES = ("parse", "rapidocr")
TABLE_MODES = ("parse", "rapidtable")
LAYOUTS = ("parse", "rapidlayout")


@dataclass(frozen=True)
class ModelSettings:
    family: str = "ppocr"
    weights_dir: Path = ROOT / "weights"
    precision: str = "auto"
    winograd: bool = True
    # ppocr only: "parse" (page orientation, width-bucketed batches) or "rapidocr" (RapidOCR
    # 3.10.0's default pipeline reproduced exactly, per-line 180-degree classifier included).
    pipeline: str = "parse"
    # ppocr, parse pipeline: detector inputs padded to multiples of this many px (0: not padded),
    # and on CUDA cuDNN instead of PyTorch's own kernels.
    det_bucket: int = 0
    cudnn: bool = False


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_side: int = 16384
    max_images: int = 8
    deadline_seconds: float = 60.0
    seconds_per_request: float = 2.0
    worker_memory_mib: int = 3072
    max_pages: int = 16
    max_document_pages: int = 2000

    @property
    def worker_memory_bytes(self) -> int:
        return self.worker_memory_mib << 20


@dataclass(frozen=True)
class DocumentSettings:
    dpi: float = 300.0
    min_dpi: float = 72.0
    max_dpi: float = 600.0


@dataclass(frozen=True)
class StructureSettings:
    # "rapidtable" is RapidTable 0.3.0 exactly; "parse" fills cells from parse's own words.
    table: str = "parse"
    table_max_steps: int = 501
    max_table_cells: int = 500
    # Regions, Markdown and their bounds (the document helper).
    enabled_by_default: bool = False
    max_regions: int = 200
    max_tables: int = 24
    # "rapidlayout" is RapidLayout 1.2.1 exactly; "parse" uses the two thresholds below.
    layout: str = "parse"
    layout_min_score: float = 0.5
    layout_nms_iou: float = 0.5


@dataclass(frozen=True)
class NginxSettings:
    listen: str = "127.0.0.1:8100"
    # The [[hosts]] entry Nginx runs on (the front host).
    host: str = "local"
    rate_per_second: int = 20
    rate_burst: int = 40


@dataclass(frozen=True)
class AuthSettings:
    keys_file: Path | None = None
    metrics_allow: tuple[str, ...] = ()
    # Keys in the store ([store]), shared by every host, instead of a keys file of this host's own.
    keys_in_store: bool = False

    @property
    def keys_on(self) -> bool:
        return self.keys_file is not None or self.keys_in_store


@dataclass(frozen=True)
class StoreSettings:
    # Empty: SQLite in [jobs] dir (one host). postgresql://USER@HOST:PORT/DB: the fleet's store.
    url: str = ""
    password_file: Path | None = None
    connect_timeout_seconds: float = 5.0
    # How often each worker re-reads the key set from the store: a revocation's bound.
    refresh_seconds: float = 5.0


@dataclass(frozen=True)
class TlsSettings:
    # Where `python -m service.ops.certs` keeps the private CA and each host's certificate.
    dir: Path = ROOT / "pki"


@dataclass(frozen=True)
class ResultsSettings:
    dir: Path = ROOT / "run" / "results"
    ttl_seconds: int = 3600
    max_bytes: int = 256 * 1024 * 1024


# The one host of a declaration without [[hosts]]: everything on loopback, as on one machine.
LOCAL_HOST = "local"


@dataclass(frozen=True)
class Host:
    """A machine of the fleet: `bind` is the address its instances listen on, `address` the one
    Nginx (and Prometheus, and the certificates) reach it by; they differ behind NAT."""

    name: str
    bind: str = "127.0.0.1"
    address: str = ""

    @property
    def reach(self) -> str:
        return self.address or self.bind

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.bind).is_loopback and ipaddress.ip_address(self.reach).is_loopback


@dataclass(frozen=True)
class JobsSettings:
    dir: Path = ROOT / "run" / "jobs"
    max_pages: int = 500
    max_bytes: int = 200 * 1024 * 1024
    max_waiting: int = 4
    workers: int = 1
    max_running: int = 1
    ttl_seconds: int = 86400
    dir_max_bytes: int = 4 * 1024 * 1024 * 1024
    lease_seconds: float = 30.0
    poll_seconds: float = 0.5
    page_attempts: int = 3

    @property
    def db(self) -> Path:
        return self.dir / "jobs.sqlite3"


@dataclass(frozen=True)
class Instance:
    port: int
    host: str = LOCAL_HOST
    weight: int = 1
    device: str = "cpu"
    processes: int = 1
    threads: int = 1
    # Batching across requests (service/ocr/batching.py): the most pages one model call gathers
    # from a worker's concurrent requests, which is also its uWSGI request threads; 1 is none.
    batch_pages: int = 1
    batch_wait_ms: float = 5.0

    @property
    def stats_address(self) -> str:
        return f"127.0.0.1:{self.port + STATS_OFFSET}"


@dataclass(frozen=True)
class Settings:
    path: Path
    model: ModelSettings = field(default_factory=ModelSettings)
    limits: Limits = field(default_factory=Limits)
    documents: DocumentSettings = field(default_factory=DocumentSettings)
    structure: StructureSettings = field(default_factory=StructureSettings)
    nginx: NginxSettings = field(default_factory=NginxSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    results: ResultsSettings = field(default_factory=ResultsSettings)
    jobs: JobsSettings = field(default_factory=JobsSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    instances: tuple[Instance, ...] = ()
    hosts: tuple[Host, ...] = (Host(LOCAL_HOST),)

    def instance(self, port: int, host: str | None = None) -> Instance:
        """The declared instance on `port` (of `host`, when several hosts use the same port);
        a port that is not declared is a configuration error."""
        for inst in self.instances:
            if inst.port == port and host in (None, inst.host):
                return inst
        where = f" of host {host!r}" if host else ""
        raise ValueError(f"port {port}{where} is not declared under [[instances]] in {self.path}")

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise ValueError(f"host {name!r} is not declared under [[hosts]] in {self.path}")

    def current_instance(self) -> Instance:
        """This process's instance, named by PARSE_PORT and PARSE_HOST (set per instance by
        uWSGI's environment)."""
        port = os.environ.get("PARSE_PORT")
        if port:
            return self.instance(int(port), os.environ.get("PARSE_HOST"))
        return self.instances[0] if self.instances else Instance(port=0)


def _path(value: str, base: Path) -> Path:
    p = Path(value)
    return p if p.is_absolute() else base / p


def _documents(raw: dict, cfg_path: Path) -> DocumentSettings:
    docs = DocumentSettings(**raw)
    if not 0 < docs.min_dpi <= docs.dpi <= docs.max_dpi:
        raise ValueError(f"[documents] in {cfg_path} needs 0 < min_dpi <= dpi <= max_dpi, "
                         f"not {docs.min_dpi}, {docs.dpi}, {docs.max_dpi}")
    return docs


def _structure(raw: dict, cfg_path: Path) -> StructureSettings:
    st = StructureSettings(**raw)
    if st.table not in TABLE_MODES:
        raise ValueError(f"[structure] table in {cfg_path} must be one of {TABLE_MODES}, not {st.table!r}")
    if not isinstance(st.enabled_by_default, bool):
        raise ValueError(f"[structure] enabled_by_default in {cfg_path} must be true or false, "
                         f"not {st.enabled_by_default!r}")
    for key in ("table_max_steps", "max_table_cells", "max_regions", "max_tables"):
        value = getattr(st, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"[structure] {key} in {cfg_path} must be a whole number above 0, not {value!r}")
    if st.layout not in LAYOUTS:
        raise ValueError(f"[structure] layout in {cfg_path} must be one of {LAYOUTS}, not {st.layout!r}")
    for key in ("layout_min_score", "layout_nms_iou"):
        value = getattr(st, key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
            raise ValueError(f"[structure] {key} in {cfg_path} must be a number in [0, 1], not {value!r}")
    return st


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
    for flag in ("winograd", "cudnn"):
        if not isinstance(model.get(flag, True), bool):  # a quoted "false" would read as true
            raise ValueError(f"[model] {flag} in {cfg_path} must be true or false, not {model[flag]!r}")
    bucket = model.get("det_bucket", 0)
    if not isinstance(bucket, int) or isinstance(bucket, bool) or bucket not in (0, *range(32, 1025, 32)):
        raise ValueError(f"[model] det_bucket in {cfg_path} must be 0 or a multiple of 32 up to 1024, "
                         f"not {model['det_bucket']!r}")
    if model.get("pipeline", "parse") not in PIPELINES:
        raise ValueError(f"[model] pipeline in {cfg_path} must be one of {PIPELINES}, not {model['pipeline']!r}")
    auth = dict(raw.get("auth", {}))
    auth["keys_file"] = _path(auth["keys_file"], base) if auth.get("keys_file") else None
    auth["metrics_allow"] = tuple(auth.get("metrics_allow", ()))
    store = dict(raw.get("store", {}))
    store["password_file"] = _path(store["password_file"], base) if store.get("password_file") else None
    if not isinstance(auth.get("keys_in_store", False), bool):
        raise ValueError(f"[auth] keys_in_store in {cfg_path} must be true or false")
    results = dict(raw.get("results", {}))
    if "dir" in results:
        results["dir"] = _path(results["dir"], base)
    jobs = dict(raw.get("jobs", {}))
    if "dir" in jobs:
        jobs["dir"] = _path(jobs["dir"], base)
    tls = dict(raw.get("tls", {}))
    if "dir" in tls:
        tls["dir"] = _path(tls["dir"], base)

    limits = Limits(**raw.get("limits", {}))
    if not limits.seconds_per_request > 0:
        raise ValueError(f"[limits] seconds_per_request in {cfg_path} must be above 0, not {limits.seconds_per_request!r}")
    for inst in raw.get("instances", ()):
        for key, kinds in (("batch_pages", (int,)), ("batch_wait_ms", (int, float))):
            if key in inst and (not isinstance(inst[key], kinds) or isinstance(inst[key], bool)):
                raise ValueError(f"[[instances]] {key} in {cfg_path} must be a number, not {inst[key]!r}")
    instances = tuple(Instance(**i) for i in raw.get("instances", ()))
    ports = [(i.host, i.port) for i in instances]
    if len(set(ports)) != len(ports):
        raise ValueError(f"duplicate instance ports in {cfg_path}: {[p for _, p in ports]}")
    hosts = tuple(Host(**h) for h in raw.get("hosts", ())) or (Host(LOCAL_HOST),)
    names = [h.name for h in hosts]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate host names in {cfg_path}: {names}")
    nginx = NginxSettings(**raw.get("nginx", {}))
    for name in {i.host for i in instances} | {nginx.host}:
        if name not in names:
            raise ValueError(f"host {name!r} is used but not declared under [[hosts]] in {cfg_path}")
    return Settings(
        path=cfg_path,
        model=ModelSettings(**model),
        limits=limits,
        documents=_documents(raw.get("documents", {}), cfg_path),
        structure=_structure(raw.get("structure", {}), cfg_path),
        nginx=nginx,
        auth=AuthSettings(**auth),
        results=ResultsSettings(**results),
        jobs=JobsSettings(**jobs),
        tls=TlsSettings(**tls),
        store=StoreSettings(**store),
        instances=instances,
        hosts=hosts,
    )
