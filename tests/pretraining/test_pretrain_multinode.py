"""Two DeepSpeed "nodes" on this machine, each started by its own launcher without ssh (as SLURM or
Kubernetes start one launcher per node), train as one world and resume from their checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from ernievil_ds.distributed import free_port
from tests.pretraining.conftest import REPO, check_launch, pretrain_command, pretrain_env
from tests.pretraining.test_pretrain_deepspeed import PAPER_LOSSES

pytestmark = pytest.mark.slow

#: Two hosts of one process each; both names are this machine.
HOSTFILE = "localhost slots=1\n127.0.0.1 slots=1\n"


def run_two_nodes(output_dir: Path, cache: Path, logs: Path, *extra: str) -> list[str]:
    """Start node 0 and node 1 (`deepspeed --hostfile H --no_ssh --node_rank R`) side by side and wait for
    both. Returns each node's output (stdout and stderr)."""
    hostfile = logs / "hostfile"
    hostfile.write_text(HOSTFILE)
    processes, outputs, port = [], [], free_port()
    try:
        for rank in (0, 1):
            launcher = ("--hostfile", str(hostfile), "--no_ssh", "--node_rank", str(rank))
            command = pretrain_command(
                output_dir, *extra, launcher_args=(*launcher, "--master_addr", "127.0.0.1"), master_port=port
            )
            log = (logs / f"node{rank}.log").open("w")
            processes.append(
                subprocess.Popen(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=pretrain_env(cache),
                    cwd=REPO,
                    start_new_session=True,  # its own process group: the cleanup reaches the ranks it spawns
                )
            )
        for rank, process in enumerate(processes):
            process.wait(timeout=300)
            outputs.append((logs / f"node{rank}.log").read_text())
            check_launch(subprocess.CompletedProcess(process.args, process.returncode, outputs[-1], ""))
    finally:
        for process in processes:
            if process.poll() is None:  # a node waiting for a peer that failed
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return outputs


def test_two_nodes_without_ssh_match_one_node_and_resume(tmp_path, synth_cache, run_pretrain, train_records):
    common = ("--max-steps", "4", "--log-every", "1", "--no-export")
    single, multi = tmp_path / "single", tmp_path / "multi"
    run_pretrain(single, synth_cache, *common)

    node0, node1 = run_two_nodes(multi, synth_cache, tmp_path, *common, "--stop-after-steps", "2")
    assert "dist_world_size=2" in node0 and "num_local_procs=1, node_rank=1" in node1
    assert [r["step"] for r in train_records(multi)] == [1, 2]
    assert '"world_size": 2' in (multi / "checkpoints" / "step_00000002" / "COMPLETE").read_text()
    run_two_nodes(multi, synth_cache, tmp_path, *common, "--resume")

    expected, resumed = train_records(single), train_records(multi)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    for x, y in zip(expected, resumed):
        for name in PAPER_LOSSES:
            assert abs(x[name] - y[name]) <= 1e-6, (x["step"], name, x[name], y[name])
