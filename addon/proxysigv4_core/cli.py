"""The `proxysigv4` command: run the proxy, check a config against AWS, or run a local demo.

mitmproxy runs in-process with the addon added directly (not through `-s`), so a broken config
stops the start with one clear line instead of mitmproxy's silent fail-open script loading.
"""

import argparse
import asyncio
import logging
import signal
import sys
from importlib import metadata

from botocore.credentials import ReadOnlyCredentials
from mitmproxy import exceptions, options

from .addon import VERBOSE_OPTION, ProxySigV4
from .config import ConfigError, Route, load_config
from .drain import DEFAULT_TIMEOUT
from .logformat import json_handler

EXAMPLES = """examples:
  proxysigv4 run                         # ./proxysigv4.yaml, listening on 127.0.0.1:8080
  proxysigv4 run -c app-config.yaml --web   # a Backstage config, with mitmweb's UI
  proxysigv4 run --set proxyauth=alice:secret --listen-host 0.0.0.0 -p 9000
  proxysigv4 check -c proxysigv4.yaml    # resolve credentials and ask STS who each route is
  proxysigv4 check --offline             # validate the file only
  proxysigv4 demo                        # local AWS emulator + proxy: watch signing work
  proxysigv4 demo --web                  # the same under mitmweb: signed calls and refusals explained
  proxysigv4 presign GET /s3/bucket/report.pdf --expires 600   # a signed link, valid 10 minutes
"""


class CliError(Exception):
    """An error for the user: printed as one line (with a traceback under --debug)."""


def version() -> str:
    try:
        return metadata.version("proxysigv4")
    except metadata.PackageNotFoundError:
        return "unknown"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="proxysigv4",
        description="AWS SigV4 signing reverse proxy (a mitmproxy addon).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"proxysigv4 {version()}")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = p.add_subparsers(dest="command", required=True)
    _add_run(sub)
    check = sub.add_parser("check", help="validate a config and resolve each route's credentials")
    check.add_argument("-c", "--config", default="proxysigv4.yaml")
    check.add_argument("--offline", action="store_true", help="validate the file without calling AWS")
    demo = sub.add_parser("demo", help="run a local AWS emulator and the proxy, and show signing at work")
    demo.add_argument("-p", "--port", type=int, default=0, help="proxy port (default: a free one)")
    demo.add_argument(
        "--once", action="store_true", help="run the demo requests and exit (0 if all went as expected)"
    )
    demo.add_argument(
        "--web",
        action="store_true",
        help="run the proxy under mitmweb and show AWS's refusals explained there",
    )
    demo.add_argument(
        "--web-port", type=int, default=0, help="mitmweb's port with --web (default: a free one)"
    )
    presign = sub.add_parser(
        "presign",
        help="print a presigned URL for a route's target",
        description="Print a presigned URL (query-string SigV4) for the route that PATH matches, "
        "as the proxy would route it: hand it to a browser or a colleague.",
    )
    presign.add_argument("-c", "--config", default="proxysigv4.yaml")
    presign.add_argument("method", help="HTTP method the URL is for (GET, PUT, ...)")
    presign.add_argument("path", help="a client path the proxy would receive, e.g. /s3/bucket/key?x=1")
    presign.add_argument(
        "--expires", type=int, default=3600, help="validity in seconds (default 3600, at most 604800)"
    )
    return p


def _add_run(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """The `run` subcommand and its options."""
    run = sub.add_parser(
        "run",
        help="run the signing proxy",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "-c", "--config", default="proxysigv4.yaml", help="route file (default ./proxysigv4.yaml)"
    )
    run.add_argument("--listen-host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    run.add_argument("-p", "--port", type=int, default=8080, help="port to listen on (default 8080)")
    run.add_argument("--web", action="store_true", help="run mitmweb (web UI) instead of mitmdump")
    run.add_argument("--web-port", type=int, default=8081, help="mitmweb's port (default 8081)")
    run.add_argument("-v", "--verbose", action="store_true", help="log the signed headers of each request")
    run.add_argument(
        "--health-port",
        type=int,
        default=0,
        help="serve GET /livez, /readyz and /metrics on this port (default: off)",
    )
    run.add_argument(
        "--health-host", default="127.0.0.1", help="address of the health port (default 127.0.0.1)"
    )
    run.add_argument(
        "--drain-timeout",
        type=int,
        default=DEFAULT_TIMEOUT,
        help=f"on SIGTERM, seconds to let requests in flight finish (default {DEFAULT_TIMEOUT}; 0: at once)",
    )
    run.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="json: every log line as one JSON object (for log aggregators)",
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="OPTION=VALUE",
        help="any mitmproxy option, e.g. --set stream_large_bodies=1m (repeatable)",
    )


# ---- run --------------------------------------------------------------------------------------
async def _serve(args: argparse.Namespace) -> int:
    from mitmproxy.tools.dump import DumpMaster
    from mitmproxy.tools.web.master import WebMaster

    # As mitmproxy's own entry points do: mitmproxy's log handler filters by termlog_verbosity.
    logging.getLogger().setLevel(logging.DEBUG)
    for name in ("tornado", "asyncio", "hpack", "quic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    opts = options.Options()
    termlog = args.log_format == "text"
    if not termlog:  # mitmproxy's own lines too, as JSON (the addon's have a handler of their own)
        handler = json_handler()
        handler.setLevel(logging.INFO)
        logging.getLogger().addHandler(handler)
    master = (
        WebMaster(opts, with_termlog=termlog)
        if args.web
        else DumpMaster(opts, with_termlog=termlog, with_dumper=False)
    )
    listen = {
        "mode": ["reverse:http://127.0.0.1:9"],  # required by mitmproxy, unused: routes name targets
        "listen_host": args.listen_host,
        "listen_port": args.port,
        "connection_strategy": "lazy",
    }
    if args.web:
        listen.update(web_port=args.web_port, web_host="127.0.0.1", web_open_browser=False)
    try:
        # Listen settings and --set first: the addon checks them when it loads the route file.
        opts.update(**listen)
        if args.set:
            opts.set(*args.set, defer=True)
        addon = ProxySigV4(config_path=args.config)
        master.addons.add(addon)  # runs only `load`
        opts.update(
            **{
                VERBOSE_OPTION: args.verbose,
                "proxysigv4_health_port": args.health_port,
                "proxysigv4_health_host": args.health_host,
                "proxysigv4_drain_timeout": args.drain_timeout,
                "proxysigv4_log_format": args.log_format,
            }
        )
        opts.process_deferred()
        if opts.deferred:
            raise CliError(f"unknown mitmproxy option: {', '.join(sorted(opts.deferred))}")
        # mitmproxy would configure the addon inside master.run(), where an error is only logged:
        # configure it here so a bad route file or listen setting stops the start.
        addon.configure(set(opts.keys()))
    except exceptions.OptionsError as e:
        raise CliError(str(e).removeprefix("proxysigv4: ")) from e
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # until the addon runs and takes them for its drain
        loop.add_signal_handler(sig, master.shutdown)
    try:
        await master.run()
    finally:
        addon.service.close()
    return 0  # an error logged during start-up: mitmproxy's ErrorCheck addon has exited 1 itself


def cmd_run(args: argparse.Namespace) -> int:
    return asyncio.run(_serve(args))


# ---- check ------------------------------------------------------------------------------------
def cmd_check(args: argparse.Namespace) -> int:
    from .check import check_routes

    try:
        config = load_config(args.config)
    except ConfigError as e:
        raise CliError(str(e)) from e
    if args.offline:
        for route in config.routes:
            target = f"{route.target.url} ({route.service}/{route.region})"
            print(f"{route.prefix} -> {target}: {route.credential_source}")
        print(f"{config.source}: {len(config.routes)} routes valid (offline: credentials not checked)")
        return 0
    rows, failures = check_routes(config)
    for row in rows:
        print(row)
    if failures:
        print(f"{config.source}: {failures} of {len(config.routes)} routes have a problem", file=sys.stderr)
        return 1
    print(f"{config.source}: all {len(config.routes)} routes have working credentials")
    return 0


# ---- presign ----------------------------------------------------------------------------------
def cmd_presign(args: argparse.Namespace) -> int:
    from .credentials import CredentialSpec, load_credentials
    from .presign import PresignError, presign
    from .routing import HostTable, RequestRejected, RouteTable

    try:
        config = load_config(args.config)
    except ConfigError as e:
        raise CliError(str(e)) from e

    def credentials_for(route: Route) -> ReadOnlyCredentials:
        return load_credentials(CredentialSpec.of(route)).get_frozen_credentials()

    try:
        paths = tuple(r for r in config.routes if r.prefix.startswith("/"))
        hosts = HostTable(tuple(r for r in config.routes if not r.prefix.startswith("/")))
        upstream, url = presign(
            RouteTable(paths), args.method, args.path, credentials_for, args.expires, hosts
        )
    except (RequestRejected, PresignError) as e:
        raise CliError(str(e)) from e
    print(url)
    print(
        f"route {upstream.route.prefix} ({upstream.route.service}/{upstream.route.region}), "
        f"{args.method.upper()}, valid {args.expires} s",
        file=sys.stderr,
    )
    return 0


# ---- demo -------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(port=args.port, once=args.once, web=args.web, web_port=args.web_port)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        handler = {"run": cmd_run, "check": cmd_check, "demo": cmd_demo, "presign": cmd_presign}[args.command]
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # one line for the user; the traceback with --debug
        if args.debug:
            raise
        print(f"proxysigv4: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
