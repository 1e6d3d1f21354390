import os
import socket
import subprocess
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    torch.set_num_threads(1)


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """The real Apache Kafka broker of scripts/kafka.sh. The test command starts it; this
    makes sure it answers (and starts it when a developer runs pytest alone)."""
    port = os.environ.get("STREAMLEARN_KAFKA_PORT", "9092")
    subprocess.run([str(ROOT / "scripts" / "kafka.sh"), "start"], check=True, timeout=900)
    return f"127.0.0.1:{port}"
