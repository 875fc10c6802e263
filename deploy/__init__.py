"""Deployment files (compose, Kubernetes, Dockerfiles) and their offline checks (validate.py)."""
