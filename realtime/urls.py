"""Source URLs: which texts are URLs, the secrets in them masked for anything shown
(logs, errors, results), and opening one so that Ctrl-C is not kept waiting."""

from __future__ import annotations

import re
import threading

from realtime import signals
from realtime.errors import RealtimeError

_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def is_url(text: str) -> bool:
    """``scheme://...`` (``file://`` included: the caller tells it apart)."""
    return bool(_URL.match(text))


# a URL in a message: up to white space, less the punctuation that ends a sentence
_URL_TOKEN = re.compile(r"[a-z][a-z0-9+.-]*://\S*?(?=[:,;.)'\"]*(?:\s|$))", re.IGNORECASE)
# userinfo: everything from "://" to the LAST "@" that a host name follows, so a
# password holding "@", "/", "?" or "#" is masked whole (an "@" later in the path or
# query over-masks: the safe side)
_USERINFO = re.compile(r"(?<=://)\S*@(?=[\w.\-\[\]:%]*(?:[/?#]|$))")
_SECRET_NAMES = (r"token|key|pass|pw|secret|sig|auth|cred|session|cookie|jwt|bearer|access|private|ticket|"
                 r"streamid|code|hash|nonce")
_SECRET_QUERY = re.compile(rf"([?&;][^=&#\s]*(?:{_SECRET_NAMES})[^=&#\s]*=)[^&#\s]*", re.IGNORECASE)
_FRAGMENT = re.compile(r"#\S*")
# an RTMP stream key is the path after the application name: rtmp://host/app/KEY
_RTMP_KEY = re.compile(r"^(rtmp[a-z]*://[^/\s]+/[^/\s?#]+/)[^\s?#]+", re.IGNORECASE)


def _mask_url(url: str) -> str:
    url = _USERINFO.sub("***@", url)
    url = _FRAGMENT.sub("#***", url)
    url = _RTMP_KEY.sub(r"\1***", url)
    return _SECRET_QUERY.sub(r"\1***", url)


def mask_credentials(text: str) -> str:
    """Mask secrets in every URL in ``text`` (safe for logs, errors and results): the
    whole userinfo (``rtsp://user:pw@host`` -> ``rtsp://***@host``, also a token alone
    or a password holding ``@``, ``/``, ``?`` or ``#``), the fragment (``#access_token=``
    ...), an RTMP stream key (``rtmp://host/app/***``) and the values of query
    parameters whose names look secret (``?token=...``, ``api_key``, ``pw``,
    ``password``, ``sig``, ``auth``, ``access_...``, ``streamid``...)."""
    return _URL_TOKEN.sub(lambda m: _mask_url(m.group(0)), text)


def open_url(spec: str, options: dict, cancel: threading.Event | None = None):
    """``av.open`` of a URL (10 s time-outs to connect and to read) on a thread of its
    own: FFmpeg waits for the server inside C, where neither Ctrl-C nor ``cancel``
    reach it; the caller's wait here answers both at once (within 0.1 s). A container
    that opens after nobody waits for it any more is closed."""
    import av

    done: dict = {}
    given_up = threading.Event()

    def target() -> None:
        try:
            done["container"] = av.open(spec, options=options, timeout=(10.0, 10.0))
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            done["error"] = e
        if given_up.is_set() and "container" in done:
            done["container"].close()

    opener = threading.Thread(target=target, name="open-stream", daemon=True)
    opener.start()
    try:
        while opener.is_alive():
            opener.join(0.1)  # a signal's handler runs between these waits
            if cancel is not None and cancel.is_set():
                raise RealtimeError("stopped while waiting for the stream to answer")
    finally:
        if opener.is_alive():
            given_up.set()
            signals.abandon(opener)
    if "error" in done:
        raise done["error"]
    return done["container"]


def av_reason(e: Exception) -> str:
    """FFmpeg's reason for a failure, in words, credentials masked."""
    import av

    if isinstance(e, av.ExitError):  # FFmpeg's "Immediate exit requested": our time-out fired
        return "no answer within 10 s (is the address right and the device on?)"
    return mask_credentials(getattr(e, "strerror", None) or str(e).splitlines()[0])
