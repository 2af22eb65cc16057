"""What a partition offers, read from sinfo's lines, and the one-line refusal of a request it
cannot hold (GPU nodes are not to be had here: their sinfo lines are written out)."""

from __future__ import annotations

import pytest

from quark.core.errors import ConfigError
from quark.slurm.request import check_request, read_partitions

# sinfo --Node --format=%N|%P|%c|%m|%G|%l on a cluster with a default CPU partition and H100 nodes
SINFO = """\
cpu001|cpu*|64|256000|(null)|1-00:00:00
cpu002|cpu*|64|256000|(null)|1-00:00:00
gpu001|gpu|96|2000000|gpu:h100:8(S:0-1)|2-00:00:00
gpu002|gpu|96|2000000|gpu:h100:8(S:0-1)|2-00:00:00
gpu003|gpu|96|2000000|gpu:h100:4(S:0),gpu:a100:4(S:1)|2-00:00:00
gpu004|debug|96|2000000|gpu:h100:8|30:00
"""

DEEPSPEED_3X8 = {"partition": "gpu", "nodes": 3, "tasks_per_node": 8, "gpus_per_node": 8}


def test_partitions_are_read_from_sinfo_lines() -> None:
    partitions = read_partitions(SINFO)
    gpu = partitions["gpu"]
    assert (gpu.nodes, gpu.cpus_per_node, gpu.gpus_per_node) == (3, 96, 8)
    assert gpu.time_limit_min == 2 * 24 * 60
    assert partitions[""] == partitions["cpu"]  # the default one
    assert partitions["cpu"].gpus_per_node == 0
    assert partitions["debug"].time_limit_min == 30


def test_a_request_the_partition_holds_passes() -> None:
    check_request(
        {**DEEPSPEED_3X8, "cpus_per_task": 12, "timeout_min": 240}, read_partitions(SINFO)
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"nodes": 4},
            "hydra.launcher.nodes: 4 nodes (trainer.num_nodes) but partition 'gpu' has 3; "
            "allowed: <= 3, or another partition (hydra.launcher.partition)",
        ),
        (
            {"partition": None, "nodes": 2},
            "hydra.launcher.gpus_per_node: 8 GPUs per node (trainer.devices) but the nodes of "
            "partition 'cpu' have 0; allowed: <= 0, or another partition (hydra.launcher.partition)",
        ),
        (
            {"cpus_per_task": 16},
            "hydra.launcher.cpus_per_task: 8 tasks per node x 16 CPUs = 128 CPUs, but the nodes "
            "of partition 'gpu' have 96; allowed: tasks_per_node x cpus_per_task <= 96",
        ),
        (
            {"mem_gb": 4000},
            "hydra.launcher.mem_gb: 4000 GB per node but the nodes of partition 'gpu' have "
            "1953 GB; allowed: <= 1953, or null for the partition's default",
        ),
        (
            {"partition": "debug", "nodes": 1, "timeout_min": 60},
            "hydra.launcher.timeout_min: 60 minutes but partition 'debug' allows 30; allowed: up "
            "to the partition's limit; a longer run is requeued at the limit (max_num_timeout) "
            "and resumes",
        ),
        (
            {"partition": "h100"},
            "hydra.launcher.partition: no partition 'h100' on this cluster; partitions: cpu, "
            "debug, gpu",
        ),
    ],
)
def test_a_request_no_node_can_hold_is_refused_in_one_line(change: dict, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        check_request({**DEEPSPEED_3X8, **change}, read_partitions(SINFO))
    assert str(refused.value) == message
