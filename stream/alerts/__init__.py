"""Alerting on scored items: rules (alerts.toml), evaluation, state, and delivery.

`rules` validates the rules file; `evaluate` turns rules into due alerts with parameterized SQL
(`queries`); `state` remembers what fired and what is still to deliver (in the store, or in
memory for dry runs); `notify` records and delivers (Kafka, `webhooks`), retrying unfinished
deliveries on later cycles; `runner` runs it live or over a past range.
"""

from stream.alerts.alert import Alert, Sample
from stream.alerts.evaluate import Evaluator
from stream.alerts.rules import AlertsConfig, load_rules, parse_rules
from stream.alerts.runner import LiveRunner, dry_run
from stream.alerts.state import MemoryState, StoreState

__all__ = [
    "Alert",
    "AlertsConfig",
    "Evaluator",
    "LiveRunner",
    "MemoryState",
    "Sample",
    "StoreState",
    "dry_run",
    "load_rules",
    "parse_rules",
]
