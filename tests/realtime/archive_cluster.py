"""Child process of test_archive's slow test: a two-node ray.cluster_utils.Cluster (1
CPU each, 127.0.0.1, no dashboard), an archive of two copies of a video, the second
node removed while both files are being analysed. Prints the manifest rows (JSON)."""

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported: loopback only
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from realtime.archive import ArchiveSettings, archive  # noqa: E402


def main(video: Path, tmp: Path) -> None:
    inputs = []
    for name in ("a.mp4", "b.mp4"):
        shutil.copy(video, tmp / name)
        inputs.append(str(tmp / name))
    out = tmp / "out"
    temp = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    node = dict(num_cpus=1, include_dashboard=False, node_ip_address="127.0.0.1")
    # Cluster writes the head's address into Ray's default temp folder whatever temp_dir
    # says, and fails where that folder does not exist yet (a fresh machine)
    os.makedirs(os.path.dirname(ray._private.utils.get_ray_address_file(None)), exist_ok=True)
    cluster = Cluster(initialize_head=True, head_node_args={**node, "temp_dir": temp})
    try:
        second = cluster.add_node(**node)
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        result = {}
        thread = threading.Thread(target=lambda: result.update(report=archive(inputs, ArchiveSettings(out=out, retries=2))))
        thread.start()
        deadline = time.monotonic() + 120
        while len(list((out / "faces").glob(".*.partial.parquet"))) < 2:  # both files under way
            assert thread.is_alive() and time.monotonic() < deadline, "the files did not start"
            time.sleep(0.05)
        time.sleep(1.0)
        cluster.remove_node(second, allow_graceful=False)
        thread.join(180)
        rows = [result["report"].rows[k] for k in sorted(result["report"].rows)]
        print("ROWS", json.dumps([{k: r[k] for k in ("source", "status", "attempts", "node", "error")} for r in rows]))
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
