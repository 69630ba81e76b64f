"""Every failure of the CLI ends in one sentence on stderr, never a traceback."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from suanli import cli, failures
from suanli.errors import UserFacingError
from suanli.kits.waiting import WaitTimeoutError


def refusal() -> ApiException:
    error = ApiException(status=403, reason="Forbidden")
    error.body = json.dumps({"message": 'admission webhook "x" denied the request: too dear'})
    return error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (UserFacingError("spec.replicas: at most 64"), "spec.replicas: at most 64"),
        (
            refusal(),
            'the Kubernetes API server answered 403 (Forbidden): admission webhook "x" denied '
            "the request: too dear",
        ),
        (
            urllib3.exceptions.MaxRetryError(None, "/api", "refused"),  # type: ignore[arg-type]
            "a server did not answer",
        ),
        (WaitTimeoutError("timed out waiting for the hub"), "timed out waiting for the hub"),
        (FileNotFoundError(2, "No such file or directory", "/x.yaml"), "No such file or directory"),
        (
            subprocess.CalledProcessError(1, ["helm", "install"]),
            "`helm install` failed with exit status 1",
        ),
        (KeyError("boom"), "This is a bug in suanli"),
    ],
)
def test_failures_are_explained(error: BaseException, expected: str) -> None:
    assert expected in failures.explain(error)


def test_main_turns_a_failure_into_one_line_and_status_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def failing(_: argparse.Namespace) -> int:
        raise refusal()

    parser = cli.build_parser()
    original = parser.parse_args

    def parse(argv: Any = None) -> argparse.Namespace:
        args = original(argv)
        args.handler = failing
        return args

    monkeypatch.setattr(parser, "parse_args", parse)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert cli.main(["status"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("suanli: error: the Kubernetes API server answered 403")
    assert err.count("\n") == 1


def test_a_real_command_against_an_unreachable_hub_ends_in_a_sentence(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "suanli", "status", "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    # Above it, urllib3 may log its retries; the command's last word is the sentence.
    assert result.stderr.splitlines()[-1].startswith("suanli: error: a server did not answer")
