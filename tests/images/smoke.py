"""The image smoke test: both images run the whole pipeline the way the chart runs them.

Against the machine's RabbitMQ (a vhost of its own, deleted afterwards) and an aiosmtpd capture on the host that
requires STARTTLS with a certificate from a CA made here (trustme), the chart is rendered with the real Helm engine
and each image's command runs from a `buildah mount` of a fresh working container, as tests.support.containers
runs it: uid and gid from the securityContext, a read-only root, the chart's /tmp emptyDir as the only writable
place, the chart's environment and nothing else, the CA as the ConfigMap volume `email.extraVolumes` declares.

Checked, in order, each failure naming what broke: both containers become ready (/readyz 200) as PID 1 with uid
10001, no capabilities and no_new_privs; a signup per locale of the chart's LOCALES is accepted (202) and its
welcome mail arrives over verified STARTTLS (SMTP_CA_FILE, SMTP_TLS_VERIFY=true) in that locale's template;
/metrics of both count them; `email-service dlq list` runs in the image and finds the DLQ empty; SIGTERM stops
each container with exit code 0 within its grace period (less the producer's preStop sleep).

Invariant: the vhost, the SMTP server, the working containers and every process are gone when `run()` returns
or raises; a failure raises `SmokeFailed`, whose message is what the driver prints.
"""

from __future__ import annotations

import contextlib
import json
import signal
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import trustme

from tests.support.broker import AMQP_URL, VHost, check_broker
from tests.support.buildah import require_buildah, working_container
from tests.support.containers import ContainerProcess
from tests.support.ports import free_port
from tests.support.prometheus import scrape
from tests.support.smtp_server import ReceivedMail, SmtpTestServer
from tests.support.waits import WaitTimedOut, eventually

from .pods import PodRun, pod_runs

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "email-service" / "src" / "email_service" / "templates"
CA_MOUNT = "/etc/smtp-ca"
NAMES = {"en": "Ada Lovelace", "zh-CN": "张三"}  # a name per locale; others get the first


class SmokeFailed(AssertionError):
    """The images did not do what the chart expects of them; the message says what and why."""


def say(message: str) -> None:
    print(f"images-smoke: {message}", flush=True)


def loopback_url(amqp_url: str) -> str:
    """The broker URL as a container on the host network reaches it (127.0.0.1, not a name to resolve)."""
    return amqp_url.replace("@localhost:", "@127.0.0.1:")


class ImageSmoke:
    """One run: what it sets up goes on `stack` as it is made, so `run()` tears down exactly what exists."""

    def __init__(self, workdir: Path, images: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.images = images or {}  # component -> image reference other than the chart's (a broken variant)
        self.stack = contextlib.ExitStack()
        self.client = httpx.AsyncClient(timeout=10)

    # -- set-up

    def _broker(self) -> VHost:
        check_broker()
        vhost = VHost.create("wm-images", broker_url=loopback_url(AMQP_URL))
        self.stack.callback(vhost.delete)
        return vhost

    def _smtp(self, authority: trustme.CA) -> SmtpTestServer:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        authority.issue_cert("localhost", "127.0.0.1").configure_cert(context)
        server = SmtpTestServer(free_port(), tls_context=context)  # a TLS context: STARTTLS before MAIL, or 530
        server.start()
        self.stack.callback(server.stop)
        return server

    def _ca_volume(self, authority: trustme.CA) -> Path:
        """The ConfigMap volume with the CA, as the kubelet projects one: a directory of 0644 files."""
        folder = self.workdir / "smtp-ca"
        folder.mkdir(mode=0o755)
        authority.cert_pem.write_to_path(str(folder / "ca.crt"))
        (folder / "ca.crt").chmod(0o644)
        return folder

    def values(self, amqp_url: str, smtp_port: int) -> dict:
        """The chart values of this run: where the broker, the relay and the CA are, and free ports (the containers
        share the host's network, so the chart's 8000 and 9100 may be taken)."""
        return {
            "secrets": {"amqpUrl": amqp_url},
            "producer": {"containerPort": free_port()},
            "email": {"metricsPort": free_port(),
                      "config": {"smtp": {"host": "127.0.0.1", "port": smtp_port, "caFile": f"{CA_MOUNT}/ca.crt"}},
                      "extraVolumes": [{"name": "smtp-ca", "configMap": {"name": "smtp-ca"}}],
                      "extraVolumeMounts": [{"name": "smtp-ca", "mountPath": CA_MOUNT, "readOnly": True}]},
        }

    # -- containers

    def rootfs(self, run: PodRun) -> Path:
        return self.stack.enter_context(working_container(self.images.get(run.component, run.image.reference)))

    def container(self, run: PodRun, rootfs: Path, name: str, argv: list[str] | None = None) -> ContainerProcess:
        process = ContainerProcess(run.spec(rootfs, name=name, argv=argv), self.workdir,
                                   ready_url=f"http://127.0.0.1:{run.port}/readyz")
        self.stack.callback(process.stop, 5)
        process.start()
        return process

    async def start(self, run: PodRun, rootfs: Path, name: str = "") -> ContainerProcess:
        name = name or f"welcome-{run.component}-smoke"
        process = self.container(run, rootfs, name)
        try:
            await process.wait_ready(timeout=60)
        except AssertionError as exc:
            code = process.returncode
            why = process.last_words() or str(exc)
            raise SmokeFailed(f"the {run.component} container ({self.images.get(run.component, run.image.reference)})"
                              f" {'exited with ' + str(code) if code is not None else 'never got ready'} "
                              f"before /readyz answered 200; it said:\n{why}") from None
        status = process.container_status()
        expected = (1, run.container.uid, run.container.gid, True, 0)
        found = (status.pid_in_container, status.uid, status.gid, status.no_new_privs, status.capabilities)
        if found != expected:
            raise SmokeFailed(f"{name}: (PID in container, uid, gid, no_new_privs, capabilities) is {found}, "
                              f"the chart asks for {expected}")
        say(f"{name}: ready as PID 1, uid {status.uid}, gid {status.gid}, no capabilities, no_new_privs, "
            f"{'read-only root' if run.container.read_only_root else 'WRITABLE root'}, writable only "
            f"{', '.join(run.container.tmpfs)}: {' '.join(run.container.argv)}")
        return process

    # -- the pipeline

    async def signups(self, producer: PodRun) -> dict[str, tuple[str, str]]:
        """event id -> (locale, address), one signup per locale the chart configures."""
        sent = {}
        for locale in producer.env["LOCALES"].split(","):
            address = f"smoke-{locale.lower()}@example.com"
            response = await self.client.post(f"http://127.0.0.1:{producer.port}/v1/signups", json={
                "email": address, "name": NAMES.get(locale, NAMES["en"]), "locale": locale})
            if response.status_code != 202:
                raise SmokeFailed(f"POST /v1/signups ({locale}) answered {response.status_code}: {response.text}")
            sent[response.json()["event_id"]] = (locale, address)
        return sent

    @staticmethod
    def check_mail(mail: ReceivedMail, locale: str, address: str, product: str) -> None:
        message = mail.message
        subject = (TEMPLATES / f"welcome.{locale}.subject").read_text("utf-8").strip().replace("{{product}}", product)
        found = (mail.rcpt_tos, message["Content-Language"], message["Subject"])
        if found != ([address], locale, subject):
            raise SmokeFailed(f"the {locale} mail has (recipients, Content-Language, Subject) {found}, expected "
                              f"{([address], locale, subject)}")

    async def mails(self, smtp: SmtpTestServer, sent: dict[str, tuple[str, str]], email: PodRun) -> None:
        try:
            await eventually(lambda: set(sent) <= set(smtp.by_event()), timeout=60, interval=0.1,
                             what=f"the welcome mails of events {sorted(sent)}")
        except WaitTimedOut as exc:
            raise SmokeFailed(f"{exc}; received {dict(smtp.by_event())}") from None
        if dict(smtp.by_event()) != dict.fromkeys(sent, 1):
            raise SmokeFailed(f"expected one mail for each of {sorted(sent)}, received {dict(smtp.by_event())}")
        for mail in smtp.received():
            locale, address = sent[mail.event_id or ""]
            self.check_mail(mail, locale, address, email.env["PRODUCT_NAME"])
        say(f"{len(sent)} welcome mails ({', '.join(locale for locale, _ in sent.values())}) arrived over STARTTLS, "
            f"the relay's certificate verified against SMTP_CA_FILE={email.env['SMTP_CA_FILE']} "
            f"(SMTP_TLS_VERIFY={email.env['SMTP_TLS_VERIFY']}), each in its locale's template")

    async def endpoints(self, runs: dict[str, PodRun], count: int) -> None:
        counters = {"producer": ("producer_signups_total", {"outcome": "accepted"}),
                    "email": ("email_messages_total", {"outcome": "sent"})}
        for component, (name, labels) in counters.items():
            base = f"http://127.0.0.1:{runs[component].port}"
            ready = await self.client.get(f"{base}/readyz")
            metrics = await scrape(f"{base}/metrics", self.client)
            value = metrics.value(name, **labels)
            if ready.status_code != 200 or value != count:
                raise SmokeFailed(f"{component}: /readyz {ready.status_code}, {name}{labels} = {value} "
                                  f"(expected 200 and {count})")
            selector = ",".join(f'{key}="{wanted}"' for key, wanted in labels.items())
            say(f"{component}: /readyz 200, /metrics {name}{{{selector}}} = {value:g}")

    async def dlq_list(self, email: PodRun, rootfs: Path) -> None:
        argv = [*email.image.entrypoint, "dlq", "list", "--json"]
        process = self.container(email, rootfs, "welcome-email-dlq", argv=argv)
        code = await process.wait_exit(timeout=60)
        summary = process.output().strip().splitlines()[-1] if process.output().strip() else ""
        if code != 0 or json.loads(summary or "{}").get("total") != 0:
            raise SmokeFailed(f"`{' '.join(argv)}` in the image exited with {code}: {process.last_words()}")
        say(f"`{' '.join(argv)}` in the image: exit 0, {summary}")

    async def stop(self, run: PodRun, process: ContainerProcess) -> None:
        started = time.monotonic()
        process.signal(signal.SIGTERM)
        try:
            code = await process.wait_exit(timeout=run.stop_within)
        except WaitTimedOut:
            raise SmokeFailed(f"{process.name} still ran {run.stop_within:g} s after SIGTERM (the kubelet's SIGKILL)"
                              f": {process.last_words()}") from None
        took = time.monotonic() - started
        if code != 0:
            raise SmokeFailed(f"{process.name} exited with {code} on SIGTERM: {process.last_words()}")
        say(f"{process.name}: SIGTERM -> exit 0 in {took:.1f} s (allowed {run.stop_within:g} s)")

    async def run(self) -> None:
        require_buildah()
        with self.stack:
            try:
                await self._run()
            finally:
                await self.client.aclose()

    async def _run(self) -> None:
        vhost = self._broker()
        authority = trustme.CA()
        smtp = self._smtp(authority)
        runs = pod_runs(self.values(vhost.url, smtp.port), {"smtp-ca": self._ca_volume(authority)})
        email, producer = runs["email"], runs["producer"]
        say(f"vhost {vhost.name}, SMTP capture on 127.0.0.1:{smtp.port} (STARTTLS required), chart rendered")
        email_root, producer_root = self.rootfs(email), self.rootfs(producer)
        email_process = await self.start(email, email_root)  # it declares the exchange the producer publishes to
        producer_process = await self.start(producer, producer_root)
        sent = await self.signups(producer)
        await self.mails(smtp, sent, email)
        await self.endpoints(runs, len(sent))
        await self.dlq_list(email, email_root)
        await self.stop(producer, producer_process)
        await self.stop(email, email_process)
        await missing_template_is_caught(self, email)


async def missing_template_is_caught(smoke: ImageSmoke, email: PodRun) -> None:
    """Self-check: the email image with one template left out (as a package without its package data) must make
    the smoke test fail, with a message naming the missing file."""
    rootfs = smoke.rootfs(email)
    locale = email.env["LOCALES"].split(",")[-1]
    pattern = f"opt/venv/lib/python3*/site-packages/email_service/templates/welcome.{locale}.txt"
    victims = list(rootfs.glob(pattern))
    if len(victims) != 1:
        raise SmokeFailed(f"self-check: expected one {pattern} in the email image, found {victims}")
    victims[0].unlink()
    try:
        await smoke.start(email, rootfs, name="welcome-email-broken")
    except SmokeFailed as exc:
        if victims[0].name not in str(exc) or "missing" not in str(exc):
            raise SmokeFailed(f"self-check: without {victims[0].name} the smoke test failed, but its message does not "
                              f"name the file:\n{exc}") from None
        said = next(line for line in str(exc).splitlines() if victims[0].name in line)
        say(f"self-check: the email image without {victims[0].name} fails the smoke test: {said}")
        return
    raise SmokeFailed(f"self-check: the email image without {victims[0].name} got ready: the smoke test would not "
                      "notice a template left out of the package data")


@contextlib.contextmanager
def timed(what: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    say(f"{what} in {time.monotonic() - started:.0f} s")
