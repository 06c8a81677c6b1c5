"""A provisioned site's folder: keys, certificates and credentials on disk, and the broker told.

Layout of the folder (each consumer reads only its own sub-folder):

    agent/      agent.toml, mqtt.password, ca.crt, data/site.key   the agent's
    broker/     mosquitto.conf, server.crt, server.key, ca.crt,    Mosquitto's (owned by its
                passwd, acl, mosquitto-data/, mosquitto.pid          user when run as root)
    ca/         ca.key, ca.crt                                     provisioning's own
    devices/ID/ device.json, ca.crt                                one bundle per device

A venue's folder (`init_venue`) has one ``ca/``, ``broker/`` and ``devices/`` for the venue's
one broker, and ``agents/SITE/`` in place of ``agent/``, one per agent, each with the same
``data/site.key``.

Secrets (private keys, passwords, the site key, the agent's config with the sync token) are
created with mode 0600 from the start: a temporary file opened with O_CREAT|O_EXCL and that
mode, then renamed over the old one, so no reader ever sees a half-written or readable file.
Passwords are 32 random bytes; only their hashes stay in the broker's password file.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge_agent import logs
from edge_agent.config import load_settings
from edge_agent.core.broker import mosquitto_conf
from edge_agent.core.provisioning import (
    PBKDF2_SALT_BYTES,
    AgentConfig,
    acl_text,
    agent_config_text,
    agent_username,
    check_device_id,
    check_site_id,
    check_venue_id,
    device_bundle,
    device_of,
    device_username,
    parse_password_file,
    password_file,
    password_line,
    venue_acl_text,
    venue_username,
)
from edge_agent.core.topics import DeviceId, SiteId
from edge_agent.errors import BrokerError, ConfigError
from edge_agent.ops import keyfile

logger = logging.getLogger(__name__)

_PRIVATE = 0o600
_PUBLIC = 0o644
_CA_YEARS = 20
_SERVER_YEARS = 10


@dataclass(frozen=True)
class SiteFolder:
    """The paths of one provisioned site."""

    root: Path

    @property
    def agent(self) -> Path:
        """The agent's folder."""
        return self.root / "agent"

    @property
    def agent_config(self) -> Path:
        """The agent's TOML configuration (``edge-agent --config``)."""
        return self.agent / "agent.toml"

    @property
    def agent_password(self) -> Path:
        """The agent's MQTT password, read again at each reconnection."""
        return self.agent / "mqtt.password"

    @property
    def ca_key(self) -> Path:
        """The site CA's private key: needed only to provision, never by the broker."""
        return self.root / "ca" / "ca.key"

    @property
    def ca_cert(self) -> Path:
        """The site CA's certificate, which every client trusts."""
        return self.root / "ca" / "ca.crt"

    @property
    def broker(self) -> Path:
        """Mosquitto's folder."""
        return self.root / "broker"

    @property
    def broker_config(self) -> Path:
        """Mosquitto's configuration (``mosquitto -c``)."""
        return self.broker / "mosquitto.conf"

    @property
    def passwd(self) -> Path:
        """Mosquitto's password file."""
        return self.broker / "passwd"

    @property
    def acl(self) -> Path:
        """Mosquitto's ACL file."""
        return self.broker / "acl"

    @property
    def pid_file(self) -> Path:
        """Where the running Mosquitto writes its process id."""
        return self.broker / "mosquitto.pid"

    def bundle(self, device: DeviceId) -> Path:
        """A device's bundle folder."""
        return self.root / "devices" / device


@dataclass(frozen=True)
class Change:
    """What a provisioning command did: the bundle written (if any) and whether the running
    broker was told to read its files again."""

    bundle: Path | None
    reloaded: bool


def write_file(path: Path, data: bytes, mode: int = _PRIVATE) -> None:
    """Write ``path`` whole with ``mode`` from its creation, replacing any old file at once.

    Raises:
        ConfigError: the file cannot be written.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"{path} cannot be written: {exc.strerror}") from exc


def _folder(path: Path, mode: int = 0o700) -> None:
    try:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"folder {path} cannot be created: {exc.strerror}") from exc


def _new_password() -> str:
    return secrets.token_urlsafe(32)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _new_ca(
    site: SiteId, now: datetime.datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    # ECDSA P-256 rather than Ed25519: the TLS stacks of small devices (mbedTLS, wolfSSL,
    # BearSSL) verify P-256 signatures; few of them verify Ed25519 ones.
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"edge-agent site {site} CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=365 * _CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _server_names(host: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for value in dict.fromkeys([host, "localhost", "127.0.0.1", "::1"]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(value)))
        except ValueError:
            names.append(x509.DNSName(value))
    return names


def _server_cert(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    host: str,
    now: datetime.datetime,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=365 * _SERVER_YEARS))
        .add_extension(x509.SubjectAlternativeName(_server_names(host)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _owner(user: str, fix: str) -> tuple[int, int] | None:
    # Mosquitto started as root switches to its user before it writes its pid, log and
    # persistence files, and it reads the password and ACL files again as that user on
    # SIGHUP; the agent runs as its own user and reads its password again at every
    # reconnection: each folder must be its reader's. Only root can hand files over.
    if os.geteuid() != 0 or user in ("", "root"):
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError as exc:
        raise ConfigError(f"user {user!r} does not exist: {fix}") from exc
    return entry.pw_uid, entry.pw_gid


def _hand_over(folder: Path, owner: tuple[int, int] | None) -> None:
    if owner is None:
        return
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, *owner, follow_symlinks=False)


def init_site(
    root: Path,
    site_id: str,
    broker_host: str,
    broker_port: int,
    *,
    broker_user: str = "mosquitto",
    agent_user: str = "",
    data_dir: Path | None = None,
    sync_url: str = "",
    sync_token: str = "",
    devices: tuple[str, ...] = (),
    venue: str = "",
) -> SiteFolder:
    """Create a site's folder: site key, CA, broker certificate, credentials, broker and agent
    configuration, and one bundle per device; with ``venue``, the agent's ``[site] venue``
    and its ACL lines for sharing with the venue's other agents (docs/venues.md).

    Raises:
        ConfigError: the folder is already provisioned, a value cannot be used (bad port,
            host, site, venue or device id, broker user), or a file cannot be written.
    """
    site = check_site_id(site_id)
    venue = check_venue_id(venue) if venue else ""
    checked = [check_device_id(d) for d in devices]
    folder = SiteFolder(root.resolve())
    # agent.toml is written last: without it, an interrupted init may simply run again.
    if folder.agent_config.exists():
        raise ConfigError(
            f"{folder.root} is already provisioned: use provision add-device, revoke-device "
            "or rotate, or choose an empty folder"
        )
    _check_broker(broker_host, broker_port)
    owner = _owner(
        broker_user,
        "install mosquitto first, or pass --broker-user with the account the broker runs as",
    )
    agent_owner = _owner(
        agent_user, "create it first (useradd --system edge-agent), or leave out --agent-user"
    )
    data = (data_dir or folder.agent / "data").resolve()
    username = agent_username(site)
    agent_text = agent_config_text(
        AgentConfig(
            site=site,
            data_dir=str(data),
            broker_host=broker_host,
            broker_port=broker_port,
            username=username,
            password_file=str(folder.agent_password),
            ca_file=str(folder.agent / "ca.crt"),
            sync_url=sync_url,
            sync_token=sync_token,
            venue=venue,
        )
    ).encode()
    _check_agent_config(agent_text)
    for path in (folder.root / "ca", folder.agent, folder.broker, folder.root / "devices"):
        _folder(path)
    _folder(folder.broker / "mosquitto-data")
    _folder(data)
    keyfile.load_or_create(data / "site.key")

    _write_ca_and_broker_keys(folder, site, broker_host)
    write_file(folder.agent / "ca.crt", folder.ca_cert.read_bytes(), _PUBLIC)

    agent_password = _new_password()
    write_file(folder.agent_password, agent_password.encode())
    lines = _agent_lines(site, agent_password, venue)
    bundles = {d: _new_password() for d in checked}
    for device, password in bundles.items():
        lines[device_username(device)] = password_line(device_username(device), password, _salt())
    write_file(folder.passwd, password_file(lines).encode())
    write_file(folder.acl, acl_text(site, bundles, venue).encode())
    _write_broker_config(folder, broker_port, broker_user)
    for device, password in bundles.items():
        _write_bundle(folder, site, device, broker_host, broker_port, password)
    _hand_over(folder.broker, owner)
    _hand_over(data, agent_owner)
    write_file(folder.agent_config, agent_text)
    # Last, so that agent.toml is handed over too.
    _hand_over(folder.agent, agent_owner)
    logs.log(
        logger, logging.INFO, "site_provisioned", "site provisioned",
        site=site, folder=str(folder.root), devices=len(bundles),
    )  # fmt: skip
    return folder


def _check_broker(broker_host: str, broker_port: int) -> None:
    if not 1 <= broker_port <= 65535:
        raise ConfigError(f"--broker-port must be 1-65535, got {broker_port}")
    if not broker_host or any(c.isspace() or c in "/\x00" for c in broker_host):
        raise ConfigError(f"--broker-host must be a host name or address, got {broker_host!r}")


def _write_broker_config(folder: SiteFolder, broker_port: int, broker_user: str) -> None:
    write_file(
        folder.broker_config,
        mosquitto_conf(
            user=broker_user,
            listener=[
                f"listener {broker_port}",
                f"cafile {folder.broker / 'ca.crt'}",
                f"certfile {folder.broker / 'server.crt'}",
                f"keyfile {folder.broker / 'server.key'}",
                "tls_version tlsv1.2",
            ],
            access=[
                "allow_anonymous false",
                # The session is the credential's: a device that connects with the agent's
                # client id gets its own user name instead, and cannot take the agent's
                # session (kicking it off, or reading what the broker kept for it).
                "use_username_as_clientid true",
                f"password_file {folder.passwd}",
                f"acl_file {folder.acl}",
            ],
            data=str(folder.broker / "mosquitto-data"),
            log=str(folder.broker / "mosquitto.log"),
            pid_file=str(folder.pid_file),
        ).encode(),
        _PUBLIC,
    )


def _agent_lines(site: SiteId, password: str, venue: str) -> dict[str, str]:
    # At a venue the agent's venue link logs in as a user of its own, with the same password
    # (`edge_agent.core.provisioning.VENUE_USER_SUFFIX`).
    users = [agent_username(site), *([venue_username(site)] if venue else [])]
    return {user: password_line(user, password, _salt()) for user in users}


def _write_ca_and_broker_keys(folder: SiteFolder, site: str, broker_host: str) -> None:
    now = datetime.datetime.now(datetime.UTC)
    ca_key, ca_cert = _new_ca(SiteId(site), now)
    server_key, server_cert = _server_cert(ca_key, ca_cert, broker_host, now)
    write_file(folder.ca_key, _pem_key(ca_key))
    write_file(folder.ca_cert, _pem_cert(ca_cert), _PUBLIC)
    write_file(folder.broker / "ca.crt", _pem_cert(ca_cert), _PUBLIC)
    write_file(folder.broker / "server.crt", _pem_cert(server_cert), _PUBLIC)
    write_file(folder.broker / "server.key", _pem_key(server_key))


def _check_agent_config(text: bytes) -> None:
    # Read the way the agent will read it, before anything is written: a bad collector URL
    # stops init here, not after the keys exist.
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "agent.toml"
        write_file(path, text)
        load_settings(path, environ={})


def _salt() -> bytes:
    return secrets.token_bytes(PBKDF2_SALT_BYTES)


def _write_bundle(
    folder: SiteFolder, site: SiteId, device: DeviceId, host: str, port: int, password: str
) -> Path:
    bundle = folder.bundle(device)
    _folder(bundle)
    write_file(bundle / "ca.crt", folder.ca_cert.read_bytes(), _PUBLIC)
    document = device_bundle(site, device, host, port, password)
    write_file(bundle / "device.json", json.dumps(document, indent=2).encode() + b"\n")
    return bundle


@dataclass(frozen=True)
class VenueFolder:
    """The paths of one provisioned venue: the venue broker's (as a site's, `SiteFolder`)
    and one folder per agent."""

    root: Path

    @property
    def shared(self) -> SiteFolder:
        """The CA, the broker's folder and the devices' bundles, laid out as a site's."""
        return SiteFolder(self.root)

    def agent(self, site: str) -> Path:
        """An agent's folder: agent.toml, mqtt.password, ca.crt, data/site.key."""
        return self.root / "agents" / site


def init_venue(
    root: Path,
    venue_id: str,
    agents: tuple[str, ...],
    devices: tuple[tuple[str, str], ...],
    broker_host: str,
    broker_port: int,
    *,
    broker_user: str = "mosquitto",
    agent_user: str = "",
) -> VenueFolder:
    """Create a venue's folder: one CA and broker for the venue, and one folder per agent
    with its ``agent.toml`` (``[site] id`` and ``venue``, ``[venue] share = true``), its
    password and the venue's one site key, so a person seen by two agents is one pseudonym
    (docs/venues.md). Each agent owns its partition of the venue's devices (``devices``:
    (agent, device) pairs): the ACL lets them publish under its site's topics only.

    Raises:
        ConfigError: the folder is already provisioned, a value cannot be used (bad port,
            host, venue, agent or device id, an agent named twice, a device of no agent
            or of two), or a file cannot be written.
    """
    venue = check_venue_id(venue_id)
    sites = [check_site_id(a) for a in agents]
    if not sites:
        raise ConfigError("--agents must name the venue's agents, e.g. hall-a,hall-b")
    if len(set(sites)) != len(sites):
        raise ConfigError(f"--agents names an agent twice: {','.join(sites)}")
    owned: dict[SiteId, dict[DeviceId, str]] = {s: {} for s in sites}
    owner_of: dict[DeviceId, SiteId] = {}
    for agent, device in devices:
        site, checked = check_site_id(agent), check_device_id(device)
        if site not in owned:
            raise ConfigError(
                f"--device {agent}:{device}: {agent!r} is not one of --agents {','.join(sites)}"
            )
        # A device is one broker user: it can publish under one agent's site only.
        if owner_of.setdefault(checked, site) != site:
            raise ConfigError(
                f"--device {device} is given to {owner_of[checked]} and {site}: a device "
                "belongs to one agent"
            )
        owned[site][checked] = _new_password()
    folder = VenueFolder(root.resolve())
    shared = folder.shared
    if (folder.root / "agents").exists():
        raise ConfigError(f"{folder.root} is already provisioned: choose an empty folder")
    _check_broker(broker_host, broker_port)
    owner = _owner(
        broker_user,
        "install mosquitto first, or pass --broker-user with the account the broker runs as",
    )
    agent_owner = _owner(
        agent_user, "create it first (useradd --system edge-agent), or leave out --agent-user"
    )
    texts = {
        site: agent_config_text(
            AgentConfig(
                site=site,
                data_dir=str(folder.agent(site) / "data"),
                broker_host=broker_host,
                broker_port=broker_port,
                username=agent_username(site),
                password_file=str(folder.agent(site) / "mqtt.password"),
                ca_file=str(folder.agent(site) / "ca.crt"),
                venue=venue,
                share=True,
            )
        ).encode()
        for site in sites
    }
    for text in texts.values():
        _check_agent_config(text)
    for path in (shared.root / "ca", shared.broker, shared.root / "devices"):
        _folder(path)
    _folder(shared.broker / "mosquitto-data")
    _write_ca_and_broker_keys(shared, venue, broker_host)
    # One key for the venue: made once, then the same 32 bytes in every agent's data folder.
    _folder(folder.agent(sites[0]) / "data")
    key = keyfile.load_or_create(folder.agent(sites[0]) / "data" / "site.key")
    lines: dict[str, str] = {}
    for site in sites:
        home = folder.agent(site)
        _folder(home / "data")
        write_file(home / "data" / "site.key", key.secret)
        write_file(home / "ca.crt", shared.ca_cert.read_bytes(), _PUBLIC)
        password = _new_password()
        write_file(home / "mqtt.password", password.encode())
        lines |= _agent_lines(site, password, venue)
        for device, device_password in owned[site].items():
            lines[device_username(device)] = password_line(
                device_username(device), device_password, _salt()
            )
            _write_bundle(shared, site, device, broker_host, broker_port, device_password)
    write_file(shared.passwd, password_file(lines).encode())
    write_file(shared.acl, venue_acl_text(venue, owned).encode())
    _write_broker_config(shared, broker_port, broker_user)
    _hand_over(shared.broker, owner)
    for site in sites:
        write_file(folder.agent(site) / "agent.toml", texts[site])
        _hand_over(folder.agent(site), agent_owner)
    logs.log(
        logger, logging.INFO, "venue_provisioned", "venue provisioned",
        venue=venue, folder=str(folder.root), agents=len(sites), devices=len(owner_of),
    )  # fmt: skip
    return folder


@dataclass(frozen=True)
class _Site:
    folder: SiteFolder
    site: SiteId
    host: str
    port: int
    users: dict[str, str]
    #: The agent's ``[site] venue`` (empty: none): its ACL lets it share with the venue.
    venue: str = ""


def _open(root: Path) -> _Site:
    folder = SiteFolder(root.resolve())
    if not folder.agent_config.exists():
        raise ConfigError(f"{folder.root} is not a provisioned site: run provision init first")
    settings = load_settings(folder.agent_config, environ={})
    try:
        users = parse_password_file(folder.passwd.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"password file {folder.passwd} cannot be read: {exc.strerror}") from exc
    return _Site(
        folder,
        SiteId(settings.site.id),
        settings.mqtt.host,
        settings.mqtt.port,
        users,
        check_venue_id(settings.site.venue) if settings.site.venue else "",
    )


def _devices(site: _Site) -> list[DeviceId]:
    return [d for d in map(device_of, site.users) if d is not None]


def _save_broker_files(site: _Site) -> bool:
    # The broker reads both only on SIGHUP or start. Should it start between the two writes,
    # the password file goes first: a new device has no ACL line yet and can do nothing, a
    # revoked one has already lost its password.
    write_file(site.folder.passwd, password_file(site.users).encode())
    write_file(site.folder.acl, acl_text(site.site, _devices(site), site.venue).encode())
    _match_owner(site.folder.passwd, site.folder.broker)
    _match_owner(site.folder.acl, site.folder.broker)
    return reload_broker(site.folder)


def _match_owner(path: Path, like: Path) -> None:
    # A replaced file is root's when root provisions: give it back to its folder's user.
    if os.geteuid() == 0:
        owner = like.stat()
        os.chown(path, owner.st_uid, owner.st_gid)


def add_device(root: Path, device: str) -> Change:
    """Give a new device a credential, allow it its topic, and write its bundle.

    Raises:
        ConfigError: the id is not a valid device id, the device exists already, or the
            site's files cannot be read or written.
        BrokerError: the running broker cannot be signalled.
    """
    checked = check_device_id(device)
    site = _open(root)
    username = device_username(checked)
    if username in site.users:
        raise ConfigError(
            f"device {checked} is already provisioned: use provision rotate --device {checked}"
        )
    password = _new_password()
    bundle = _write_bundle(site.folder, site.site, checked, site.host, site.port, password)
    site.users[username] = password_line(username, password, _salt())
    reloaded = _save_broker_files(site)
    logs.log(logger, logging.INFO, "device_added", "device provisioned", device=checked)
    return Change(bundle, reloaded)


def revoke_device(root: Path, device: str) -> Change:
    """Remove a device's credential and topic; the broker disconnects it on reload.

    Raises:
        ConfigError: the id is not valid or not provisioned, or the files cannot be written.
        BrokerError: the running broker cannot be signalled.
    """
    checked = check_device_id(device)
    site = _open(root)
    if site.users.pop(device_username(checked), None) is None:
        raise ConfigError(f"device {checked} is not provisioned on this site")
    reloaded = _save_broker_files(site)
    # Its password is worthless now; the copy on disk goes all the same.
    shutil.rmtree(site.folder.bundle(checked), ignore_errors=True)
    logs.log(logger, logging.INFO, "device_revoked", "device revoked", device=checked)
    return Change(None, reloaded)


def rotate_device(root: Path, device: str) -> Change:
    """Give a device a new password (a new bundle); the old one stops working on reload.

    Raises:
        ConfigError: the id is not valid or not provisioned, or the files cannot be written.
        BrokerError: the running broker cannot be signalled.
    """
    checked = check_device_id(device)
    site = _open(root)
    username = device_username(checked)
    if username not in site.users:
        raise ConfigError(f"device {checked} is not provisioned: use provision add-device")
    password = _new_password()
    bundle = _write_bundle(site.folder, site.site, checked, site.host, site.port, password)
    site.users[username] = password_line(username, password, _salt())
    reloaded = _save_broker_files(site)
    logs.log(logger, logging.INFO, "device_rotated", "device password replaced", device=checked)
    return Change(bundle, reloaded)


def rotate_agent(root: Path) -> Change:
    """Give the agent a new password.

    The new password file is written first. On reload the broker drops the agent's
    connection (its password no longer matches); the agent reconnects at once, reading the
    new password from its file, and takes its persistent session back, so nothing is lost.

    Raises:
        ConfigError: the site's files cannot be read or written.
        BrokerError: the running broker cannot be signalled.
    """
    site = _open(root)
    password = _new_password()
    write_file(site.folder.agent_password, password.encode())
    _match_owner(site.folder.agent_password, site.folder.agent)
    site.users.update(_agent_lines(site.site, password, site.venue))
    reloaded = _save_broker_files(site)
    logs.log(logger, logging.INFO, "agent_rotated", "agent password replaced", site=site.site)
    return Change(site.folder.agent_password, reloaded)


def reload_broker(folder: SiteFolder) -> bool:
    """SIGHUP the site's running Mosquitto so it reads its password and ACL files again.

    Returns False when it is not running: it reads them when it starts.

    Raises:
        BrokerError: the process in the pid file cannot be signalled.
    """
    try:
        pid = int(folder.pid_file.read_text().strip())
        command = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return False
    # A stale pid file may name some other process by now: signal only a Mosquitto.
    if not command.startswith("mosquitto"):
        return False
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return False
    except PermissionError as exc:
        raise BrokerError(
            f"cannot signal the broker (pid {pid} in {folder.pid_file}): run as its user or "
            "root, or reload it yourself (systemctl reload mosquitto)"
        ) from exc
    logs.log(logger, logging.INFO, "broker_reloaded", "broker told to reread its files", pid=pid)
    return True
