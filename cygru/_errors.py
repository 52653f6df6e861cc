"""The argument errors of cygru's checks: :class:`BadValue` and :class:`BadType`.

A check raises them without knowing its caller; the public entry point that called it
(decorated with :func:`cygru._arrays.boundary`) re-raises them as plain ValueError /
TypeError prefixed with its own name. They live here, below every module that checks
arguments (``_device``, ``_arrays``, the backends, ...), and import nothing of cygru.
"""

__all__ = ["ArgumentError", "BadValue", "BadType"]


class ArgumentError(Exception):
    """An invalid argument, found by a check that does not know its caller."""

    plain = Exception

    def named(self, who):
        """The plain ValueError/TypeError to raise from the public entry point `who`."""
        return self.plain(f"{who}: {self}")


class BadValue(ArgumentError, ValueError):
    """A ValueError raised by a check; :func:`boundary` prefixes the caller's name."""

    plain = ValueError


class BadType(ArgumentError, TypeError):
    """A TypeError raised by a check; :func:`boundary` prefixes the caller's name."""

    plain = TypeError
