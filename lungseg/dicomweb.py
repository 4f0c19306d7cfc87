"""DICOMweb to and from a PACS: QIDO-RS search, WADO-RS retrieve of one CT series, STOW-RS store of contours.

A CT series on a PACS is named by its DICOMweb URL, ``BASE/studies/STUDY_UID/series/SERIES_UID`` (http or
https), and that URL is a :class:`~lungseg.case.CaseSource` CT like a file: :func:`fetch_series` retrieves the
series into a folder of the case cache and the case opens from there.  The folder is written atomically: the
instances go to a temporary folder, are counted against the server's ``NumberOfSeriesRelatedInstances`` and
its instance list, and only then is the folder renamed into place, so a failure leaves nothing behind.  The
cached folder is keyed by the URL and the series' instance list, so a series that changed on the server is
fetched again.

Credentials come from the environment (or the app's settings), never from the repository or the URL:
``LUNGSEG_PACS_URL`` (the default server), ``LUNGSEG_PACS_USER`` + ``LUNGSEG_PACS_PASSWORD`` (HTTP basic)
or ``LUNGSEG_PACS_TOKEN`` (bearer).  They are sent only to the server of ``LUNGSEG_PACS_URL`` (or to any
server when that is unset).  TLS certificates are verified; ``LUNGSEG_PACS_CA_BUNDLE`` names a hospital CA
bundle.  Every failure is a one-line :class:`~lungseg.errors.LungsegError` that names the server (scheme,
host and port only) and never a patient.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

from lungseg.errors import InputError, LungsegError

ENV_URL, ENV_USER, ENV_PASSWORD, ENV_TOKEN, ENV_CA = ("LUNGSEG_PACS_URL", "LUNGSEG_PACS_USER", "LUNGSEG_PACS_PASSWORD",
                                                      "LUNGSEG_PACS_TOKEN", "LUNGSEG_PACS_CA_BUNDLE")
MANIFEST = "lungseg-series.json"
UNCOMPRESSED = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")
# QIDO tags (DICOM JSON keys)
T_STUDY, T_SERIES, T_SOP = "0020000D", "0020000E", "00080018"
T_MODALITY, T_INSTANCES, T_STUDY_DATE = "00080060", "00201209", "00080020"
T_SERIES_DESC, T_SERIES_NUMBER, T_BODY_PART = "0008103E", "00200011", "00180015"

Progress = Callable[[str, float], None]


class PacsError(LungsegError):
    """A PACS request failed (one line naming the server and what failed)."""


# --------------------------------------------------------------------------------------------
# names and settings


def is_dicomweb_url(text: object) -> bool:
    """True for an http(s) URL (a CT source that is a DICOMweb series, not a path)."""
    return isinstance(text, str) and text.strip().lower().startswith(("http://", "https://"))


def server_name(url: str) -> str:
    """``scheme://host:port`` of a URL: what messages show (never a path, query or credentials)."""
    u = urlsplit(url)
    host = u.hostname or "?"
    return f"{u.scheme}://{host}{f':{u.port}' if u.port else ''}"


@dataclass(frozen=True)
class SeriesRef:
    """A series on a DICOMweb server: the service's base URL and the study and series UIDs."""

    base_url: str
    study_uid: str
    series_uid: str

    @property
    def url(self) -> str:
        return f"{self.base_url}/studies/{self.study_uid}/series/{self.series_uid}"


def parse_series_url(url: str) -> SeriesRef:
    """``BASE/studies/STUDY/series/SERIES`` → :class:`SeriesRef` (one-line error for anything else)."""
    text = str(url).strip()
    u = urlsplit(text)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise InputError(f"{text[:120]}: a DICOMweb series URL starts with http:// or https://")
    if u.username or u.password:
        raise InputError(f"{server_name(text)}: credentials do not belong in the URL (they would be stored with the "
                         f"case); set {ENV_USER}/{ENV_PASSWORD} or {ENV_TOKEN}")
    if u.query or u.fragment:
        raise InputError(f"{server_name(text)}: a series URL has no query; expected BASE/studies/STUDY/series/SERIES")
    parts = u.path.rstrip("/").split("/")
    if len(parts) < 5 or parts[-4] != "studies" or parts[-2] != "series" or not parts[-3] or not parts[-1]:
        raise InputError(f"{server_name(text)}: not a series URL; expected BASE/studies/STUDY_UID/series/SERIES_UID")
    for uid in (parts[-3], parts[-1]):
        if not all(c.isdigit() or c == "." for c in uid) or len(uid) > 64:
            raise InputError(f"{server_name(text)}: {uid[:70]!r} is not a DICOM UID")
    base = f"{u.scheme}://{u.netloc}{'/'.join(parts[:-4])}"
    return SeriesRef(base.rstrip("/"), parts[-3], parts[-1])


@dataclass(frozen=True)
class PacsSettings:
    """How to reach a DICOMweb server. ``verify`` is True (system CAs) or a CA bundle path."""

    url: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    verify: bool | str = True
    timeout_s: float = 60.0

    def __post_init__(self):
        if not is_dicomweb_url(self.url):
            raise InputError(f"PACS URL {self.url[:120]!r}: expected http://… or https://…")
        u = urlsplit(self.url)
        if u.username or u.password:
            raise InputError(f"{server_name(self.url)}: credentials do not belong in the URL; set {ENV_USER}/"
                             f"{ENV_PASSWORD} or {ENV_TOKEN}")
        if self.user and self.token:
            raise InputError(f"give either {ENV_USER}/{ENV_PASSWORD} or {ENV_TOKEN}, not both")
        if self.verify is False:
            raise InputError("TLS verification cannot be switched off; give the hospital's CA bundle instead")

    @property
    def server(self) -> str:
        return server_name(self.url)

    @property
    def has_credentials(self) -> bool:
        return bool(self.user or self.token)

    @classmethod
    def from_env(cls, url: str | None = None, env: Mapping[str, str] | None = None) -> "PacsSettings":
        """Settings for ``url`` (default ``LUNGSEG_PACS_URL``) with the credentials of the environment.

        The credentials are those of the ``LUNGSEG_PACS_URL`` server; for another server they are
        not sent (unless ``LUNGSEG_PACS_URL`` is unset).
        """
        env = os.environ if env is None else env
        default = (env.get(ENV_URL) or "").strip().rstrip("/")
        url = (url or default).strip().rstrip("/")
        if not url:
            raise InputError(f"no PACS: give its DICOMweb URL (--url) or set {ENV_URL}")
        same_server = not default or server_name(default) == server_name(url)
        user = (env.get(ENV_USER) or None) if same_server else None
        token = (env.get(ENV_TOKEN) or None) if same_server else None
        ca = (env.get(ENV_CA) or "").strip()
        if ca and not Path(ca).exists():
            raise InputError(f"{ENV_CA}: {ca} does not exist")
        return cls(url, user, env.get(ENV_PASSWORD) if user else None, token, ca or True)


# --------------------------------------------------------------------------------------------
# search results


@dataclass(frozen=True)
class SeriesInfo:
    """One series as QIDO-RS describes it (no patient attributes are kept)."""

    study_uid: str
    series_uid: str
    modality: str
    instances: int | None
    study_date: str = ""
    series_description: str = ""
    series_number: int | None = None
    body_part: str = ""
    url: str = ""

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def title(self) -> str:
        """A one-line name for pickers: date, modality, series number and description, image count."""
        date = f"{self.study_date[:4]}-{self.study_date[4:6]}-{self.study_date[6:8]}" if len(self.study_date) == 8 \
            else self.study_date or "no date"
        number = f" #{self.series_number}" if self.series_number is not None else ""
        what = f" {self.series_description}" if self.series_description else ""
        n = f", {self.instances} images" if self.instances is not None else ""
        return f"{date} {self.modality}{number}{what}{n}"


def _value(item: Mapping, tag: str, default=None):
    v = item.get(tag, {}).get("Value")
    if not v:
        return default
    return v[0]


def _int(v) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def series_info(item: Mapping, base_url: str) -> SeriesInfo:
    study, series = str(_value(item, T_STUDY, "")), str(_value(item, T_SERIES, ""))
    return SeriesInfo(study_uid=study, series_uid=series, modality=str(_value(item, T_MODALITY, "")),
                      instances=_int(_value(item, T_INSTANCES)), study_date=str(_value(item, T_STUDY_DATE, "")),
                      series_description=str(_value(item, T_SERIES_DESC, "")),
                      series_number=_int(_value(item, T_SERIES_NUMBER)), body_part=str(_value(item, T_BODY_PART, "")),
                      url=SeriesRef(base_url, study, series).url if study and series else "")


@dataclass(frozen=True)
class SearchQuery:
    """A QIDO-RS series search. ``study_date`` is ``YYYYMMDD`` or a range ``YYYYMMDD-YYYYMMDD``;
    ``modality`` None searches every modality."""

    patient_id: str | None = None
    study_date: str | None = None
    modality: str | None = "CT"
    study_uid: str | None = None
    limit: int | None = None

    def __post_init__(self):
        if self.study_date:
            d = self.study_date.replace("-", "")
            if not d.isdigit() or len(d) not in (8, 16) or (len(d) == 16 and "-" not in self.study_date):
                raise InputError(f"study date {self.study_date!r}: expected YYYYMMDD or YYYYMMDD-YYYYMMDD")
        if self.limit is not None and self.limit < 1:
            raise InputError("the search limit must be at least 1")

    def filters(self) -> dict[str, str]:
        f = {}
        if self.patient_id:
            f["PatientID"] = self.patient_id
        if self.study_date:
            f["StudyDate"] = self.study_date
        if self.modality:
            f["Modality"] = self.modality.upper()
        if self.study_uid:
            f["StudyInstanceUID"] = self.study_uid
        return f


@dataclass(frozen=True)
class StoredInstance:
    """An instance the server confirmed it stored (STOW-RS)."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    modality: str
    series_description: str


# --------------------------------------------------------------------------------------------
# the client


class Pacs:
    """A DICOMweb server reached with :class:`PacsSettings` (dicomweb-client over one requests session)."""

    def __init__(self, settings: PacsSettings):
        import requests
        from dicomweb_client import DICOMwebClient

        self.settings = settings
        session = requests.Session()
        session.verify = settings.verify
        if settings.token:
            session.headers["Authorization"] = f"Bearer {settings.token}"
        elif settings.user:
            session.auth = (settings.user, settings.password or "")
        self._client = DICOMwebClient(settings.url, session=session, timeout=settings.timeout_s)
        # a busy server (429/503/504) is retried twice, quickly; anything else fails at once
        self._client.set_http_retry_params(retry=True, max_attempts=3, wait_exponential_multiplier=500)

    @classmethod
    def from_env(cls, url: str | None = None) -> "Pacs":
        return cls(PacsSettings.from_env(url))

    @contextlib.contextmanager
    def _errors(self, what: str):
        """Turn what requests, urllib3 and dicomweb-client raise into one-line :class:`PacsError`."""
        import requests

        server = self.settings.server
        try:
            yield
        except LungsegError:
            raise
        except requests.exceptions.SSLError:
            raise PacsError(f"{what}: the TLS certificate of {server} is not trusted; set {ENV_CA} to the "
                            "hospital's CA bundle") from None
        except requests.exceptions.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else 0
            if code == 401:
                hint = "check" if self.settings.has_credentials else "set"
                raise PacsError(f"{what}: {server} refused the request (401 unauthorised); {hint} {ENV_USER}/"
                                f"{ENV_PASSWORD} or {ENV_TOKEN}") from None
            if code == 403:
                raise PacsError(f"{what}: {server} does not allow this user to do that (403 forbidden)") from None
            if code == 404:
                raise PacsError(f"{what}: not found on {server} (404)") from None
            reason = exc.response.reason if exc.response is not None else ""
            raise PacsError(f"{what}: {server} answered {code} {reason}".rstrip()) from None
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError):
            raise PacsError(f"{what}: {server} stopped in the middle of the transfer") from None
        except requests.exceptions.ConnectTimeout:
            raise PacsError(f"{what}: cannot reach {server} (no answer within {self.settings.timeout_s:.0f} s)") from None
        except requests.exceptions.ReadTimeout:
            raise PacsError(f"{what}: {server} stopped answering (nothing for {self.settings.timeout_s:.0f} s)") from None
        except requests.exceptions.ConnectionError as exc:
            text = str(exc).lower()
            if "refused" in text:
                why = "connection refused"
            elif "name or service not known" in text or "nodename" in text or "resolution" in text:
                why = "unknown host"
            elif "reset" in text or "aborted" in text or "remote end closed" in text or "broken" in text:
                raise PacsError(f"{what}: {server} stopped in the middle of the transfer") from None
            else:
                why = "no connection"
            raise PacsError(f"{what}: cannot reach {server} ({why})") from None
        except requests.exceptions.RequestException as exc:
            raise PacsError(f"{what}: request to {server} failed ({type(exc).__name__})") from None
        except ValueError as exc:  # dicomweb-client: malformed answer or media type
            raise PacsError(f"{what}: unexpected answer from {server} ({' '.join(str(exc).split())[:120]})") from None

    # --- QIDO-RS -----------------------------------------------------------------------------
    def search(self, query: SearchQuery = SearchQuery()) -> list[SeriesInfo]:
        """Series matching ``query`` (CT only by default), ordered by study date, study and series number."""
        fields = ["NumberOfSeriesRelatedInstances", "StudyDate", "SeriesDescription", "SeriesNumber",
                  "BodyPartExamined", "Modality"]
        with self._errors("search"):
            items = self._client.search_for_series(search_filters=query.filters(), fields=fields, limit=query.limit,
                                                   get_remaining=query.limit is None)
        found = [series_info(it, self.settings.url) for it in items]
        if query.modality:  # some servers ignore the filter at the series level
            found = [s for s in found if s.modality.upper() == query.modality.upper()]
        return sorted(found, key=lambda s: (s.study_date, s.study_uid, s.series_number or 0, s.series_uid))

    def series(self, ref: SeriesRef) -> SeriesInfo:
        """What the server says of one series; 404 as a one-line error when it has no such series."""
        what = f"series {ref.series_uid}"
        with self._errors(what):
            items = self._client.search_for_series(
                search_filters={"StudyInstanceUID": ref.study_uid, "SeriesInstanceUID": ref.series_uid},
                fields=["NumberOfSeriesRelatedInstances", "Modality", "StudyDate", "SeriesDescription",
                        "SeriesNumber"])
        items = [it for it in items if _value(it, T_SERIES) == ref.series_uid]
        if not items:
            raise PacsError(f"{what}: not found on {self.settings.server} (404)")
        return series_info(items[0], self.settings.url)

    def instance_uids(self, ref: SeriesRef) -> list[str]:
        with self._errors(f"series {ref.series_uid}"):
            items = self._client.search_for_instances(ref.study_uid, ref.series_uid, fields=["SOPInstanceUID"],
                                                      get_remaining=True)
        return sorted({str(_value(it, T_SOP)) for it in items if _value(it, T_SOP)})

    # --- WADO-RS -----------------------------------------------------------------------------
    def retrieve(self, ref: SeriesRef, folder: Path, expected: Sequence[str], say: Progress | None = None) -> list[Path]:
        """Write every instance of the series into ``folder`` (``SOPInstanceUID.dcm``) and check that exactly
        the ``expected`` instances came, each with all of its pixel data."""
        say = say or (lambda message, fraction: None)
        what = f"series {ref.series_uid}"
        folder.mkdir(parents=True, exist_ok=True)
        expected_set = set(expected)
        got: list[Path] = []
        with self._errors(what):
            for ds in self._client.iter_series(ref.study_uid, ref.series_uid):
                uid = str(ds.get("SOPInstanceUID", ""))
                if uid not in expected_set:
                    raise PacsError(f"{what}: the server sent an instance it did not list; the series changed "
                                    "during the transfer, try again")
                _check_pixels(ds, what)
                path = folder / f"{uid}.dcm"
                with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
                    ds.save_as(out, enforce_file_format=True)
                got.append(path)
                if len(got) % 10 == 0 or len(got) == len(expected):
                    say(f"Retrieving the series from the PACS ({len(got)}/{len(expected)})",
                        0.02 * len(got) / max(1, len(expected)))
        names = {p.stem for p in got}
        if len(got) != len(names):
            raise PacsError(f"{what}: the server sent some instances twice")
        if names != expected_set:
            missing = len(expected_set - names)
            raise PacsError(f"{what}: the server sent {len(names)} of {len(expected_set)} instances "
                            f"({missing} missing); nothing was kept")
        return got

    # --- STOW-RS -----------------------------------------------------------------------------
    def store(self, paths: Sequence[str | os.PathLike]) -> list[StoredInstance]:
        """Store DICOM files on the server; returns what it confirmed (one-line error on any refusal)."""
        import pydicom

        datasets = [pydicom.dcmread(p) for p in paths]
        if not datasets:
            raise InputError("nothing to send")
        studies = {str(ds.StudyInstanceUID) for ds in datasets}
        what = f"store {', '.join(sorted({str(ds.Modality) for ds in datasets}))}"
        with self._errors(what):
            answer = self._client.store_instances(datasets, study_instance_uid=next(iter(studies))
                                                  if len(studies) == 1 else None)
        failed = answer.get("FailedSOPSequence") or []
        if failed:
            reasons = sorted({f"{int(item.get('FailureReason', 0)):#06x}" for item in failed})
            raise PacsError(f"{what}: {self.settings.server} refused {len(failed)} of {len(datasets)} instance(s) "
                            f"(failure reason {', '.join(reasons)})")
        confirmed = {str(item.ReferencedSOPInstanceUID) for item in (answer.get("ReferencedSOPSequence") or [])}
        out = []
        for ds in datasets:
            if confirmed and str(ds.SOPInstanceUID) not in confirmed:
                raise PacsError(f"{what}: {self.settings.server} did not confirm storing {ds.SOPInstanceUID}")
            out.append(StoredInstance(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID),
                                      str(ds.Modality), str(ds.get("SeriesDescription", ""))))
        return out

    def retrieve_instance(self, study_uid: str, series_uid: str, sop_uid: str):
        """One instance as a pydicom dataset (used to re-read what was stored)."""
        with self._errors(f"instance {sop_uid}"):
            return self._client.retrieve_instance(study_uid, series_uid, sop_uid)


def _check_pixels(ds, what: str) -> None:
    """An instance cut short on the wire parses, but lacks pixel data: refuse it."""
    if "PixelData" not in ds:
        raise PacsError(f"{what}: an instance arrived without its pixel data; the transfer was cut short")
    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    if ts in UNCOMPRESSED:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        need = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated) // 8 * frames
        if len(ds.PixelData) < need:
            raise PacsError(f"{what}: an instance arrived with {len(ds.PixelData)} of {need} pixel bytes; the "
                            "transfer was cut short")


# --------------------------------------------------------------------------------------------
# a series into the case cache


@dataclass(frozen=True)
class FetchedSeries:
    folder: Path
    identity: str  # digest of the URL and the instance list: the cache key of the folder
    label: str
    from_cache: bool


def series_cache_root(cache_root: str | os.PathLike | None) -> Path:
    """Where retrieved series live: ``dicomweb/`` in the case cache (the result cache's folder)."""
    if cache_root is None:
        from lungseg.case.cache import default_cache_dir

        cache_root = default_cache_dir()
    from lungseg.storage import private_dir

    return private_dir(Path(cache_root) / "dicomweb")


def series_label(ref: SeriesRef) -> str:
    """The case label of a PACS series: never the patient's name or ID, only the end of the series UID."""
    return f"pacs-{ref.series_uid[-12:].lstrip('.')}"


def fetch_series(url: str, cache_root: str | os.PathLike | None = None, say: Progress | None = None, *,
                 settings: PacsSettings | None = None) -> FetchedSeries:
    """The CT series at ``url`` as a local DICOM folder in the case cache (retrieved once per instance list).

    Refuses, in one line and leaving nothing in the cache: an unreachable server, 401/403, a series the
    server does not have (404), a series that is not CT, a series whose instances do not all arrive, a
    transfer cut off mid-way.
    """
    from lungseg.case.cache import digest

    say = say or (lambda message, fraction: None)
    ref = parse_series_url(url)
    pacs = Pacs(settings or PacsSettings.from_env(ref.base_url))
    say("Asking the PACS for the series", 0.01)
    info = pacs.series(ref)
    if info.modality.upper() != "CT":
        raise InputError(f"series {ref.series_uid}: modality {info.modality or 'unknown'}, not CT; lungseg "
                         "opens CT series")
    uids = pacs.instance_uids(ref)
    if info.instances is not None and len(uids) != info.instances:
        raise PacsError(f"series {ref.series_uid}: {pacs.settings.server} lists {len(uids)} instances but counts "
                        f"{info.instances}; nothing was kept")
    if not uids:
        raise PacsError(f"series {ref.series_uid}: {pacs.settings.server} lists no instances")
    from lungseg import storage

    identity = digest([ref.url, uids])
    root = series_cache_root(cache_root)
    final = root / identity
    if (final / MANIFEST).exists():
        storage.hold(final)
        os.utime(final)  # most recently used
        return FetchedSeries(final, identity, series_label(ref), True)
    tmp = storage.part_folder(root)  # removed on any failure; one left by a killed process goes at the next enforce
    try:
        pacs.retrieve(ref, tmp, uids, say)
        storage.make_tree_private(tmp)
        storage.write_private(tmp / MANIFEST, json.dumps({"url": ref.url, "instances": len(uids),
                                                          "identity": identity}).encode())
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / MANIFEST).exists():  # not another process that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    storage.hold(final)
    storage.enforce()
    return FetchedSeries(final, identity, series_label(ref), False)


def cached_series(url: str, cache_root: str | os.PathLike | None = None) -> Iterator[Path]:
    """The cache folders holding ``url`` (any instance list); for tests and housekeeping."""
    ref = parse_series_url(url)
    for f in series_cache_root(cache_root).glob(f"*/{MANIFEST}"):
        try:
            if json.loads(f.read_text()).get("url") == ref.url:
                yield f.parent
        except (OSError, ValueError):
            continue


# --------------------------------------------------------------------------------------------
# sending contours back


def accepted_description(names: Sequence[str]) -> str:
    """The series description of what is sent back, e.g. ``lungseg accepted GTV-1``."""
    return ("lungseg accepted " + ", ".join(names))[:64]


def store_accepted(case, accepted, fmt: str, url: str | None = None, *, names: Sequence[str] | None = None,
                   contour: str | None = None, description: str | None = None,
                   settings: PacsSettings | None = None) -> list[StoredInstance]:
    """Write accepted structures of ``case`` as a DICOM SEG or RTSTRUCT and store it on the PACS.

    ``accepted``: name → :class:`lungseg.structures.AcceptedStructure` (``structures.accepted_structures``;
    a stored case review is taken as what it accepts); ``names`` (or ``contour``: ``"automatic"`` for
    GTV-auto, ``"manual"`` for the manual ROI) picks some.  The object references the case's CT series and
    frame of reference (so the case must come from DICOM) and carries the series description
    ``lungseg accepted <names>`` unless ``description`` is given.  Written by
    :func:`lungseg.structures.export_structures`, the one export path.
    """
    import tempfile

    from lungseg import structures

    if fmt not in ("seg", "rtstruct"):
        raise InputError(f"a PACS stores DICOM: send a SEG or an RTSTRUCT, not {fmt}")
    if case.ct.dicom is None:
        raise InputError(f"{case.label}: the CT is not DICOM, so the PACS has no series for a {fmt} to reference")
    if not isinstance(accepted, Mapping):
        accepted = structures.accepted_from_review(case, accepted)
    if contour is not None and names is None:
        names = [structures.AUTOMATIC_NAME if contour == "automatic" else case.manual.name if case.manual else ""]
    chosen = list(names) if names is not None else list(accepted)
    pacs = Pacs(settings or PacsSettings.from_env(url))
    with tempfile.TemporaryDirectory(prefix="lungseg-send-") as tmp:
        paths = structures.export_structures(case, accepted, fmt, Path(tmp) / f"accepted.{fmt}.dcm", names=names,
                                             description=description or accepted_description(chosen))
        return pacs.store(paths)


def send_files(paths: Sequence[str | os.PathLike], url: str | None = None,
               settings: PacsSettings | None = None) -> list[StoredInstance]:
    """Store DICOM files (a SEG or RTSTRUCT written by ``export``) on the PACS at ``url``."""
    return Pacs(settings or PacsSettings.from_env(url)).store(paths)
