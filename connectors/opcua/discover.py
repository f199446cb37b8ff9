"""``ingestor discover opcua ENDPOINT [--depth N]``: browse a server and print a configuration skeleton.

The output is a whole configuration file: a plant section listing the equipment guessed from the objects
that hold the variables, and one ``opcua`` connector with a tag per variable found (node id, parameter from
the browse name, unit from the EngineeringUnits property).  ``ingestor check-config`` accepts it as it is
when every equipment could be guessed; tags whose equipment could not be guessed say ``FILL-IN``, and
check-config points at each of them until a real equipment code is filled in.  The ``connectors:`` section
can be pasted into an existing configuration.

This module only parses arguments; asyncua is imported when the command runs, so that the rest of the
``ingestor`` command starts fast.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from pydantic import ValidationError

from connectors.opcua.config import OpcUaConfig, SecurityConfig, default_connector_name
from ingestor.contract import ConnectionLost, DiscoverCommand

if TYPE_CHECKING:
    from connectors.opcua.browse import Discovery


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``ingestor discover opcua``."""
    parser.add_argument("endpoint", metavar="ENDPOINT", help="opc.tcp://HOST:PORT")
    parser.add_argument("--depth", type=int, default=5, help="levels below Objects to browse (default 5)")
    parser.add_argument("--name", help="connector name in the skeleton (default: from the endpoint)")
    parser.add_argument("--namespace-uris", action="store_true",
                        help="write node ids with namespace URIs (nsu=…) instead of indexes")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each request")
    security = parser.add_argument_group("security (as in the connector's security: section)")
    security.add_argument("--policy", default="None", help="Basic256Sha256, Aes128Sha256RsaOaep, …")
    security.add_argument("--mode", help="Sign or SignAndEncrypt (default SignAndEncrypt with a policy)")
    security.add_argument("--pki-dir", help="directory of our certificate, trusted/ and rejected/")
    security.add_argument("--certificate", help="client certificate file")
    security.add_argument("--private-key", help="client private key file")
    security.add_argument("--server-certificate", help="pin: the server's certificate file")
    security.add_argument("--trust-dir", help="directory of trusted server certificates")
    security.add_argument("--username-env", help="environment variable holding the user name")
    security.add_argument("--password-env", help="environment variable holding the password")


def main(args: argparse.Namespace, known_units: frozenset[str]) -> int:
    """Run the discovery; 0 on success, 1 when the server cannot be browsed, 2 on bad arguments."""
    if args.depth < 1:
        print("ingestor discover opcua: --depth must be at least 1", file=sys.stderr)
        return 2
    raw = {key: getattr(args, key) for key in ("policy", "mode", "pki_dir", "certificate", "private_key",
                                               "server_certificate", "trust_dir") if getattr(args, key)}
    try:
        security = SecurityConfig.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            where = ".".join(str(p) for p in error["loc"])
            print(f"ingestor discover opcua: {where + ': ' if where else ''}{error['msg']}", file=sys.stderr)
        return 2
    from asyncua import ua
    from asyncua.ua.uaerrors import UaError, UaStatusCodeError

    from connectors.opcua.browse import render

    name = args.name or default_connector_name(args.endpoint)
    try:
        found = asyncio.run(_discover(args, name, security))
    except (ConnectionLost, OSError, TimeoutError, UaError) as exc:
        text = ua.StatusCode(ua.UInt32(exc.code)).name if isinstance(exc, UaStatusCodeError) else (
            str(exc) or type(exc).__name__)
        print(f"ingestor discover opcua: {text}", file=sys.stderr)
        return 1
    sys.stdout.write(render(found, known_units, name=name, security=security, username_env=args.username_env,
                            password_env=args.password_env, namespace_uris=args.namespace_uris))
    return 0


async def _discover(args: argparse.Namespace, name: str, security: SecurityConfig) -> Discovery:
    from connectors.opcua.browse import browse_server
    from connectors.opcua.connector import OpcUaConnector

    # the same connector name as in the skeleton, so a generated client certificate is the one the
    # connector will use later (trusted once on the server)
    config = OpcUaConfig.model_validate({
        "type": "opcua", "name": name, "endpoint": args.endpoint, "timeout": args.timeout,
        "security": security.model_dump(exclude_unset=True), "username_env": args.username_env,
        "password_env": args.password_env,
        "groups": [{"name": "none", "tags": [{"node": "i=2258", "equipment": "-", "parameter": "-"}]}]})
    connector = OpcUaConnector(config)
    client = await connector.open_session()
    try:
        return await browse_server(client, args.endpoint, args.depth)
    finally:
        await connector.close()


DISCOVER = DiscoverCommand(
    help="browse an OPC UA server and print a tag-map skeleton",
    description="Browse an OPC UA server from its Objects folder and print a configuration skeleton (plant and "
                "tag map) for the variables found.",
    add_arguments=add_arguments, run=main)
