"""pirag's configuration: TOML decoded into typed msgspec Structs, one Struct per section.

``configs/pirag.toml`` is the commented default and documents every key; a test checks that each key
defined here appears there. Unknown keys and bad values are errors that name the file and the key.
Relative paths in the file are relative to the state directory. A leaf module: anything may import it.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from pirag.client.paths import default_socket_path, default_state_dir

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
NonNegFloat = Annotated[float, msgspec.Meta(ge=0)]
Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    pass


class ServerConfig(_Section):
    socket: str = ""                       # empty: PIRAG_SOCKET / RUNTIME_DIRECTORY / XDG_RUNTIME_DIR default
    max_frame_bytes: Annotated[int, msgspec.Meta(ge=1024, le=256 << 20)] = 32 << 20
    max_connections: PositiveInt = 256
    max_inflight_per_connection: PositiveInt = 64
    max_inflight_total: PositiveInt = 1024
    idle_timeout_s: PositiveFloat = 300.0    # a connection with no request for this long is closed
    frame_timeout_s: PositiveFloat = 10.0    # a frame must arrive whole within this once it has begun
    shutdown_timeout_s: PositiveFloat = 20.0
    allowed_uids: list[NonNegInt] = []       # empty lists and check_peers=false: anyone who can open the socket
    allowed_gids: list[NonNegInt] = []
    check_peers: bool = False                # when true, a peer must match allowed_uids/gids or be the daemon's uid
    socket_mode: Annotated[int, msgspec.Meta(ge=0, le=0o777)] = 0o660
    # Connections the kernel queues before the daemon accepts them (listen(2); capped by net.core.somaxconn).
    # A burst beyond it is refused with EAGAIN while the daemon starts or is busy (FINDINGS: socket backlog).
    listen_backlog: Annotated[int, msgspec.Meta(ge=16, le=65535)] = 1024
    # Seconds between malloc_trim(0) calls that give freed heap memory back to the kernel (glibc keeps it per
    # thread arena otherwise, and the RSS ratchets up under a mixed load); 0 disables them.
    malloc_trim_interval_s: NonNegFloat = 60.0
    # At most this many glibc malloc arenas in the daemon and in the index worker (MALLOC_ARENA_MAX); 0: glibc's
    # default of 8 per core, each keeping its own free memory (daemon/memtrim.py). Read at start only.
    malloc_arena_max: NonNegInt = 2
    # Python's GIL switch interval (sys.setswitchinterval), ms. A thread that wants the GIL waits up to this long
    # for one running Python code (chunking, tokenizing, SQLite rows) to hand it over: the event loop's lag
    # during an ingestion. Python's default is 5 ms (docs/PERFORMANCE_TUNING.md).
    gil_switch_interval_ms: Annotated[float, msgspec.Meta(ge=0.1, le=100.0)] = 1.0
    # Freeze the objects alive once the daemon is ready (gc.freeze): the garbage collector's full collections then
    # no longer walk start-up's objects, and stop the event loop for far less (daemon/gcpause.py).
    gc_freeze: bool = True


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    requests: bool = True                    # one pipe-delimited line per request
    metrics_interval_s: NonNegFloat = 60.0   # JSON metric line period; 0 disables


class EmbedConfig(_Section):
    model: str = ""                          # a GGUF file; empty: the embedded default (all-MiniLM-L6-v2, Q8_0)
    contexts: NonNegInt = 0                  # llama.cpp contexts; 0: automatic from the CPU affinity
    threads_per_context: NonNegInt = 0       # 0: automatic
    batch_tokens: Annotated[int, msgspec.Meta(ge=32, le=8192)] = 256
    batch_wait_ms: NonNegFloat = 2.0
    flash_attn: bool = True
    cache_entries: NonNegInt = 2000
    cache_max_mb: NonNegInt = 16             # embedding cache bound in MiB (with cache_entries); 0 disables it
    max_texts_per_request: PositiveInt = 1024
    # llama.cpp's extra buffer types (repacked weights; AMX on Intel). auto: off on CPUs with Intel AMX only,
    # where Q8_0/Q4_K_M BERT models segfault with them (FINDINGS.md); on ARM they are the fast Q4_0 path.
    extra_buffer_types: Literal["auto", "on", "off"] = "auto"
    # The latency lane: one more context, with lane_threads threads (0: measured at start, one thread or every CPU
    # in the affinity, whichever embeds a query faster after an idle gap), for calls of a few texts (queries,
    # remember); bulk contexts pause between packs while it runs (docs/PERFORMANCE_TUNING.md).
    lane: bool = True
    lane_threads: NonNegInt = 0
    # A persistent ggml thread pool for a multi-thread lane (ggml otherwise starts and joins its threads on every
    # encode), whose threads poll lane_poll rounds (ggml's level, 0 - 100) between encodes before they sleep.
    lane_pool: bool = True
    lane_poll: Annotated[int, msgspec.Meta(ge=0, le=100)] = 0
    # Added to the bulk contexts' threads' nice value while there is a lane (0: the daemon's own priority), so
    # that a pack already running yields its core to a query, the event loop and the index worker.
    bulk_nice: Annotated[int, msgspec.Meta(ge=0, le=19)] = 10


class StoreConfig(_Section):
    sqlite_readers: PositiveInt = 3
    busy_timeout_ms: PositiveInt = 10_000
    synchronous: Literal["NORMAL", "FULL"] = "FULL"   # FULL: an acknowledged write survives power loss
    quick_check: bool = True                 # PRAGMA quick_check at start; refuse to start on a damaged file
    group_commit_max: PositiveInt = 64       # queued writes sharing one transaction (each in a SAVEPOINT); 1: off
    sqlite_cache_mb: PositiveInt = 16        # page cache per connection
    sqlite_mmap_mb: NonNegInt = 64           # memory-mapped reads per connection; 0 disables
    wal_autocheckpoint_pages: PositiveInt = 1000
    journal_size_limit_mb: PositiveInt = 64  # the WAL is truncated back to this after a checkpoint
    vectors_backend: Literal["chroma", "chroma-http"] = "chroma"
    chroma_host: str = "127.0.0.1"
    chroma_port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 8000
    vectors_timeout_s: PositiveFloat = 60.0  # a vector-index request overrunning this (upserts: plus 10 ms a
                                             # vector) kills and restarts the index's worker process
    vectors_worker_max_rss_mb: NonNegInt = 0  # replace the worker once its RSS passes this; 0: never
    vectors_recycle_overlap: bool = True     # a recycled worker's successor starts before it stops: requests
                                             # wait ~0.3 s, not ~2 s, but two workers (~100 MB more) run a moment


class IngestConfig(_Section):
    allowed_roots: list[str] = []            # the daemon reads files only under these (after resolving symlinks)
    max_file_bytes: PositiveInt = 10 << 20
    chunk_tokens: NonNegInt = 0              # 0: fitted to the model's max length
    chunk_overlap_tokens: NonNegInt = 32


class SearchConfig(_Section):
    cache_entries: NonNegInt = 500
    cache_ttl_s: NonNegFloat = 300.0
    default_k: PositiveInt = 8
    rrf_k: PositiveInt = 60                  # unused since score-aware fusion; accepted for older configs
    cache_max_mb: NonNegInt = 32             # query cache bound in MiB (with cache_entries); 0 disables it
    per_file: Annotated[int, msgspec.Meta(ge=0, le=200)] = 1   # chunks of one file while others have any; 0: no cap


class RetentionRule(_Section):
    max_age_days: NonNegFloat = 0.0          # episodes older than this are pruned; 0: no age limit
    max_count: NonNegInt = 0                 # only the newest N episodes are kept; 0: no count limit


class MemoryConfig(_Section):
    timezone: str = ""                       # empty: the machine's local timezone
    near_duplicate_threshold: Fraction = 0.95
    merge_near_duplicates: bool = False
    max_fact_chars: PositiveInt = 16_000
    max_episode_chars: PositiveInt = 64_000
    max_tags: Annotated[int, msgspec.Meta(ge=0, le=64)] = 32
    recall_cache_entries: NonNegInt = 256    # recent recall results (every write to a project invalidates its own)
    embed_episodes: bool = True              # embed episodes in the background for recall_episodes' vector side
    episode_retention: RetentionRule = RetentionRule()        # the rule for every project without its own
    retention: dict[str, RetentionRule] = {}                  # per project: [memory.retention."my-project"]
    prune_interval_s: PositiveFloat = 3600.0
    recall_cache_max_mb: NonNegInt = 16      # recall cache bound in MiB (with recall_cache_entries); 0 disables it


class DebugConfig(_Section):
    # Test-only: a SIGUSR2 blocks the event loop for this many seconds (0 disables), to prove that a stalled
    # loop stops the watchdog pings.
    stall_on_sigusr2_s: NonNegFloat = 0.0


class WatchConfig(_Section):
    quiet_ms: Annotated[int, msgspec.Meta(ge=0, le=60_000)] = 300  # a burst of changes ends after this quiet time
    max_delay_s: PositiveFloat = 5.0         # a sync starts at the latest this long after the first pending change
    rescan_interval_s: PositiveFloat = 30.0  # polling fallback (no inotify): the tree is rescanned this often
    verify_interval_s: NonNegFloat = 3600.0  # with inotify too, a cheap stat rescan this often; 0: never
    retry_interval_s: PositiveFloat = 10.0   # a missing or unreadable watched directory is tried again this often
    max_watches: PositiveInt = 32            # each inotify watch costs one of the user's inotify instances (128)
    force_polling: bool = False              # rescans instead of inotify (NFS/SMB mounts deliver no inotify events)


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    state_dir: str = ""                      # empty: STATE_DIRECTORY / XDG_STATE_HOME default
    server: ServerConfig = ServerConfig()
    log: LogConfig = LogConfig()
    embed: EmbedConfig = EmbedConfig()
    store: StoreConfig = StoreConfig()
    ingest: IngestConfig = IngestConfig()
    search: SearchConfig = SearchConfig()
    memory: MemoryConfig = MemoryConfig()
    debug: DebugConfig = DebugConfig()
    watch: WatchConfig = WatchConfig()

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir) if self.state_dir else default_state_dir()

    @property
    def socket_path(self) -> Path:
        return Path(self.server.socket) if self.server.socket else default_socket_path()


# Keys whose change SIGHUP applies without a restart; the rest needs one (and the reload log says so).
RELOADABLE = {"log", "search", "memory", "debug"}


class ConfigError(Exception):
    """A config file that cannot be used; the message names the file and the key."""


def load_config(path: str | Path | None = None, *, socket: str | None = None, state_dir: str | None = None) -> Config:
    """Read ``path`` (or the defaults when None), then apply command-line overrides."""
    config = Config()
    if path is not None:
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        try:
            config = msgspec.convert(data, Config)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{path}: {_name_the_key(str(exc))}") from exc
    env_socket = os.environ.get("PIRAG_SOCKET")
    server = config.server
    if socket or (env_socket and not server.socket):
        server = msgspec.structs.replace(server, socket=socket or env_socket)
    config = msgspec.structs.replace(config, server=server, state_dir=state_dir or config.state_dir)
    return config


def _name_the_key(message: str) -> str:
    # msgspec says "Object contains unknown field `x` - at `$.server`"; say it as a TOML key: server.x
    import re

    unknown = re.match(r"Object contains unknown field `([^`]+)`(?: - at `\$\.?([^`]*)`)?", message)
    if unknown:
        key = ".".join(part for part in (unknown.group(2), unknown.group(1)) if part)
        return f"unknown key '{key}'"
    located = re.match(r"(.*) - at `\$\.?([^`]*)`", message)
    if located:
        return f"bad value for '{located.group(2)}': {located.group(1)}"
    return message


def summary(config: Config) -> dict[str, object]:
    """The non-secret config figures shown by ``status``."""
    return {
        "socket": str(config.socket_path),
        "state_dir": str(config.state_path),
        "max_frame_bytes": config.server.max_frame_bytes,
        "max_connections": config.server.max_connections,
        "max_inflight_per_connection": config.server.max_inflight_per_connection,
        "check_peers": config.server.check_peers,
        "embed_model": config.embed.model or "(embedded default)",
        "vectors_backend": config.store.vectors_backend,
        "allowed_roots": list(config.ingest.allowed_roots),
    }
