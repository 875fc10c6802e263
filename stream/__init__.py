"""yuqing stream: the shared base (`core`), the consumer, Kafka I/O, feeds, the read side
(alerts, brief, diff) and tools (demo, bench).  See stream/README.md."""

__version__ = "0.1.0"
