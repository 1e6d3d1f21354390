import os
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.helpers import free_tcp_port
from tests.kafka_util import SESSION_PREFIXES, delete_topics_with_prefixes


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    torch.set_num_threads(1)


@pytest.fixture
def free_port() -> int:
    return free_tcp_port()


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """The real Apache Kafka broker of scripts/kafka.sh. The test command starts it; this
    makes sure it answers (and starts it when a developer runs pytest alone). At the end of
    the session the topics the tests made are deleted."""
    port = os.environ.get("STREAMLEARN_KAFKA_PORT", "9092")
    subprocess.run([str(ROOT / "scripts" / "kafka.sh"), "start"], check=True, timeout=900)
    bootstrap = f"127.0.0.1:{port}"
    yield bootstrap
    try:
        delete_topics_with_prefixes(bootstrap, SESSION_PREFIXES)
    except Exception as exc:  # cleanup only: a failure here must not fail the run
        warnings.warn(f"could not delete the test topics: {exc!r}", stacklevel=1)
