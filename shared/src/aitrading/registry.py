"""The service catalogue: the single source of truth for names, ports, API prefixes and dependencies.

The launcher, the gateway, the service client, central-hub and the compose consistency test all read
this table; nothing else hard-codes a port.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

Infra = str  # "postgres" | "nats" | "redis" | "clickhouse" | "weaviate" | "arangodb"


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    port: int
    summary: str
    prefixes: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    infra: tuple[Infra, ...] = ("postgres", "nats")
    public_prefixes: tuple[str, ...] = field(default=())  # reachable without a token
    websocket_paths: tuple[str, ...] = ()

    @property
    def package(self) -> str:
        return self.name.replace("-", "_")

    def source_dir(self, root: Path) -> Path:
        return root / "services" / self.name


_SPECS: tuple[ServiceSpec, ...] = (
    ServiceSpec("api-gateway", 8000, "routing, auth check, rate limits, usage events, merged OpenAPI",
                depends_on=("user-service",), infra=("nats",)),
    ServiceSpec("data-bridge", 8001, "market feeds, normalization, live quotes",
                ("feeds", "quotes"), depends_on=("user-service", "database-service"),
                websocket_paths=("/ws/market", "/ws/ingest", "/ws/mt5")),
    ServiceSpec("performance-analytics", 8002, "returns, risk metrics, equity curves", ("performance",)),
    ServiceSpec("ai-orchestration", 8003, "per-user AI pipelines, market memory", ("pipelines", "memory")),
    ServiceSpec("deep-learning", 8004, "neural sequence models", ("deep-models",)),
    ServiceSpec("ai-provider", 8005, "LLM routing, token and cost accounting", ("ai",)),
    ServiceSpec("ml-processing", 8006, "classic ML, model registry", ("models",)),
    ServiceSpec("trading-engine", 8007, "orders, pre-trade risk, strategies, venues",
                ("orders", "fills", "strategies", "risk", "venues"),
                depends_on=("user-service", "database-service", "data-bridge")),
    ServiceSpec("database-service", 8008, "market-data warehouse", ("market",),
                infra=("nats", "clickhouse")),
    ServiceSpec("user-service", 8009, "users, auth, JWT issuing, API keys",
                ("auth", "users", "api-keys"), public_prefixes=("auth",)),
    ServiceSpec("strategy-optimization", 8010, "backtests and parameter search",
                ("backtests", "optimizations", "strategy-catalog")),
    ServiceSpec("feature-engineering", 8011, "technical indicators and features", ("features",),
                depends_on=("database-service", "user-service")),
    ServiceSpec("configuration-service", 8012, "layered configuration", ("config",)),
    ServiceSpec("audit-service", 8013, "tamper-evident audit log", ("audit",)),
    ServiceSpec("portfolio-manager", 8014, "positions, cash, allocation", ("portfolio", "positions"),
                depends_on=("user-service", "database-service", "data-bridge")),
    ServiceSpec("pattern-validator", 8015, "candlestick and chart patterns", ("patterns",),
                depends_on=("database-service", "user-service")),
    ServiceSpec("central-hub", 8016, "service registry view, fleet health, dependency graph", ("fleet",),
                infra=("nats",)),
    ServiceSpec("ml-ensemble", 8018, "combining model predictions", ("ensembles",)),
    ServiceSpec("notification-service", 8019, "email, Telegram, webhooks, in-app", ("notifications",)),
    ServiceSpec("revenue-analytics", 8020, "MRR, ARR, churn, cohorts", ("revenue",)),
    ServiceSpec("usage-monitoring", 8021, "metering and quotas", ("usage",)),
    ServiceSpec("compliance-monitor", 8022, "surveillance, KYC gate, reports", ("compliance",)),
    ServiceSpec("subscription-service", 8023, "plans, subscriptions, invoices",
                ("plans", "subscriptions", "invoices")),
    # Provider webhooks carry their own signature instead of a user's token.
    ServiceSpec("payment-service", 8024, "payments, refunds, ledger", ("payments", "webhooks/payments"),
                public_prefixes=("webhooks/payments",)),
    ServiceSpec("multi-agent-coordinator", 8030, "agent registry and consensus rounds",
                ("agents", "consensus")),
    ServiceSpec("decision-engine", 8031, "turning agent votes into decisions", ("decisions",)),
)

REGISTRY: dict[str, ServiceSpec] = {spec.name: spec for spec in _SPECS}


def repo_root() -> Path:
    """The checkout this library lives in (shared/src/aitrading/registry.py → root)."""
    return Path(__file__).resolve().parents[3]


def implemented(root: Path | None = None) -> list[ServiceSpec]:
    """The catalogue entries that exist as a service folder in this checkout, in catalogue order."""
    base = root or repo_root()
    return [spec for spec in _SPECS if (spec.source_dir(base) / "pyproject.toml").exists()]


def deployed(names: list[str] | None, root: Path | None = None) -> list[ServiceSpec]:
    """The services of a deployment in catalogue order: `names` when given, else `implemented()`."""
    if names is None:
        return implemented(root)
    wanted = set(names)
    return [spec for spec in _SPECS if spec.name in wanted]


def owner_of(path: str) -> ServiceSpec | None:
    """The service owning an `/api/v1/<prefix>/...` path (longest prefix wins)."""
    if not path.startswith("/api/v1/"):
        return None
    rest = path[len("/api/v1/"):]
    best: ServiceSpec | None = None
    best_len = -1
    for spec in _SPECS:
        for prefix in spec.prefixes:
            if (rest == prefix or rest.startswith(prefix + "/")) and len(prefix) > best_len:
                best, best_len = spec, len(prefix)
    return best


def service_url(name: str, overrides: dict[str, str] | None = None, host: str = "127.0.0.1") -> str:
    if overrides and name in overrides:
        return overrides[name].rstrip("/")
    return f"http://{host}:{REGISTRY[name].port}"
