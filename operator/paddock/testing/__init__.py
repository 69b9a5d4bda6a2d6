"""Real services for tests, benches and the local demo: Redis, etcd + kube-apiserver.

Nothing in production code imports this package (an import-linter contract says so).
"""
