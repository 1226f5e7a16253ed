"""Simulated instances publishing demo traffic through the SDK (used by `queue-assets dev` and benches)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import psycopg

from .sdk import HubClient, RequestReplyClient

FRAMEWORKS = [
    ("phoenix", "elixir"),
    ("ecto", "elixir"),
    ("broadway", "elixir"),
    ("axum", "rust"),
    ("tokio", "rust"),
    ("react", "typescript"),
    ("fastapi", "python"),
    ("django", "python"),
]
TECHNOLOGIES = ["postgresql", "pgmq", "redis", "kafka", "docker", "kubernetes"]
MICROSERVICES = ["llm-router", "hitl-bridge", "genesis-runner", "template-service"]
CODE = ["genserver-cache", "supervisor-tree", "circuit-breaker", "retry-with-backoff", "repository-pattern"]


@dataclass
class SimStats:
    patterns: int = 0
    analyses: int = 0
    learned: int = 0
    heartbeats: int = 0
    invalid: int = 0
    requests: int = 0
    queries: int = 0
    misses: int = 0


def random_pattern(rng: random.Random) -> dict:
    kind = rng.choice(["framework", "technology", "microservice", "code"])
    if kind == "framework":
        name, lang = rng.choice(FRAMEWORKS)
        # Instances spell names differently; the catalogue folds these into one key (docs/patterns.md).
        name = rng.choices([name, name.capitalize(), f"{name}-framework"], weights=[8, 1, 1])[0]
        return {
            "pattern_type": kind,
            "name": name,
            "language": lang,
            "confidence": round(rng.uniform(0.5, 1), 3),
            "indicators": [f"dependency {name}", f"{lang} project layout"][: rng.randint(1, 2)],
        }
    pool = {"technology": TECHNOLOGIES, "microservice": MICROSERVICES, "code": CODE}[kind]
    name = rng.choice(pool)
    return {
        "pattern_type": kind,
        "name": name,
        "confidence": round(rng.uniform(0.3, 1), 3),
        "indicators": [f"{name} seen in config"],
    }


def query_catalogue(client: HubClient, rng: random.Random, n: int, stats: SimStats) -> None:
    """Ask the hub as an instance would: mostly known patterns, every fifth time a name nobody sent
    (the same few, so the hub sends one discovery message per name per hour, not one per question)."""
    if n % 15 == 0:
        kind, name = "framework", f"unheard-of-{n % 45 // 15}"
    else:
        p = random_pattern(rng)
        kind, name = p["pattern_type"], p["name"]
    result = client.query_pattern(kind, name)
    stats.queries += 1
    stats.misses += not result.known


def run(
    db_url: str,
    *,
    instances: int = 3,
    rate: float = 5.0,
    duration_s: float | None = None,
    invalid_every: int = 50,
    seed: int = 7,
    progress=None,
) -> SimStats:
    """Publish about `rate` pattern messages per second spread over `instances`, until `duration_s`."""
    rng = random.Random(seed)
    ids = [f"singularity-{i + 1}" for i in range(instances)]
    clients = [HubClient(db_url, i) for i in ids]
    rr = RequestReplyClient(db_url)
    stats = SimStats()
    started = time.monotonic()
    last_hb = 0.0
    n = 0
    try:
        while duration_s is None or time.monotonic() - started < duration_s:
            now = time.monotonic()
            if now - last_hb >= 5:
                for c in clients:
                    c.heartbeat(version="1.4.0", status="ok")
                    stats.heartbeats += 1
                last_hb = now
            c = rng.choice(clients)
            n += 1
            c.publish_patterns(
                [random_pattern(rng) for _ in range(rng.randint(1, 4))],
                idempotency_key=f"{c.instance_id}-{seed}-{n}",
            )
            stats.patterns += 1
            if n % 10 == 0:
                c.publish_code_analysis({"files": rng.randint(10, 500), "dead_code": rng.randint(0, 20)})
                stats.analyses += 1
            if n % 15 == 0:
                art = rng.choice(CODE)
                c.publish_learned_patterns(
                    [
                        {
                            "artifact_id": f"tmpl-{art}",
                            "artifact_type": "template",
                            "name": art.replace("-", " "),
                            "content": {"template": f"# {art}\n"},
                        }
                    ],
                    usage_count=rng.randint(10, 500),
                    success_rate=round(rng.uniform(0.6, 1), 3),
                )
                stats.learned += 1
            if n % 7 == 0:
                _, req_id = rr.publish_request("llm", {"agent_id": c.instance_id, "task": "summarise"})
                if rng.random() < 0.8:
                    rr.publish_reply("llm", {"request_id": req_id, "result": "ok"})
                stats.requests += 1
            if n % 3 == 0:
                query_catalogue(c, rng, n, stats)
            if invalid_every and n % invalid_every == 0:
                c.q.send(
                    "pattern_messages",
                    {
                        "type": "pattern_detection",
                        "instance_id": c.instance_id,
                        "timestamp": "not a time",
                        "patterns": [],
                    },
                )
                stats.invalid += 1
            if progress and n % 100 == 0:
                progress(stats)
            time.sleep(1.0 / rate if rate > 0 else 0)
    except (KeyboardInterrupt, psycopg.OperationalError):
        pass
    finally:
        for c in clients:
            c.close()
        rr.close()
    return stats
