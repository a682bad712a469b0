"""``payflow-operator``: run the operator (the default), or clean a release up before uninstall.

payflow-operator [run] [--namespace NS]... [--all-namespaces] [--port P] [--host H] [--verbose]
payflow-operator cleanup --namespace NS --target RELEASE [--timeout SECONDS]
payflow-operator crd            # print the CRD
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

COMMANDS = ("run", "cleanup", "crd")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="payflow-operator", description="The PayFlowIncident operator.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator (the default command)")
    run.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=None,
        help="a namespace to watch (repeat, or comma-separate); default: PAYFLOW_WATCH_NAMESPACES, "
        "else every namespace",
    )
    run.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    run.add_argument("--host", default=None, help="address of /healthz and /metrics (PAYFLOW_OPERATOR_HOST)")
    run.add_argument(
        "--port", type=int, default=None, help="port of /healthz, /metrics (PAYFLOW_OPERATOR_PORT)"
    )
    run.add_argument("-v", "--verbose", action="store_true", help="log debug lines")

    clean = sub.add_parser("cleanup", help="delete a release's incidents and make sure nothing stays stuck")
    clean.add_argument("-n", "--namespace", required=True)
    clean.add_argument("--target", required=True, help="the release name")
    clean.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the operator")
    clean.add_argument("--kubeconfig", default=None)

    sub.add_parser("crd", help="print the PayFlowIncident CRD as YAML")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0] not in (*COMMANDS, "-h", "--help"):
        args_list.insert(0, "run")
    args = _parser().parse_args(args_list)

    if args.command == "crd":
        from payflow.operator.crd import render

        sys.stdout.write(render())
        return 0
    if args.command == "cleanup":
        from payflow.operator.cleanup import cleanup
        from payflow.operator.kube import new_api_client

        api = new_api_client(args.kubeconfig)
        try:
            report = cleanup(api, args.namespace, args.target, timeout=args.timeout)
        finally:
            api.close()
        print(report.summary())
        return 0
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    import kopf

    from payflow.operator import handlers  # registers the handlers
    from payflow.operator.settings import OperatorSettings

    overrides: dict[str, object] = {}
    if args.all_namespaces:
        overrides["watch_namespaces"] = ""
    elif args.namespace:
        overrides["watch_namespaces"] = ",".join(args.namespace)
    if args.host is not None:
        overrides["operator_host"] = args.host
    if args.port is not None:
        overrides["operator_port"] = args.port
    settings = OperatorSettings(**overrides)  # type: ignore[arg-type]
    kopf.configure(
        verbose=args.verbose or settings.log_level.upper() == "DEBUG", log_format=kopf.LogFormat.JSON
    )
    namespaces = settings.namespaces
    del handlers
    asyncio.run(
        kopf.operator(
            clusterwide=not namespaces,
            namespaces=list(namespaces),
            standalone=True,
            memo=kopf.Memo(settings=settings),
        )
    )
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
