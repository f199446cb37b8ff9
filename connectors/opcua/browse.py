"""Browsing an OPC UA server's address space, and the configuration skeleton made from what was found.

Used by ``ingestor discover opcua`` (``connectors/opcua/discover.py``).  The browse starts at the Objects
folder and follows hierarchical references (Organizes, HasComponent, …; not HasProperty) down a number of
levels, skipping the standard namespace 0 (the Server object and its diagnostics).  Every scalar variable of a
type a reading can hold (numbers, booleans, text, enumerations) becomes a tag: its node id, the parameter (its
browse name), the unit (from its ``EngineeringUnits`` property, when that names a unit the plant knows), and
the equipment, guessed from the object that holds it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds

from connectors.opcua.config import SecurityConfig, default_connector_name

PLACEHOLDER = "FILL-IN"
NUMERIC_TYPES = {ObjectIds.Boolean: "Boolean", ObjectIds.SByte: "SByte", ObjectIds.Byte: "Byte",
                 ObjectIds.Int16: "Int16", ObjectIds.UInt16: "UInt16", ObjectIds.Int32: "Int32",
                 ObjectIds.UInt32: "UInt32", ObjectIds.Int64: "Int64", ObjectIds.UInt64: "UInt64",
                 ObjectIds.Float: "Float", ObjectIds.Double: "Double", ObjectIds.Number: "Number",
                 ObjectIds.Integer: "Integer", ObjectIds.UInteger: "UInteger",
                 ObjectIds.Enumeration: "Enumeration"}
TEXT_TYPES = {ObjectIds.String: "String", ObjectIds.LocalizedText: "LocalizedText"}
UNIT_ALIASES = {"°C": "degC", "℃": "degC", "°F": "degF", "℉": "degF", "1/min": "rpm", "r/min": "rpm",
                "l/min": "l/min", "m³/h": "m3/h", "pieces": "pcs", "pc": "pcs", "piece": "pcs"}
_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/\-]*$")


@dataclass
class FoundVariable:
    """One variable found under Objects."""

    nodeid: ua.NodeId
    path: list[ua.QualifiedName]
    holder: str | None                 # browse name of the object that holds it
    data_type: str = ""
    readable: bool = True
    scalar: bool = True
    unit_text: str | None = None


@dataclass
class Discovery:
    endpoint: str
    depth: int
    namespaces: list[str]
    variables: list[FoundVariable] = field(default_factory=list)
    skipped: list[tuple[FoundVariable, str]] = field(default_factory=list)


async def _browse_many(client: Client, nodes: list[ua.NodeId], reference: int,
                       classes: int) -> list[list[ua.ReferenceDescription]]:
    """Forward references of many nodes in few requests, following continuation points."""
    results: list[list[ua.ReferenceDescription]] = []
    for start in range(0, len(nodes), 200):
        chunk = nodes[start:start + 200]
        params = ua.BrowseParameters(RequestedMaxReferencesPerNode=0, NodesToBrowse=[
            ua.BrowseDescription(NodeId=node, BrowseDirection=ua.BrowseDirection.Forward,
                                 ReferenceTypeId=_standard(reference), IncludeSubtypes=True,
                                 NodeClassMask=classes, ResultMask=ua.BrowseResultMask.All) for node in chunk])
        for result in await client.uaclient.browse(params):
            references = list(result.References or [])
            point = result.ContinuationPoint
            while point:
                more = await client.uaclient.browse_next(
                    ua.BrowseNextParameters(ReleaseContinuationPoints=False, ContinuationPoints=[point]))
                references.extend(more[0].References or [])
                point = more[0].ContinuationPoint
            results.append(references)
    return results


def _standard(identifier: int) -> ua.NodeId:
    return ua.NodeId(ua.Int32(identifier))


def _plain(nodeid: ua.NodeId) -> ua.NodeId:
    return ua.NodeId(nodeid.Identifier, nodeid.NamespaceIndex, nodeid.NodeIdType)


async def _read(client: Client, nodes: list[ua.NodeId], attribute: AttributeIds) -> list[ua.DataValue]:
    values: list[ua.DataValue] = []
    for start in range(0, len(nodes), 1000):
        params = ua.ReadParameters(TimestampsToReturn=ua.TimestampsToReturn.Neither, NodesToRead=[
            ua.ReadValueId(NodeId=node, AttributeId=attribute) for node in nodes[start:start + 1000]])
        values.extend(await client.uaclient.read(params))
    return values


async def browse_server(client: Client, endpoint: str, depth: int) -> Discovery:
    """Walk the address space below Objects and describe every variable."""
    found = Discovery(endpoint, depth, await client.get_namespace_array())
    objects = _standard(ObjectIds.ObjectsFolder)
    level: list[tuple[ua.NodeId, list[ua.QualifiedName], str | None]] = [(objects, [], None)]
    seen = {objects}
    classes = ua.NodeClass.Object | ua.NodeClass.Variable
    for _ in range(depth):
        if not level:
            break
        children = await _browse_many(client, [node for node, _, _ in level], ObjectIds.HierarchicalReferences,
                                      classes)
        following: list[tuple[ua.NodeId, list[ua.QualifiedName], str | None]] = []
        for (_, path, holder), references in zip(level, children, strict=True):
            for ref in references:
                node = _plain(ref.NodeId)
                if ref.ReferenceTypeId == _standard(ObjectIds.HasProperty) or node in seen:
                    continue
                if node.NamespaceIndex == 0 and not path:
                    continue  # the Server object and other standard nodes
                seen.add(node)
                child_path = [*path, ref.BrowseName]
                if ref.NodeClass == ua.NodeClass.Variable:
                    found.variables.append(FoundVariable(node, child_path, holder))
                    following.append((node, child_path, holder))  # a variable may hold variables
                else:
                    following.append((node, child_path, ref.BrowseName.Name))
        level = following
    await _describe(client, found)
    return found


async def _describe(client: Client, found: Discovery) -> None:
    """Data type, value rank, access level and engineering unit of every variable found."""
    nodes = [v.nodeid for v in found.variables]
    types = await _read(client, nodes, AttributeIds.DataType)
    ranks = await _read(client, nodes, AttributeIds.ValueRank)
    access = await _read(client, nodes, AttributeIds.AccessLevel)
    properties = await _browse_many(client, nodes, ObjectIds.HasProperty, ua.NodeClass.Variable)
    unit_nodes: list[tuple[FoundVariable, ua.NodeId]] = []
    kept: list[FoundVariable] = []
    for variable, data_type, rank, level, props in zip(found.variables, types, ranks, access, properties, strict=True):
        type_id = data_type.Value.Value if data_type.Value is not None else None
        variable.scalar = rank.Value is None or rank.Value.Value in (None, -1)
        variable.readable = level.Value is None or bool((level.Value.Value or 0) & ua.AccessLevel.CurrentRead.mask)
        if not isinstance(type_id, ua.NodeId):
            variable.data_type = "unknown"
        elif type_id.NamespaceIndex != 0:
            variable.data_type = "custom"   # often an enumeration: kept, its values arrive as integers
        elif isinstance(type_id.Identifier, int) and int(type_id.Identifier) in NUMERIC_TYPES:
            variable.data_type = NUMERIC_TYPES[int(type_id.Identifier)]
        elif isinstance(type_id.Identifier, int) and int(type_id.Identifier) in TEXT_TYPES:
            variable.data_type = TEXT_TYPES[int(type_id.Identifier)]
        else:
            variable.data_type = type_id.to_string()
        reason = None if variable.scalar else "not a scalar"
        if reason is None and not variable.readable:
            reason = "not readable"
        if reason is None and variable.data_type.startswith(("i=", "unknown", "ns=")):
            reason = f"data type {variable.data_type}"
        if reason is not None:
            found.skipped.append((variable, reason))
            continue
        kept.append(variable)
        for prop in props:
            if prop.BrowseName.Name == "EngineeringUnits":
                unit_nodes.append((variable, _plain(prop.NodeId)))
    found.variables = kept
    for (variable, _), value in zip(unit_nodes, await _read(client, [n for _, n in unit_nodes],
                                                             AttributeIds.Value), strict=True):
        info = value.Value.Value if value.Value is not None else None
        if isinstance(info, ua.EUInformation) and info.DisplayName is not None:
            variable.unit_text = info.DisplayName.Text


# --- YAML ---------------------------------------------------------------------------------------------------

def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _code(name: str | None) -> str:
    if not name:
        return PLACEHOLDER
    code = re.sub(r"[^A-Za-z0-9_.:/\-]+", "_", name.strip()).strip("_")[:50]
    return code if code and _CODE.match(code) else PLACEHOLDER


def _parameter(name: str) -> str:
    return re.sub(r"\s+", "_", name.strip())[:100] or "value"


def _unit(text: str | None, known: frozenset[str]) -> str | None:
    if not text:
        return None
    text = text.strip()
    text = UNIT_ALIASES.get(text, text)
    return text if text in known else None


def _node_text(nodeid: ua.NodeId, namespaces: list[str], uris: bool) -> str:
    text: str = nodeid.to_string()
    if uris and nodeid.NamespaceIndex and nodeid.NamespaceIndex < len(namespaces):
        text = f"nsu={namespaces[nodeid.NamespaceIndex]};" + text.partition(";")[2]
    return text


def render(found: Discovery, known_units: frozenset[str], *, name: str | None = None,
           security: SecurityConfig | None = None, username_env: str | None = None,
           password_env: str | None = None, namespace_uris: bool = False, publishing_interval: str = "1s") -> str:
    """The configuration skeleton as YAML text; a unit on the server becomes a ``unit:`` when it is one of
    ``known_units`` (the codes a configuration has without a ``units:`` list)."""
    connector = name or default_connector_name(found.endpoint)
    equipment: dict[str, str] = {}
    used: set[tuple[str, str]] = set()
    lines_tags: list[str] = []
    for variable in found.variables:
        code = _code(variable.holder)
        if code != PLACEHOLDER:
            equipment.setdefault(code, variable.holder or code)
        parameter = base = _parameter(variable.path[-1].Name)
        counter = 2
        while (code, parameter) in used:
            parameter, counter = f"{base}_{counter}", counter + 1
        used.add((code, parameter))
        unit = _unit(variable.unit_text, known_units)
        browse_path = "/".join(q.Name for q in variable.path)
        comment = f"{browse_path}  ({variable.data_type}"
        if variable.unit_text and unit is None:
            comment += f", unit on the server: {variable.unit_text}"
        if variable.data_type in TEXT_TYPES.values():
            comment += "; a text: map each value to a number with values: {TEXT: 1, …}"
        comment += ")"
        fields = [f"node: {_quote(_node_text(variable.nodeid, found.namespaces, namespace_uris))}",
                  f"equipment: {code}", f"parameter: {_quote(parameter)}"]
        if unit is not None:
            fields.append(f"unit: {_quote(unit)}")
        lines_tags.append(f"          # {comment}")
        lines_tags.append("          - {" + ", ".join(fields) + "}")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        f"# Tag map discovered on {found.endpoint} at {stamp}: {len(found.variables)} variables within "
        f"{found.depth} levels below Objects.",
        "# Check the equipment codes (guessed from the objects holding each variable; FILL-IN where there was",
        "# none), the parameter names and the units, complete the plant section, then validate the file with",
        "#   ingestor check-config FILE",
        "# The connectors: section can be pasted into an existing configuration.",
        "plant:",
        "  sites:",
        "    - code: SITE-1",
        "      name: Site (fill in)",
        "      timezone: UTC",
        "      areas:",
        "        - code: AREA-1",
        "          name: Area (fill in)",
        "          work_centers:",
        "            - code: LINE-1",
        "              name: Line (fill in)",
        "              equipment:" + ("" if equipment else " []"),
    ]
    out += [f"                - {{code: {code}, name: {_quote(text)}}}" for code, text in equipment.items()]
    out += [
        "",
        "connectors:",
        "  - type: opcua",
        f"    name: {connector}",
        f"    endpoint: {found.endpoint}",
    ]
    if security is not None and security.enabled:
        out += ["    security:", f"      policy: {security.policy}", f"      mode: {security.effective_mode}"]
        for key in ("pki_dir", "certificate", "private_key", "server_certificate", "trust_dir"):
            value = getattr(security, key)
            if value is not None and key in security.model_fields_set:
                out.append(f"      {key}: {_quote(str(value))}")
    if username_env:
        out.append(f"    username_env: {username_env}")
    if password_env:
        out.append(f"    password_env: {password_env}")
    out += ["    groups:", "      - name: all", f"        publishing_interval: {publishing_interval}"]
    if lines_tags:
        out += ["        tags:", *lines_tags]
    else:
        out.append("        tags: []   # no variables found: try a larger --depth")
    if found.skipped:
        out.append("")
        out.append(f"# {len(found.skipped)} variables were left out:")
        out += [f"#   {_node_text(v.nodeid, found.namespaces, namespace_uris)}  "
                f"{'/'.join(q.Name for q in v.path)}: {reason}" for v, reason in found.skipped[:200]]
    return "\n".join(out) + "\n"
