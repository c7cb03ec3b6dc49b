"""How the API server's refusals are told apart: only what no retry can fix fails an agent."""

from __future__ import annotations

import json

import pytest

from controller import kube


def refusal(status: int, message: str) -> kube.ApiError:
    return kube._error(status, json.dumps({"kind": "Status", "message": message}))


def test_pod_securitys_refusal_is_an_invalid_template() -> None:
    message = (
        'pods "w-1a2b3" is forbidden: violates PodSecurity "restricted:latest": privileged '
        '(container "agent" must not set securityContext.privileged=true)'
    )
    error = refusal(403, message)
    assert isinstance(error, kube.Invalid)
    assert str(error).endswith(message)


@pytest.mark.parametrize(
    "message",
    [
        'pods "w" is forbidden: User "system:serviceaccount:x:y" cannot create resource "pods"',
        'pods "w" is forbidden: exceeded quota: compute, requested: pods=1, used: pods=10',
    ],
)
def test_other_refusals_are_retried(message: str) -> None:
    error = refusal(403, message)
    assert type(error) is kube.ApiError, "RBAC or a full quota may pass on a later try"
