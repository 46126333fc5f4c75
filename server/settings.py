"""Typed, validated settings from the environment and `.env`; built once in `__main__`."""

from __future__ import annotations

import base64
import ipaddress
import itertools
import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from server.ratelimit.policy import DEFAULT_POLICIES, Policy, parse_optional_policy

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_PRICE_BUCKET_BOUNDS = 20
CENT = Decimal("0.01")
ZohoDataCentre = Literal["com", "eu", "in", "com.au", "jp", "ca", "sa", "com.cn"]


class SettingsError(Exception):
    """Raised with a message naming each bad variable (never its secret value)."""


class Settings(BaseSettings):
    """Every knob of the service. Field names are the environment variable names."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", case_sensitive=True, extra="ignore", frozen=True
    )

    # Connections. Unset URL -> embedded server under DATA_DIR (see server.embedded).
    DATABASE_URL: SecretStr | None = None
    REDIS_URL: SecretStr | None = None
    DATA_DIR: Path = Path(".data")

    # HTTP server.
    HOST: str = "127.0.0.1"
    PORT: int = Field(8000, ge=1, le=65535)
    PROCESSES: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=64)
    PUBLIC_BASE_URL: str = ""  # default: http://HOST:PORT
    MAX_BODY_BYTES: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)
    # Requests in flight per process beyond which new ones get 503 + Retry-After at once (load shedding).
    MAX_INFLIGHT: int = Field(512, ge=1, le=100_000)
    CORS_ORIGINS: Annotated[list[str], NoDecode] = []
    TRUSTED_PROXIES: Annotated[list[IPNetwork], NoDecode] = []
    SHUTDOWN_GRACE_S: float = Field(3.0, gt=0, le=30)
    # Readiness (/ready): probe results are reused for READY_CACHE_MS; the database probe must keep failing
    # for READY_DB_FAIL_AFTER_S before a process reports unavailable (one slow probe never does); only
    # clients in READY_DETAIL_NETWORKS see more than {"status": ...}.
    READY_CACHE_MS: float = Field(1000.0, ge=0, le=60_000)
    READY_DB_TIMEOUT_MS: float = Field(1000.0, ge=10, le=30_000)
    READY_DB_FAIL_AFTER_S: float = Field(3.0, ge=0, le=300)
    READY_DETAIL_NETWORKS: Annotated[list[IPNetwork], NoDecode] = [
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    ]
    ALLOW_PURE_PYTHON: bool = False

    # Database pool.
    DB_POOL_MIN: int = Field(2, ge=1, le=100)
    DB_POOL_MAX: int = Field(10, ge=1, le=200)
    DB_COMMAND_TIMEOUT_S: float = Field(10.0, gt=0, le=300)
    # A request waits at most this long for a pool connection, then gets 503 + Retry-After (never a queue
    # that grows without bound behind a stuck database).
    DB_ACQUIRE_TIMEOUT_S: float = Field(2.0, gt=0, le=60)

    CONSUMER_PRICE_LIST: str = Field("consumer", pattern=r"^[a-z0-9_]{1,32}$")
    # Bounds of the price facet's buckets (consumer price, `facets=price`): "10,25" makes 0-10, 10-25, 25+.
    FACET_PRICE_BUCKETS: Annotated[tuple[Decimal, ...], NoDecode] = tuple(
        Decimal(b) for b in ("10", "25", "50", "100", "250", "500")
    )

    # Page cache (L1 per process, L2 in Redis) and Redis keys.
    CACHE_ENABLED: bool = True
    CACHE_L1_MAX_ENTRIES: int = Field(65_536, ge=16, le=1_000_000)
    CACHE_L1_MAX_MB: int = Field(128, ge=1, le=16_384)
    CACHE_L2_TTL_S: int = Field(600, ge=1, le=86_400)
    REDIS_KEY_PREFIX: str = Field("catalog:", pattern=r"^[A-Za-z0-9:_.-]{0,64}$")
    # Pages past this one, and empty results, stay in L1 only: nobody else is likely to ask for them.
    CACHE_L2_MAX_PAGE: int = Field(10, ge=0, le=1_000_000)
    CACHE_NOT_FOUND_TTL_S: int = Field(30, ge=1, le=3600)  # "no such product", versioned like pages
    # Per Redis call of the page cache: a stalled Redis must cost a request little (the limiter has its own).
    CACHE_REDIS_TIMEOUT_MS: float = Field(80.0, gt=0, le=1000)
    # Serve lists, counts, facets and categories from an in-memory index kept exact by the change feed;
    # false serves every answer from SQL (the reference, for A/B runs).
    CATALOG_INDEX: bool = True
    # A request that finds the index behind the version this process has heard of waits this long for its
    # catch-up (milliseconds, usually a few) before answering from SQL instead.
    CATALOG_INDEX_WAIT_MS: int = Field(200, ge=0, le=5000)
    # While changes keep coming (each within 2 s of the one before: a sync's batches), a request is answered
    # from the index as of the version it has applied, without waiting, for at most this long after the
    # first change it has not applied (milliseconds); then it waits as above. 0: always wait.
    CATALOG_INDEX_STALE_MS: int = Field(1000, ge=0, le=60_000)
    # With the index: per process, the ids each recent search matched in the current catalog version, so
    # the other pages and sorts of a search need no SQL. Bounded by searches and by ids in all (4 B each).
    SEARCH_MEMO_ENTRIES: int = Field(64, ge=0, le=100_000)
    SEARCH_MEMO_IDS: int = Field(2_000_000, ge=0, le=100_000_000)
    # With the index: per process, the serialized list item and detail body of recently shown products
    # (each valid for one row version), so a page whose rows were shown before needs no query. MB for
    # each of the two stores; 0 turns them off.
    ROW_STORE_MB: int = Field(64, ge=0, le=16_384)
    # Memory ceiling of the embedded Redis (allkeys-lru); set maxmemory yourself on a real server.
    EMBEDDED_REDIS_MAXMEMORY_MB: int = Field(256, ge=16, le=65_536)

    # Rate limits per route group: "<quota>/<window>[;burst=<n>]" or "off" (see server/ratelimit).
    RATE_LIMIT_ENABLED: bool = True
    RATE_LIMIT_CATALOG: str = DEFAULT_POLICIES["catalog"]
    RATE_LIMIT_IMAGES: str = DEFAULT_POLICIES["images"]
    RATE_LIMIT_HEALTH: str = DEFAULT_POLICIES["health"]
    RATE_LIMIT_AUTH: str = DEFAULT_POLICIES["auth"]
    RATE_LIMIT_ADMIN: str = DEFAULT_POLICIES["admin"]
    RATE_LIMIT_ORDERS: str = DEFAULT_POLICIES["orders"]
    RATE_LIMIT_REDIS_TIMEOUT_MS: float = Field(100.0, gt=0, le=1000)
    # Block budgets: every client of one IPv6 /48 (a site's delegation: 65,536 /64s) or, when enabled, of
    # one IPv4 /24 shares this many times each policy's quota and burst; 0 turns a family's block budget off.
    RATE_LIMIT_IPV6_BLOCK_MULTIPLIER: int = Field(16, ge=0, le=65_536)
    RATE_LIMIT_IPV4_BLOCK_MULTIPLIER: int = Field(0, ge=0, le=65_536)
    MAX_HEADER_BYTES: int = Field(16_384, ge=1024, le=1_048_576)
    MAX_QUERY_BYTES: int = Field(4096, ge=256, le=65_536)
    MAX_PATH_BYTES: int = Field(2048, ge=256, le=65_536)

    # Images.
    UPLOADS_DIR: Path = Path(".data/uploads")
    IMAGE_REFRESH_INTERVAL_S: float = Field(1.0, ge=0.01, le=3600)
    IMAGE_MAX_AGE_S: int = Field(86_400, ge=0, le=31_536_000)
    IMAGE_MAX_BYTES: int = Field(10 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)  # larger files: 404
    # Uploads (admin API, sync): larger bodies are 413. Pixels: a decompression bomb is refused before it
    # is decoded (below Pillow's own 89 MP warning threshold).
    IMAGE_MAX_PIXELS: int = Field(40_000_000, ge=1, le=89_000_000)

    # Zoho sync (server/sync): the custom fields (api names) holding the Arabic texts, and the currency of
    # the consumer price list when the sync has to create it.
    ZOHO_FIELD_NAME_AR: str = Field("cf_name_ar", pattern=r"^[A-Za-z0-9_]{1,100}$")
    ZOHO_FIELD_DESCRIPTION_AR: str = Field("cf_description_ar", pattern=r"^[A-Za-z0-9_]{1,100}$")
    ZOHO_SYNC_CURRENCY: str = Field("SAR", pattern=r"^[A-Z]{3}$")
    # Price books are read whole (one call each, every item's rate): by full runs, and by every run if set.
    ZOHO_SYNC_PRICEBOOKS_EVERY_RUN: bool = False
    # Images fetched per run at most (one call each, from the same budget); the rest wait, oldest first.
    ZOHO_SYNC_IMAGES_PER_RUN: int = Field(500, ge=0, le=1_000_000)
    # Nice value of a sync run's process (the service's child and `python -m server sync`; 0-19): the workers
    # serving requests keep the CPU while a run parses Zoho's pages.
    ZOHO_SYNC_NICE: int = Field(10, ge=0, le=19)
    # The share of a run's wall time its catalog writes may take (server/sync/pace.py): after a batch that
    # took w seconds it pauses w * (1 - share) / share, while the serving processes catch up. 1: no pauses.
    ZOHO_SYNC_WRITE_SHARE: float = Field(0.5, gt=0, le=1)
    # While tasks on the host wait for a CPU more than this share of the time (Linux's /proc/pressure/cpu),
    # a run writes less often: its share falls, down to 1/16 of the setting, until the pressure is back
    # under this (server/sync/pace.py). 0: the share alone.
    ZOHO_SYNC_CPU_PRESSURE: float = Field(0.1, ge=0, le=1)

    # The service's own sync schedule (server/sync/schedule.py), off while Zoho credentials are unset: an
    # incremental run every ZOHO_SYNC_INTERVAL_S seconds (0: none) and a full reconcile every day at
    # ZOHO_SYNC_FULL_AT (UTC "HH:MM"; empty: none).
    ZOHO_SYNC_INTERVAL_S: float = Field(900.0, ge=0, le=7 * 86_400)
    ZOHO_SYNC_FULL_AT: str = Field("03:00", pattern=r"^(([01][0-9]|2[0-3]):[0-5][0-9])?$")

    # Observability.
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    LOG_FORMAT: Literal["text", "json"] = "text"
    SERVER_TIMING: bool = False  # Server-Timing header with query count and DB time (debug, tests)
    SLOW_REQUEST_MS: float = Field(250.0, gt=0)
    SLOW_QUERY_MS: float = Field(100.0, gt=0)
    # Prometheus metrics (server/metrics): GET /metrics answers clients in METRICS_NETWORKS, or any client
    # sending `Authorization: Bearer <METRICS_TOKEN>` when a token is set; others get 404. Each process
    # writes its numbers to METRICS_DIR (default DATA_DIR/metrics; one sub-directory per run) every
    # METRICS_FLUSH_S: a scrape sees the other processes' numbers at most that old.
    METRICS_ENABLED: bool = True
    METRICS_NETWORKS: Annotated[list[IPNetwork], NoDecode] = [
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    ]
    METRICS_TOKEN: SecretStr = SecretStr("")
    METRICS_DIR: Path | None = None
    METRICS_FLUSH_S: float = Field(0.5, ge=0.05, le=60)
    # Tracing: accept W3C `traceparent`, answer ours; OTLP/HTTP span export when the endpoint is set.
    TRACE_CONTEXT: bool = True
    OTEL_EXPORTER_OTLP_ENDPOINT: str = ""
    OTEL_SERVICE_NAME: str = Field("catalog-api", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    OTEL_EXPORT_INTERVAL_S: float = Field(1.0, ge=0.05, le=60)

    # Zoho Inventory (used by the sync job; secrets are never printed).
    ZOHO_CLIENT_ID: str = ""
    ZOHO_CLIENT_SECRET: SecretStr = SecretStr("")
    ZOHO_REFRESH_TOKEN: SecretStr = SecretStr("")
    ZOHO_ORGANIZATION_ID: str = ""
    ZOHO_DATA_CENTRE: ZohoDataCentre = "com"
    # Override the data centre's URLs (a proxy, the fake Zoho of the tests).
    ZOHO_API_BASE: str = ""  # default https://www.zohoapis.{dc}/inventory/v1
    ZOHO_ACCOUNTS_BASE: str = ""  # default https://accounts.zoho.{dc}
    # Zoho allows 100 requests a minute and 5 (free plan) to 10 concurrent calls per organisation.
    ZOHO_RATE_PER_MIN: int = Field(100, ge=1, le=1_000_000)  # above 100 only against the fake
    ZOHO_MAX_CONCURRENCY: int = Field(5, ge=1, le=100)
    # Calls per UTC day (Zoho's daily limit depends on the plan: 1,000 free ... 10,000 and more paid).
    ZOHO_DAILY_BUDGET: int = Field(10_000, ge=1, le=10_000_000)
    ZOHO_TIMEOUT_S: float = Field(30.0, gt=0, le=300)
    ZOHO_MAX_RETRIES: int = Field(6, ge=0, le=20)  # per call, on throttling, 5xx and transport errors

    # Orders (server/orders). Idempotency keys are kept this long per user, then purged.
    ORDER_IDEMPOTENCY_TTL_S: int = Field(86_400, ge=60, le=30 * 86_400)
    # The push to Zoho (off while Zoho credentials or ZOHO_ORDER_CUSTOMER_ID are unset: orders stay queued):
    # the Zoho contact every sales order is made for, how often each process looks for due orders, and the
    # jittered exponential backoff between attempts of one order.
    ZOHO_ORDER_CUSTOMER_ID: str = Field("", pattern=r"^[0-9A-Za-z_-]{0,64}$")
    ORDER_OUTBOX_POLL_S: float = Field(1.0, ge=0.05, le=3600)
    ORDER_OUTBOX_BACKOFF_BASE_S: float = Field(2.0, ge=0.01, le=3600)
    ORDER_OUTBOX_BACKOFF_MAX_S: float = Field(600.0, ge=0.01, le=86_400)

    # Shopper accounts (server/accounts). Keys are "kid:base64url" entries separated by commas; the active
    # one signs (JWT) or seals (TOTP secrets), the others still verify or open: rotate by adding a key,
    # making it active, and dropping the old one after the access-token TTL (JWT) or a re-seal (TOTP).
    # Unset: a key is made once under DATA_DIR (development only; set both in production).
    AUTH_JWT_KEYS: SecretStr = SecretStr("")
    AUTH_JWT_ACTIVE_KID: str = ""  # default: the first of AUTH_JWT_KEYS
    AUTH_TOTP_KEYS: SecretStr = SecretStr("")
    AUTH_TOTP_ACTIVE_KID: str = ""  # default: the first of AUTH_TOTP_KEYS
    AUTH_ACCESS_TTL_S: int = Field(900, ge=30, le=900)
    AUTH_REFRESH_TTL_S: int = Field(30 * 86_400, ge=300, le=365 * 86_400)  # absolute, per sign-in
    AUTH_MFA_TOKEN_TTL_S: int = Field(300, ge=30, le=3600)
    AUTH_VERIFY_TOKEN_TTL_S: int = Field(86_400, ge=60, le=30 * 86_400)
    AUTH_RESET_TOKEN_TTL_S: int = Field(3600, ge=60, le=86_400)
    # argon2id cost (OWASP minimum: 19 MiB, t=2, p=1); raising them rehashes each password at its next login.
    AUTH_ARGON2_MEMORY_KIB: int = Field(19_456, ge=19_456, le=4_194_304)
    AUTH_ARGON2_TIME_COST: int = Field(2, ge=2, le=100)
    # Password hashing runs in this many child processes per server process; beyond this many waiting,
    # 503 + Retry-After; a call that waited AUTH_HASH_WAIT_S gets 503 too.
    AUTH_HASH_WORKERS: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=64)
    AUTH_HASH_QUEUE: int = Field(32, ge=0, le=10_000)
    AUTH_HASH_WAIT_S: float = Field(10.0, gt=0, le=300)
    # The hashing processes run at SCHED_IDLE (Linux: only on CPU time nothing else wants) and at this nice
    # value: in a sign-in flood the catalog's requests keep the CPU.
    AUTH_HASH_IDLE: bool = True
    AUTH_HASH_NICE: int = Field(19, ge=0, le=19)
    # At most this many hashes a second per server process (a token bucket holding a quarter second's worth):
    # caps what hashing costs the catalog, which idle priority alone does not (the hashes still take every
    # cycle the catalog leaves, and the catalog's latency rose with their rate). Beyond: 503 + Retry-After at
    # once. 0: no cap. 8 a second is ~0.2 of a core of argon2 per process (README, Sign-in flood).
    AUTH_HASH_MAX_PER_S: float = Field(8.0, ge=0, le=100_000)
    # Per account (and per unknown email alike): after this many failed sign-ins in a row, each further try
    # waits base * 2^(failures - threshold) seconds, capped (never a permanent lock).
    AUTH_THROTTLE_AFTER: int = Field(5, ge=1, le=100)
    AUTH_THROTTLE_BASE_S: float = Field(1.0, gt=0, le=3600)
    AUTH_THROTTLE_MAX_S: float = Field(900.0, gt=0, le=86_400)
    # Mail: SMTP when set (smtp://user:pass@host:port, smtps:// for TLS); else .eml files in DATA_DIR/mail.
    SMTP_URL: SecretStr | None = None
    MAIL_FROM: str = Field("Catalog <no-reply@localhost>", max_length=200)
    # Each process also retries pending mail (failed deliveries, mail of a process that died) this often.
    MAIL_SWEEP_S: float = Field(30.0, ge=0.1, le=3600)
    # Where the links in mails point (the shop's pages); default PUBLIC_BASE_URL.
    ACCOUNT_LINK_BASE_URL: str = ""

    @field_validator("CORS_ORIGINS", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip().rstrip("/") for part in value.split(",") if part.strip()]
        return value

    @field_validator("CORS_ORIGINS")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"origin {origin!r} must start with http:// or https://")
        return value

    @field_validator("FACET_PRICE_BUCKETS", mode="before")
    @classmethod
    def _split_buckets(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(","))
        return value

    @field_validator("FACET_PRICE_BUCKETS")
    @classmethod
    def _check_buckets(cls, value: tuple[Decimal, ...]) -> tuple[Decimal, ...]:
        if not 1 <= len(value) <= MAX_PRICE_BUCKET_BOUNDS:
            raise ValueError(f"must list 1 to {MAX_PRICE_BUCKET_BOUNDS} bounds")
        for bound in value:
            # Prices are >= 0, so the first bucket starts at 0 and a bound of 0 would only add an empty one.
            if not bound.is_finite() or not 0 < bound < 10**12 or bound != bound.quantize(CENT):
                raise ValueError(f"{bound}: bounds must be positive prices with at most 2 decimals")
        if any(a >= b for a, b in itertools.pairwise(value)):
            raise ValueError("bounds must be strictly ascending")
        return tuple(b.quantize(CENT) for b in value)

    @field_validator("TRUSTED_PROXIES", "READY_DETAIL_NETWORKS", "METRICS_NETWORKS", mode="before")
    @classmethod
    def _split_proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [ipaddress.ip_network(p.strip(), strict=False) for p in value.split(",") if p.strip()]
        return value

    @field_validator(
        "RATE_LIMIT_CATALOG",
        "RATE_LIMIT_IMAGES",
        "RATE_LIMIT_HEALTH",
        "RATE_LIMIT_AUTH",
        "RATE_LIMIT_ADMIN",
        "RATE_LIMIT_ORDERS",
    )
    @classmethod
    def _check_policy(cls, value: str, info: ValidationInfo) -> str:
        parse_optional_policy(str(info.field_name).removeprefix("RATE_LIMIT_").lower(), value)
        return value

    def rate_policies(self) -> dict[str, Policy | None]:
        """Route group -> policy (None: not limited)."""
        return {
            group: parse_optional_policy(group, getattr(self, f"RATE_LIMIT_{group.upper()}"))
            for group in ("catalog", "images", "health", "auth", "admin", "orders")
        }

    @field_validator("PUBLIC_BASE_URL")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        if not value:
            return value
        if not value.startswith(("http://", "https://")) or any(c in value for c in " \"'<>\\"):
            raise ValueError("must be an absolute http(s) URL")
        return value.rstrip("/")

    @field_validator("ZOHO_API_BASE", "ZOHO_ACCOUNTS_BASE", "OTEL_EXPORTER_OTLP_ENDPOINT")
    @classmethod
    def _check_zoho_url(cls, value: str) -> str:
        if value and (not value.startswith(("http://", "https://")) or any(c in value for c in " \"'<>\\")):
            raise ValueError("must be an absolute http(s) URL")
        return value.rstrip("/")

    @field_validator("AUTH_JWT_KEYS", "AUTH_TOTP_KEYS")
    @classmethod
    def _check_keys(cls, value: SecretStr) -> SecretStr:
        parse_keys(value.get_secret_value())
        return value

    @field_validator("DATABASE_URL")
    @classmethod
    def _check_db_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("postgres://", "postgresql://")):
            raise ValueError("must start with postgresql://")
        return value

    @field_validator("REDIS_URL")
    @classmethod
    def _check_redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @model_validator(mode="after")
    def _check_pool(self) -> Settings:
        for ring in ("JWT", "TOTP"):
            keys, active = f"AUTH_{ring}_KEYS", f"AUTH_{ring}_ACTIVE_KID"
            kid = getattr(self, active)
            if kid and kid not in parse_keys(getattr(self, keys).get_secret_value()):
                raise ValueError(f"{active} must name a key of {keys}")
        if self.DB_POOL_MIN > self.DB_POOL_MAX:
            raise ValueError("DB_POOL_MIN must not exceed DB_POOL_MAX")
        if not self.PUBLIC_BASE_URL:
            host = f"[{self.HOST}]" if ":" in self.HOST else self.HOST
            object.__setattr__(self, "PUBLIC_BASE_URL", f"http://{host}:{self.PORT}")
        return self

    def public_view(self) -> dict[str, str]:
        """Settings as printable strings, secrets and URL passwords masked."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                raw = value.get_secret_value()
                value = mask_url(raw) if name.endswith("_URL") else ("***" if raw else "")
            out[name] = str(value)
        return out


def parse_keys(text: str, min_bytes: int = 32) -> dict[str, bytes]:
    """`kid:base64url,kid2:...` -> {kid: key bytes}; ValueError naming the bad entry (never its value)."""
    keys: dict[str, bytes] = {}
    for entry in (e.strip() for e in text.split(",") if e.strip()):
        kid, sep, raw = entry.partition(":")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", kid) or kid in keys:
            raise ValueError("each key must be `kid:base64url` with a unique kid of 1-32 [A-Za-z0-9_-]")
        try:
            key = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        except ValueError:
            raise ValueError(f"key {kid!r} is not base64url") from None
        if len(key) < min_bytes:
            raise ValueError(f"key {kid!r} must be at least {min_bytes} bytes")
        keys[kid] = key
    return keys


def mask_url(url: str) -> str:
    """Hide the password part of a connection URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


def load_settings(**overrides: Any) -> Settings:
    """Build Settings once; on error raise SettingsError naming each variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else "settings"
            lines.append(f"  {name}: {err['msg']}")
        raise SettingsError("invalid settings:\n" + "\n".join(lines)) from None
