"""What `up` prints when it is done: where to browse, what to run, how to look inside."""

from __future__ import annotations

from components.local.cluster_config import KindCluster
from components.local.plan import namespace, phase_stack

FIRST_ROUTED_PHASE = 3  # phases 1-2 have no route: reach them with kubectl port-forward
PORT_FORWARD_PORT = 8081  # not the Gateway's host port


def hostname(phase: int) -> str:
    """The HTTPRoute's default host: localtest.me and its subdomains resolve to 127.0.0.1."""
    return f"{phase_stack(phase)}.localtest.me"


def after_up(cluster: KindCluster, phase: int) -> str:
    ns = namespace(phase_stack(phase))
    kubectl = f"kubectl --context {cluster.context}"
    if phase >= FIRST_ROUTED_PHASE:
        host = hostname(phase)
        reach = [
            f"  browse:   http://{host}:{cluster.host_port}/products",
            f"  curl:     curl -H 'Host: {host}' http://localhost:{cluster.host_port}/healthz",
        ]
    else:
        reach = [
            f"  forward:  {kubectl} port-forward -n {ns} svc/web {PORT_FORWARD_PORT}:80",
            f"  then:     curl http://localhost:{PORT_FORWARD_PORT}/healthz   (browse http://localhost:{PORT_FORWARD_PORT}/products)",
        ]
    return "\n".join(
        [
            f"phase {phase} is up in namespace {ns} on kind cluster {cluster.name}.",
            *reach,
            f"  inspect:  {kubectl} get deploy,sts,svc,hpa,pdb,pods -n {ns} -o wide",
            f"  zones:    {kubectl} get nodes -L topology.kubernetes.io/zone",
            "  more:     docs/local.md (what to look at per phase, troubleshooting)",
            "  teardown: uv run scaleladder-local down",
        ]
    )
