"""Command line: ``modelswap [--config FILE] [--listen HOST:PORT]``, ``check-config``, ``schema``.

llama-swap's single-dash spellings (``-config``, ``-listen``, ``-watch-config``…)
are accepted as well, so existing service files and container commands work
unchanged. This module only parses arguments and reports; ``modelswap.app``
does the wiring and ``modelswap.config`` the loading.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import yaml

from modelswap import __version__
from modelswap.config import LoadedConfig, config_json_schema, load_config, load_config_text
from modelswap.demo import DEMO_FILENAME, demo_config_text
from modelswap.errors import ConfigError
from modelswap.observability.proxy_log import StartupLogHandler, parse_log_level

if TYPE_CHECKING:
    from modelswap.server.reload import ConfigSource

log = logging.getLogger("modelswap")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_TLS_PORT = 8443


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """Where to listen. ``host`` None means every interface (llama-swap's ``:PORT``)."""

    host: str | None
    port: int

    @property
    def is_loopback(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1") or (
            self.host is not None and self.host.startswith("127.")
        )

    def url(self, scheme: str = "http") -> str:
        host = self.host or "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.port}"


def parse_listen(value: str) -> ListenAddress:
    """Parse ``HOST:PORT``, ``:PORT`` or ``[v6]:PORT`` as llama-swap's ``-listen`` does."""
    host, sep, port_text = value.rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"invalid listen address {value!r}: expected HOST:PORT")
    try:
        port = int(port_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port in listen address {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range in listen address {value!r}")
    host = host.strip("[]")
    return ListenAddress(host or None, port)


def _add_flag(parser: argparse.ArgumentParser, name: str, **kwargs: object) -> None:
    """Register ``--name`` and llama-swap's ``-name`` for the same option."""
    parser.add_argument(f"--{name}", f"-{name}", **kwargs)  # type: ignore[arg-type]


def build_serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelswap",
        description="Serve many local AI models by starting and stopping their servers on demand.",
        epilog="Subcommands: 'modelswap check-config FILE', 'modelswap schema'.",
        allow_abbrev=False,
    )
    _add_flag(
        parser, "config", metavar="FILE", help="config file (default ./config.yaml, else demo)"
    )
    _add_flag(parser, "config-dir", dest="config_dir", metavar="DIR", help="extra config files")
    _add_flag(
        parser,
        "listen",
        type=parse_listen,
        metavar="HOST:PORT",
        help=f"listen address (default {DEFAULT_HOST}:{DEFAULT_PORT}; ':PORT' = all interfaces)",
    )
    _add_flag(parser, "tls-cert-file", dest="tls_cert_file", metavar="FILE")
    _add_flag(parser, "tls-key-file", dest="tls_key_file", metavar="FILE")
    _add_flag(
        parser,
        "watch-config",
        dest="watch_config",
        action="store_true",
        help="reload (keeping unchanged models running) when a config file changes",
    )
    _add_flag(parser, "version", action="store_true", help="print the version and exit")
    return parser


def _load(args: argparse.Namespace) -> LoadedConfig:
    """Pick the config source: flags, then ./config.yaml, then the built-in demo."""
    if args.config or args.config_dir:
        return load_config(args.config, args.config_dir)
    if os.path.isfile("config.yaml"):
        return load_config("config.yaml")
    return load_config_text(demo_config_text(), DEMO_FILENAME, environ={})


def _config_source(args: argparse.Namespace) -> ConfigSource | None:
    """Where ``_load`` read the config from, for reloads (None: the built-in demo)."""
    from modelswap.server.reload import ConfigSource  # deferred: keeps check-config light

    restart_files = {
        name: path
        for name, path in (
            ("tls-cert-file", args.tls_cert_file),
            ("tls-key-file", args.tls_key_file),
        )
        if path
    }
    if args.config or args.config_dir:
        return ConfigSource(args.config, args.config_dir, restart_files=restart_files)
    if os.path.isfile("config.yaml"):
        return ConfigSource("config.yaml", restart_files=restart_files)
    return None


def _print_problems(error: ConfigError) -> None:
    for problem in error.problems:
        print(f"error: {problem}", file=sys.stderr)


def _print_warnings(loaded: LoadedConfig) -> None:
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)


def check_config(argv: Sequence[str]) -> int:
    """``modelswap check-config FILE``: print the expanded config, or every error."""
    parser = argparse.ArgumentParser(prog="modelswap check-config", allow_abbrev=False)
    parser.add_argument("file", nargs="?", help="config file (omit with --config-dir)")
    _add_flag(parser, "config-dir", dest="config_dir", metavar="DIR")
    args = parser.parse_args(argv)
    if not args.file and not args.config_dir:
        parser.error("a config FILE or --config-dir is required")
    try:
        loaded = load_config(args.file, args.config_dir)
    except ConfigError as error:
        _print_problems(error)
        return 1
    _print_warnings(loaded)
    sys.stdout.write(yaml.safe_dump(loaded.expanded, sort_keys=False, allow_unicode=True))
    return 0


def serve(argv: Sequence[str]) -> int:
    parser = build_serve_parser()
    args = parser.parse_args(argv)
    if args.version:
        print(f"version: {__version__}")
        return 0
    if bool(args.tls_cert_file) != bool(args.tls_key_file):
        print(
            "error: both -tls-cert-file and -tls-key-file must be provided for TLS",
            file=sys.stderr,
        )
        return 1
    tls = bool(args.tls_cert_file)
    listen: ListenAddress = args.listen or ListenAddress(
        DEFAULT_HOST, DEFAULT_TLS_PORT if tls else DEFAULT_PORT
    )
    try:
        loaded = _load(args)
    except ConfigError as error:
        _print_problems(error)
        return 1
    _print_warnings(loaded)
    if not (args.config or args.config_dir) and not os.path.isfile("config.yaml"):
        print("no --config given and no ./config.yaml: using the built-in demo config")

    from modelswap.app import ServeOptions, run_server  # deferred: keeps check-config light

    _log_to_stderr_until_serving(loaded.config.log_level, loaded.config.log_time_format)
    source = _config_source(args)
    if args.watch_config and source is None:
        log.warning("--watch-config: the built-in demo config has no file to watch")
    options = ServeOptions(
        host=listen.host,
        port=listen.port,
        tls_cert_file=args.tls_cert_file,
        tls_key_file=args.tls_key_file,
    )
    if not listen.is_loopback:
        log.info("listening on a non-loopback address: the server is reachable by all hosts")
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(
            run_server(
                loaded,
                options,
                public_url=listen.url("https" if tls else "http"),
                source=source,
                watch=bool(args.watch_config),
            )
        )


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (a declared dependency on POSIX): it halves the proxy's overhead."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - e.g. Windows, where uvloop does not exist
        return None
    return uvloop.new_event_loop


def _log_to_stderr_until_serving(level: str, time_format: str) -> None:
    """Log lines in llama-swap's format to stderr while no app serves.

    Once the app starts, its own handler takes the lines into its monitors
    (stdout per ``logToStdout``) and this one stays silent, so nothing is
    printed twice; after the app's cleanup this one speaks again.
    """
    logger = logging.getLogger("modelswap")
    logger.addHandler(StartupLogHandler(level=level, time_format=time_format))
    logger.setLevel(parse_log_level(level))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "check-config":
        return check_config(args[1:])
    if args and args[0] == "schema":
        print(json.dumps(config_json_schema(), indent=2))
        return 0
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
