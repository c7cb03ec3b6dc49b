"""The local development cluster: real Kubernetes components built from Go modules.

Everything here is development and test tooling, not part of the operator. It
builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok
from pinned Go modules (cached outside the repository, keyed by version),
generates certificates, starts every process on 127.0.0.1 and free ports, and
stops exactly the processes it started.
"""
