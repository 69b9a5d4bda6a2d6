"""The local pod runner: a development stand-in for a kubelet (and the few controllers a
bare apiserver lacks), so the whole stack runs on one machine without a cluster.

It is not a security boundary: it gives each pod its own network namespace and runs each
container as its uid with only its own volumes mounted, but enforces no NetworkPolicy,
seccomp profile, capability set or resource limit. See docs/runner.md.
"""
