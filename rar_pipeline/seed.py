"""Deterministic batch files: the three demo rooftops of the domain spec, and synthetic load-test data."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from rar_pipeline.contract import FIELDS, SCORE_FIELDS
from rar_pipeline.months import add_months

HEADER = [spec.alias for spec in FIELDS]
SCORE_HEADER = [spec.alias for spec in SCORE_FIELDS]
INTENTS = ("service_price", "hours", "oil_change", "tire_rotation", "dealer_near_me", "ev_inventory_search")
CHANNELS = ("google_organic", "google_paid", "chatgpt", "bing", "perplexity")

# (dealer, avgGross, [(intent, shareAISnippet, ctrDropWhenAI, impressions)]) — rar-domain.md, month 2025-11.
DEMO_ROOFTOPS = (
    ("germain-toyota-naples", 2100, [("service_price", .35, .35, 300000), ("hours", .32, .30, 250000),
                                     ("oil_change", .38, .33, 180000), ("tire_rotation", .31, .29, 120000),
                                     ("dealer_near_me", .40, .37, 95000)]),
    ("lou-grubbs-motors", 1950, [("service_price", .33, .32, 280000), ("hours", .30, .28, 220000),
                                 ("oil_change", .36, .31, 160000), ("tire_rotation", .29, .27, 100000),
                                 ("dealer_near_me", .38, .35, 85000)]),
    ("demo-rooftop", 2050, [("service_price", .37, .34, 200000), ("hours", .34, .31, 150000),
                            ("oil_change", .39, .35, 140000), ("tire_rotation", .32, .30, 90000),
                            ("dealer_near_me", .41, .38, 75000)]),
)  # fmt: skip
DEMO_MONTH = date(2025, 11, 1)
# (dealer, aiv, ati, qai, zeroClickCoverage, schemaCoverage); "" = not measured.
DEMO_SCORES = (
    ("germain-toyota-naples", 85, 78, 72, 0.52, 0.61),
    ("lou-grubbs-motors", 80, 74, 70, 0.40, 0.75),
    ("demo-rooftop", 76, 71, 68, "", ""),
)


@dataclass(frozen=True)
class SeedSpec:
    dealers: int = 20
    months: int = 3
    rows: int = 1000
    seed: int = 0
    last_month: date = DEMO_MONTH


def demo_rows(month: date = DEMO_MONTH, scale: float = 1.0) -> Iterator[list]:
    """The three rooftops; `scale` shrinks impressions (a smaller earlier month shows a trend)."""
    for dealer, gross, intents in DEMO_ROOFTOPS:
        for intent, share, drop, impressions in intents:
            yield [dealer, month.strftime("%Y-%m"), "google_organic", round(impressions * scale), share, 0.055, drop,
                   0.04, 0.18, gross, 0.45, intent]  # fmt: skip


def demo_score_rows(month: date = DEMO_MONTH) -> Iterator[list]:
    """Base AI scores of the three rooftops, as a dealer-score file."""
    for dealer, aiv, ati, qai, zero_click, schema in DEMO_SCORES:
        yield [dealer, month.strftime("%Y-%m"), aiv, ati, qai, zero_click, schema]


def synthetic_rows(spec: SeedSpec) -> Iterator[list]:
    """`spec.rows` events with realistic ranges and unique natural keys, reproducible from `spec.seed`."""
    rng = random.Random(spec.seed)
    months = [add_months(spec.last_month, -offset).strftime("%Y-%m") for offset in range(spec.months)]
    combos = len(months) * len(CHANNELS) * len(INTENTS)
    for index in range(spec.rows):
        dealer = index % spec.dealers
        slot = index // spec.dealers
        suffix = f"-{slot // combos}" if slot >= combos else ""
        month = months[slot % len(months)]
        channel = CHANNELS[(slot // len(months)) % len(CHANNELS)]
        intent = INTENTS[(slot // (len(months) * len(CHANNELS))) % len(INTENTS)] + suffix
        yield [
            f"dealer-{dealer:05d}", month, channel, rng.randint(1_000, 400_000),
            round(rng.uniform(0.15, 0.45), 4), round(rng.uniform(0.02, 0.08), 4), round(rng.uniform(0.2, 0.4), 4),
            round(rng.uniform(0.02, 0.06), 4), round(rng.uniform(0.1, 0.25), 4), rng.randint(1200, 3200),
            round(rng.uniform(0.3, 0.6), 4), intent,
        ]  # fmt: skip


def write_batch(path: Path, rows: Iterator[list], file_format: str = "csv", header: list[str] = HEADER) -> int:
    """Write rows to `path` via a temporary name, so a watching sensor never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    count = 0
    with open(partial, "w", newline="", encoding="utf-8") as out:
        if file_format == "csv":
            out.write(",".join(header) + "\n")
            for row in rows:
                out.write(",".join(map(str, row)) + "\n")
                count += 1
        else:
            for row in rows:
                out.write(json.dumps({key: value for key, value in zip(header, row) if value != ""}) + "\n")
                count += 1
    partial.replace(path)
    return count
