"""The scheduled resend: the CronJob that runs `email-service dlq replay` (off by default), its arguments from the
values, its pods as locked down as the Deployments', and the command line the email service accepts."""

from __future__ import annotations

import kubernetes_validate
import pytest
from welcome_chart import KUBE_MIN, RELEASE, find, one, render, rendered

from email_service.__main__ import build_parser

REPLAY = {"email": {"replayCronJob": {"enabled": True}}}


def job_pod(objects: list[dict]) -> dict:
    cronjob = one(objects, "CronJob", f"{RELEASE}-email-replay")
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def test_off_by_default():
    assert not find(rendered("defaults"), "CronJob")


def test_defaults_replay_the_transient_reasons_rate_limited_and_bounded():
    objects = render(REPLAY)
    cronjob = one(objects, "CronJob", f"{RELEASE}-email-replay")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid" and cronjob["spec"]["schedule"] == "17 */6 * * *"
    [container] = job_pod(objects)["containers"]
    assert container["args"] == ["dlq", "replay", "--reason", "retries_exhausted", "--reason", "deadline_exceeded",
                                 "--rate", "5", "--limit", "1000", "--max-replays", "3"]
    args = build_parser().parse_args(container["args"])  # what the CLI accepts
    assert args.reason == ["retries_exhausted", "deadline_exceeded"] and args.max_replays == 3 and args.rate == 5
    assert container["envFrom"] == [{"configMapRef": {"name": f"{RELEASE}-email"}}]
    assert {e["name"] for e in container["env"]} == {"AMQP_URL", "DEDUP_URL"}


def test_everything_set_renders_the_chosen_values():  # the release is called "mail" there
    cronjob = one(rendered("everything"), "CronJob", "mail-email-replay")
    assert cronjob["spec"]["timeZone"] == "Europe/Zurich" and cronjob["spec"]["schedule"] == "*/30 * * * *"
    [container] = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["args"][2:] == ["--reason", "retries_exhausted", "--rate", "2.5", "--limit", "200",
                                     "--max-replays", "2"]


@pytest.mark.parametrize("version", [KUBE_MIN, kubernetes_validate.utils.latest_version()])
def test_cronjob_is_valid_kubernetes_strict(version):
    kubernetes_validate.validate(one(render(REPLAY), "CronJob", f"{RELEASE}-email-replay"), version, strict=True)


def test_job_pods_run_unprivileged_with_a_read_only_root():
    pod = job_pod(render(REPLAY))
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    sc = pod["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"] == {"drop": ["ALL"]}


def test_job_pods_are_not_selected_by_the_email_service_or_its_budget():
    objects = render(REPLAY)
    cronjob = one(objects, "CronJob", f"{RELEASE}-email-replay")
    labels = cronjob["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    selector = one(objects, "Service", f"{RELEASE}-email")["spec"]["selector"]
    assert not selector.items() <= labels.items()
    assert labels["app.kubernetes.io/component"] == "email-replay"
