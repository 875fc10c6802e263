"""dashboards: Grafana dashboards as code, their checks, and upload."""
