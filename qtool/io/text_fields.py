"""Refuse models whose names or other text fields are not valid UTF-8.

ONNX is proto2, which does not validate strings when parsing; Python's protobuf then hands back
`bytes` instead of `str` for a malformed one, and every name lookup downstream misbehaves in its
own way. One walk over the text fields at load time turns that into one clear error. Byte fields
(tensor data, `s` attributes) are never read by the walk, so it costs no copy of the weights.
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor

from qtool.errors import QtoolError


def _repeated(field) -> bool:
    flag = getattr(field, "is_repeated", None)
    return field.label == FieldDescriptor.LABEL_REPEATED if flag is None else flag


def _plan(descriptor, cache: dict) -> tuple[list, list]:
    """(string fields, message fields) of a message type, computed once per type."""
    if descriptor not in cache:
        strings = [(f.name, _repeated(f)) for f in descriptor.fields
                   if f.type == FieldDescriptor.TYPE_STRING]
        messages = [(f.name, _repeated(f)) for f in descriptor.fields
                    if f.type == FieldDescriptor.TYPE_MESSAGE]
        cache[descriptor] = (strings, messages)
    return cache[descriptor]


def check_text_fields(message, where: str) -> None:
    """Raise a QtoolError at the first string field holding invalid UTF-8 (anywhere inside)."""
    cache: dict = {}
    stack = [(message, message.DESCRIPTOR.name)]
    while stack:
        current, path = stack.pop()
        strings, messages = _plan(current.DESCRIPTOR, cache)
        for name, repeated in strings:
            values = getattr(current, name) if repeated else (
                [getattr(current, name)] if current.HasField(name) else [])
            for value in values:
                if not isinstance(value, str):
                    raise QtoolError(f"{where}: {path}.{name} is not valid UTF-8 text "
                                     f"({bytes(value)[:40]!r}); the file is corrupt")
        for name, repeated in messages:
            if repeated:
                stack.extend((child, f"{path}.{name}") for child in getattr(current, name))
            elif current.HasField(name):
                stack.append((getattr(current, name), f"{path}.{name}"))
