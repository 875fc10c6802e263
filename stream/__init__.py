"""yuqing stream: settings, store, Kafka I/O and the scoring consumer."""

__version__ = "0.1.0"
