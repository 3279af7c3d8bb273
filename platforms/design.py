"""Walking an elaborated Amaranth design: what the resource censuses read.

:func:`walk` visits every fragment of an elaboratable's hierarchy (memories and
instances included), every statement with its clock domain and its depth of ``If`` /
``Switch`` nesting, and every distinct value node of every expression once. The
censuses of :mod:`platforms.multipliers` (the ``*`` operators) and
:mod:`platforms.logic` (registers, adders, comparators, multiplexers) are callbacks on
it, so they see the same design the same way.
"""

from amaranth.hdl import Fragment
from amaranth.hdl._ast import (Assign, Concat, Operator, Part, Print, Property, Slice, Switch,
                               SwitchValue)
from amaranth.hdl._ir import Instance
from amaranth.hdl._mem import MemoryInstance

__all__ = ["walk", "children"]


def children(v):
    """The value nodes ``v`` (an Amaranth value) is computed from."""
    if isinstance(v, Operator):
        return list(v.operands)
    if isinstance(v, Slice):
        return [v.value]
    if isinstance(v, Part):
        return [v.value, v.offset]
    if isinstance(v, Concat):
        return list(v.parts)
    if isinstance(v, SwitchValue):            # also Mux and Array indexing, lowered to it
        return [v.test, *(case for _, case in v.cases)]
    return []


def walk(elaboratable, platform=None, *, value=None, assign=None, switch=None,
         fragment=None):
    """Walk ``elaboratable``'s elaborated hierarchy (an elaboratable or a
    :class:`~amaranth.hdl.Fragment`), calling, each with the fragment's hierarchy path
    (``top/core/linear``) as its last argument:

    * ``fragment(fragment, path)`` for every fragment, memories and instances included;
    * ``assign(statement, domain, depth, path)`` for every assignment, ``depth`` being
      how many ``If`` / ``Switch`` levels enclose it (0: unconditional);
    * ``switch(statement, domain, depth, path)`` for every ``If`` / ``Switch``;
    * ``value(node, path)`` once for every distinct value node (by object) reachable from
      a statement, a memory port or an instance's non-I/O port.

    Raises ``TypeError`` for a statement kind it does not know, so that a census never
    skips logic silently.
    """
    seen = set()

    def values(v, path):
        stack = [v]
        while stack:
            v = stack.pop()
            if id(v) in seen:
                continue
            seen.add(id(v))
            if value is not None:
                value(v, path)
            stack.extend(children(v))

    def statement(s, domain, depth, path):
        if isinstance(s, Assign):
            if assign is not None:
                assign(s, domain, depth, path)
            values(s.lhs, path)
            values(s.rhs, path)
        elif isinstance(s, Switch):
            if switch is not None:
                switch(s, domain, depth, path)
            values(s.test, path)
            for _, stmts, _ in s.cases:
                for sub in stmts:
                    statement(sub, domain, depth + 1, path)
        elif isinstance(s, Property):
            values(s.test, path)
        elif not isinstance(s, Print):
            raise TypeError(f"{path}: statement {s!r} is not walked by the census")

    def visit(frag, path):
        name = "/".join(path)
        if fragment is not None:
            fragment(frag, name)
        if isinstance(frag, MemoryInstance):
            for port in (*frag._read_ports, *frag._write_ports):
                for v in (port._addr, port._data, port._en):
                    values(v, name)
        elif isinstance(frag, Instance):
            for v, kind in frag.ports.values():
                if kind != "io":                # I/O ports carry no logic
                    values(v, name)
        for domain, stmts in frag.statements.items():
            for s in stmts:
                statement(s, domain, 0, name)
        for sub, sub_name, _ in frag.subfragments:
            visit(sub, path + [str(sub_name)])

    visit(Fragment.get(elaboratable, platform), ["top"])
