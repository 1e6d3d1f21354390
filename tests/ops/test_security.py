"""Kafka TLS/SASL settings reach every client; secrets come from the environment or files,
are redacted in config dumps and reprs, and a half-given security setup fails at start."""

import logging

import pytest
import yaml

from streamlearn.config import ConfigError, load_config
from streamlearn.io.kafka import client_settings
from tests.helpers import run_cli

SECRET = "hunter2-not-for-logs"


def _sasl(tmp_path, **extra):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    return {
        "kafka": {
            "security": {
                "protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_username": "adapter",
                "ssl_cafile": str(ca),
                **extra,
            }
        }
    }


def test_plaintext_by_default_passes_no_tls_or_sasl():
    settings = client_settings(load_config(env={}).kafka)
    assert settings["security_protocol"] == "PLAINTEXT"
    assert not any(k.startswith(("ssl_", "sasl_")) for k in settings)


def test_sasl_ssl_from_environment_reaches_the_clients(tmp_path):
    env = {"STREAMLEARN_KAFKA__SECURITY__SASL_PASSWORD": SECRET}
    cfg = load_config(overrides=_sasl(tmp_path), env=env)
    s = client_settings(cfg.kafka)
    assert s["security_protocol"] == "SASL_SSL"
    assert s["sasl_mechanism"] == "SCRAM-SHA-512"
    assert s["sasl_plain_username"] == "adapter"
    assert s["sasl_plain_password"] == SECRET
    assert s["ssl_cafile"] == str(tmp_path / "ca.pem")
    assert s["ssl_check_hostname"] is True
    assert SECRET not in repr(cfg)
    assert SECRET not in str(cfg.kafka.security)


def test_secret_from_a_file_is_read_when_needed(tmp_path):
    path = tmp_path / "password"
    path.write_text(SECRET + "\n")
    cfg = load_config(overrides=_sasl(tmp_path, sasl_password_file=str(path)), env={})
    assert client_settings(cfg.kafka)["sasl_plain_password"] == SECRET


def test_config_dump_redacts_secrets(tmp_path):
    conf = tmp_path / "secure.yaml"
    conf.write_text(yaml.safe_dump(_sasl(tmp_path)))
    res = run_cli(
        "config", "--config", str(conf), env={"STREAMLEARN_KAFKA__SECURITY__SASL_PASSWORD": SECRET}
    )
    assert res.returncode == 0, res.stderr
    assert SECRET not in res.stdout + res.stderr
    assert "sasl_password: '**********'" in res.stdout


@pytest.mark.parametrize(
    ("security", "message"),
    [
        ({"protocol": "SASL_PLAINTEXT"}, "needs sasl_mechanism, sasl_username and sasl_password"),
        (
            {"sasl_password": "a", "sasl_password_file": "/etc/hostname"},
            "both set: give the secret one way",
        ),
        ({"ssl_cafile": "/nonexistent/ca.pem"}, "kafka.security.ssl_cafile"),
        ({"protocol": "TLS"}, "kafka.security.protocol"),
    ],
)
def test_incomplete_security_fails_at_start_naming_the_setting(security, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides={"kafka": {"security": security}}, env={})


def test_clients_never_log_the_secret(tmp_path, caplog, free_port):
    """A producer built with the SASL settings against a port nothing listens on: whatever
    kafka-python logs while it fails to connect, the password is not in it."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    env = {"STREAMLEARN_KAFKA__SECURITY__SASL_PASSWORD": SECRET}
    over = _sasl(tmp_path)
    over["kafka"]["bootstrap_servers"] = [f"127.0.0.1:{free_port}"]
    over["kafka"]["security"]["protocol"] = "SASL_PLAINTEXT"
    del over["kafka"]["security"]["ssl_cafile"]
    cfg = load_config(overrides=over, env=env)
    caplog.set_level(logging.DEBUG)
    settings = {**client_settings(cfg.kafka), "request_timeout_ms": 1000}
    producer = KafkaProducer(**settings, api_version=(2, 5), max_block_ms=500)
    with pytest.raises(KafkaError):
        producer.send("t", b"x").get(timeout=2)
    producer.close(timeout=1)
    assert caplog.records
    assert SECRET not in caplog.text


CANARY = "CANARY-7f3a9-do-not-print"


def test_a_canary_secret_is_in_no_log_line_at_debug_against_the_real_broker(
    kafka_bootstrap, tmp_path
):
    """The daemon at DEBUG, SASL configured against the real (PLAINTEXT) broker: kafka-python
    logs its clients' whole configuration; the secret is masked wherever it appears."""
    conf = tmp_path / "debug.yaml"
    conf.write_text(
        yaml.safe_dump(
            {
                "source": {"kind": "kafka"},
                "service": {"log_level": "DEBUG"},
                "metrics": {"enabled": False},
                "kafka": {
                    "bootstrap_servers": [kafka_bootstrap],
                    "request_timeout_ms": 2000,
                    "security": {
                        "protocol": "SASL_PLAINTEXT",
                        "sasl_mechanism": "PLAIN",
                        "sasl_username": "adapter",
                    },
                },
            }
        )
    )
    env = {"STREAMLEARN_KAFKA__SECURITY__SASL_PASSWORD": CANARY}
    res = run_cli("run", "--config", str(conf), "--max-events", "1", env=env, timeout=120)
    assert res.returncode != 0  # the broker speaks no SASL
    assert "DEBUG" in res.stderr
    assert "sasl_plain_password" in res.stderr
    assert CANARY not in res.stdout + res.stderr


@pytest.mark.parametrize(
    "text",
    [
        f"kafka:\n  security:\n    sasl_password: {CANARY}\n    sasl_password_file: /etc/hosts\n",
        f"kafka:\n  security:\n    sasl_password: [{CANARY}]\n",
        f"kafka:\n  security:\n    sasl_password: {{a: {CANARY}}}\n",
        f"kafka:\n  security: {CANARY}\n",
        f"kafka:\n  security:\n    sasl_password: {CANARY}\n    protocol: SASL_PLAINTEXT\n",
    ],
)
def test_a_canary_secret_is_in_no_config_error(tmp_path, text):
    conf = tmp_path / "bad.yaml"
    conf.write_text(text)
    res = run_cli("config", "--config", str(conf))
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1
    assert CANARY not in res.stdout + res.stderr, res.stderr


def test_an_all_digit_secret_from_the_environment_is_a_string_and_never_printed():
    env = {"STREAMLEARN_KAFKA__SECURITY__SASL_PASSWORD": "20260101123456"}
    res = run_cli("config", env=env)
    assert res.returncode == 0, res.stderr
    assert "20260101123456" not in res.stdout + res.stderr
    cfg = load_config(env=env)
    assert cfg.kafka.security.secret("sasl_password") == "20260101123456"


def test_a_canary_secret_is_not_served(tmp_path):
    import urllib.request

    from prometheus_client import CollectorRegistry

    from streamlearn.ops.http import ServiceHTTP
    from streamlearn.service.daemon import Daemon

    cfg = load_config(env={"STREAMLEARN_KAFKA__SECURITY__SASL_PASSWORD": CANARY})
    reg = CollectorRegistry()
    daemon = Daemon(cfg, reg)
    daemon.run(max_events=500)
    srv = ServiceHTTP(reg, "127.0.0.1", 0, daemon.ready)
    port = srv.start()
    try:
        served = b"".join(
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}").read()
            for path in ("/metrics", "/healthz")
        )
    finally:
        srv.stop()
    assert b"streamlearn_events_total" in served
    assert CANARY.encode() not in served
