"""What a member kubeconfig may contain: plugins and file references are refused."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from suanli.members.kubeconfig import EXEC_FLAG, Refusal, refusal_message, refusals


def kubeconfig(user: dict[str, Any], cluster: dict[str, Any] | None = None) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "member",
                    "cluster": cluster
                    or {"server": "https://member.example:6443", "certificate-authority-data": "x"},
                }
            ],
            "users": [{"name": "hub", "user": user}],
            "contexts": [{"name": "hub", "context": {"cluster": "member", "user": "hub"}}],
            "current-context": "hub",
        }
    )


EXEC = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "/bin/sh"}}
AUTH_PROVIDER = {"auth-provider": {"name": "gcp", "config": {"cmd-path": "/bin/sh"}}}


def test_a_token_kubeconfig_passes() -> None:
    assert refusals(kubeconfig({"token": "abc"})) == []
    assert refusals(kubeconfig({"client-certificate-data": "x", "client-key-data": "y"})) == []


@pytest.mark.parametrize(("user", "field"), [(EXEC, "exec"), (AUTH_PROVIDER, "auth-provider")])
def test_plugins_are_refused_unless_allowed(user: dict[str, Any], field: str) -> None:
    found = refusals(kubeconfig(user))
    assert found == [Refusal("user", "hub", field)]
    assert found[0].plugin
    assert refusals(kubeconfig(user), allow_exec=True) == []


@pytest.mark.parametrize(
    ("user", "cluster", "refused"),
    [
        (
            {"tokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token"},
            None,
            Refusal("user", "hub", "tokenFile"),
        ),
        ({"client-certificate": "/a.crt"}, None, Refusal("user", "hub", "client-certificate")),
        ({"client-key": "/a.key"}, None, Refusal("user", "hub", "client-key")),
        (
            {"token": "t"},
            {"server": "https://m:6443", "certificate-authority": "/ca.crt"},
            Refusal("cluster", "member", "certificate-authority"),
        ),
    ],
)
def test_file_references_are_refused_even_with_the_flag(
    user: dict[str, Any], cluster: dict[str, Any] | None, refused: Refusal
) -> None:
    assert refusals(kubeconfig(user, cluster), allow_exec=True) == [refused]
    assert not refused.plugin


def test_every_entry_is_checked_not_only_the_current_context() -> None:
    document = yaml.safe_load(kubeconfig({"token": "abc"}))
    document["users"].append({"name": "laptop", "user": EXEC})
    assert refusals(yaml.safe_dump(document)) == [Refusal("user", "laptop", "exec")]


@pytest.mark.parametrize("text", ["", "- a list", "{unclosed", "users: 3", "users: [3, {}]"])
def test_text_that_is_no_kubeconfig_is_left_to_the_loader(text: str) -> None:
    assert refusals(text) == []


def test_the_message_names_the_entry_the_secret_and_the_flag() -> None:
    found = refusals(kubeconfig(EXEC))
    message = refusal_message(found, "Secret suanli-system/member-a-kubeconfig (key kubeconfig)")
    assert 'user "hub" runs a credential plugin (exec)' in message
    assert "Secret suanli-system/member-a-kubeconfig" in message
    assert EXEC_FLAG in message
    assert "suanli member kubeconfig" in message
    # A file reference cannot be allowed by the flag: the message does not offer it.
    files = refusal_message(refusals(kubeconfig({"tokenFile": "/t"})), "Secret a/b (key k)")
    assert EXEC_FLAG not in files
    assert "inline it as token" in files
