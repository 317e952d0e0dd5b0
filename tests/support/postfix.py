"""A real MTA for the suites: Debian's Postfix as a relay on a free loopback port, in front of an SMTP sink, with
its own anvil limits, so the throttling replies a test meets are Postfix's, not ours.

    relay = PostfixRelay(sink.port, connection_count_limit=2, message_rate_limit=5, rate_time_unit="60s",
                         extra={"smtpd_helo_restrictions": "reject_non_fqdn_helo_hostname"})  # any main.cf setting
    relay.start()            # listening on 127.0.0.1:relay.port, relaying every mail to [127.0.0.1]:sink.port
    ... SMTP clients against relay.port ...
    relay.log()              # Postfix's own log (anvil's "too many connections" lines among them)
    relay.stop()             # stopped, its directories, log and registration removed

Replies observed from Postfix 3.7.11 (Debian 12) past its limits (anvil, with `smtpd_client_event_limit_exceptions`
empty so loopback clients are limited too):
- `smtpd_client_connection_count_limit` exceeded: `421 4.7.0 relay.test Error: too many connections from
  127.0.0.1` instead of the greeting, then the connection is closed;
- `smtpd_client_message_rate_limit` exceeded (per `anvil_rate_time_unit`): `450 4.7.1 Error: too much mail from
  127.0.0.1` to MAIL FROM; the connection stays open.

Invariants:
- one instance per `PostfixRelay`: its own config, queue and data directories (under /var/tmp, the queue owned by
  postfix as Postfix requires) and its own log file (under /var/log: `maillog_file` must lie under
  `maillog_file_prefixes`); it never touches the machine's default instance, which stays stopped;
- the one global change is the default /etc/postfix/main.cf's `alternate_config_directories`, without which
  `postfix -c DIR start` fails silently: the instance's directory is added at start and removed at stop, under a
  file lock, so instances of concurrent test runs never lose each other's entries; when Postfix was installed with
  "No configuration" (as tests/bench/ensure-tools.sh does) that main.cf is missing and is created empty (Postfix's
  defaults), which starts nothing;
- every service in master.cf runs unchrooted (a chroot would need copies of /etc files in each queue directory);
- nothing is mocked: `start()` fails naming what to install when Postfix is missing.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .ports import free_port
from .waits import eventually_sync

DEFAULT_MAIN_CF_DIR = Path("/etc/postfix")
_REGISTRY_LOCK = Path("/run/lock/welcome-mail-postfix.lock")
INSTALL_IT = "Debian's postfix is needed: make system-deps (or deploy/local/ensure-packages.sh postfix)"

_MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


class PostfixRelay:
    """Postfix on 127.0.0.1:`port` relaying to [127.0.0.1]:`sink_port`; None for a limit: Postfix's default
    (`connection_count_limit` 50, `message_rate_limit` 0 = none). `extra`: more main.cf settings, last (so they
    override the ones above)."""

    def __init__(self, sink_port: int, *, connection_count_limit: int | None = None,
                 message_rate_limit: int | None = None, rate_time_unit: str = "60s",
                 extra: dict[str, str] | None = None) -> None:
        self.sink_port = sink_port
        self.port = free_port()
        self.name = f"wm-postfix-{uuid.uuid4().hex[:8]}"
        self.dir = Path("/var/tmp") / self.name
        self.log_path = Path("/var/log") / f"{self.name}.log"
        self.settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.dir / "queue"),
            "data_directory": str(self.dir / "data"),
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "myhostname": "relay.test",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "relayhost": f"[127.0.0.1]:{sink_port}",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "maillog_file": str(self.log_path),
            "alias_maps": "",
            "alias_database": "",
            "smtpd_client_event_limit_exceptions": "",  # anvil exempts $mynetworks by default: loopback too
            "anvil_rate_time_unit": rate_time_unit,
            # Deliver to the sink at once, and retry it soon: the tests measure Postfix's replies, not its queue.
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "smtp_connect_timeout": "5s",
            **({"smtpd_client_connection_count_limit": str(connection_count_limit)}
               if connection_count_limit is not None else {}),
            **({"smtpd_client_message_rate_limit": str(message_rate_limit)} if message_rate_limit is not None else {}),
            **(extra or {}),
        }
        self.running = False

    # -- lifecycle

    def start(self) -> PostfixRelay:
        if shutil.which("postfix") is None:
            raise AssertionError(INSTALL_IT)
        for sub in ("config", "queue", "data"):  # postfix start makes the queue's subdirectories, not these
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)  # postfix (not root) must reach its queue below
        shutil.chown(self.dir / "data", user="postfix")
        main_cf = "".join(f"{key} = {value}\n" for key, value in self.settings.items())
        (self.dir / "config" / "main.cf").write_text(main_cf)
        (self.dir / "config" / "master.cf").write_text(_MASTER_CF.format(listen=f"127.0.0.1:{self.port}"))
        _register(self.config_dir, add=True)
        started = self._postfix("start")
        if started.returncode != 0:
            output = started.stdout + started.stderr
            self.stop()
            raise AssertionError(f"postfix -c {self.config_dir} start failed ({started.returncode}): {output}")
        self.running = True
        eventually_sync(self._listening, timeout=20, interval=0.1, what=f"Postfix listening on :{self.port}")
        return self

    def stop(self) -> None:
        """Stop the instance (if it runs), then remove its registration, directories and log."""
        try:
            if self.running:
                self._postfix("stop")
                eventually_sync(lambda: self._postfix("status").returncode != 0, timeout=20, interval=0.2,
                                what="Postfix stopped")
                self.running = False
        finally:
            _register(self.config_dir, add=False)
            shutil.rmtree(self.dir, ignore_errors=True)
            self.log_path.unlink(missing_ok=True)

    # -- what it did

    @property
    def config_dir(self) -> Path:
        return self.dir / "config"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def queue_is_empty(self) -> bool:
        """No mail waits in Postfix's queue: everything it accepted went on to the sink (or was bounced)."""
        shown = subprocess.run(["postqueue", "-c", str(self.config_dir), "-j"], capture_output=True, text=True,
                               timeout=10, check=False)
        return shown.returncode == 0 and not shown.stdout.strip()

    def _postfix(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["postfix", "-c", str(self.config_dir), command], capture_output=True, text=True,
                              timeout=60, check=False)

    def _listening(self) -> bool:
        # Read from the kernel's socket table, not by connecting: a probe connection would count with anvil.
        wanted = f"0100007F:{self.port:04X}"
        rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
        return any(row.split()[1] == wanted and row.split()[3] == "0A" for row in rows)  # 0A: LISTEN


@contextmanager
def _registry() -> Iterator[None]:
    with open(_REGISTRY_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _register(config_dir: Path, *, add: bool) -> None:
    """Add `config_dir` to (or remove it from) the default main.cf's alternate_config_directories."""
    with _registry():
        (DEFAULT_MAIN_CF_DIR / "main.cf").touch(exist_ok=True)
        current = subprocess.run(["postconf", "-c", str(DEFAULT_MAIN_CF_DIR), "-h", "alternate_config_directories"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout
        dirs = [d for d in current.replace(",", " ").split() if d != str(config_dir)]
        if add:
            dirs.append(str(config_dir))
        if dirs:
            command = ["postconf", "-c", str(DEFAULT_MAIN_CF_DIR), "-e",
                       f"alternate_config_directories = {' '.join(dirs)}"]
        else:
            command = ["postconf", "-c", str(DEFAULT_MAIN_CF_DIR), "-X", "alternate_config_directories"]
        subprocess.run(command, capture_output=True, text=True, timeout=10, check=True)
