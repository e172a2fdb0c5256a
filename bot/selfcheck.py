"""The self-check's clock: one thread per worker, doing the work only in the process that holds the
installation's lock (``storage.selfcheck``), every ``APIKEYS_SELF_CHECK_INTERVAL`` seconds: the
self-check, then the sweep of one-time links that expired unviewed (``storage.reveals``), then the
daily expiry digest once it is ``APIKEYS_EXPIRY_DIGEST_HOUR`` (``storage.expiry``: claimed once per
day in the database, so even two lock holders in a row never send it twice).

It never stops the server: a check that fails (the database away) is logged at most once a minute
and tried again at the next tick."""

from __future__ import annotations

import logging
import threading
import time

from storage import Store
from storage.selfcheck import InstallationLock, SelfCheck

from .config import Settings

log = logging.getLogger("apikeys.selfcheck")
_QUIET = 60.0  # seconds between two log lines about a self-check that could not run


class SelfCheckThread:
    def __init__(self, store: Store, settings: Settings):
        self.interval = settings.self_check_interval
        self.store = store
        self.digest_hour = settings.expiry_digest_hour
        signer = settings.audit_signer
        self.check = SelfCheck(store.db, store.audit, public_key=signer.public_raw if signer else None)
        self.lock = InstallationLock(store.db)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="apikeys-self-check", daemon=True)
        self._last_complaint = 0.0

    def start(self) -> "SelfCheckThread":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.lock.release()

    def tick(self) -> None:
        try:
            if not self.lock.acquire():
                return  # another process of this installation checks
        except Exception as exc:
            self._complain("self-check", exc)
            return
        for name, job in (("self-check", self.check.run), ("reveal sweep", self.store.reveals.sweep),
                          ("expiry digest", lambda: self.store.expiry.scheduled(hour=self.digest_hour))):
            try:  # each on its own: one that fails does not keep the others from running
                job()
            except Exception as exc:
                self._complain(name, exc)

    def _complain(self, name: str, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_complaint >= _QUIET:
            self._last_complaint = now
            log.warning("%s could not run (%s); trying again in %.1f s", name, type(exc).__name__, self.interval)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()


def start(store: Store, settings: Settings) -> SelfCheckThread:
    return SelfCheckThread(store, settings).start()
