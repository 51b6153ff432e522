"""Environment substitution in stack files, as faas-cli does it before YAML parsing.

faas-cli runs the whole stack file text through ``github.com/drone/envsubst`` v1.0.3
(``go-sdk/stack/stack.go``, ``substituteEnvironment``). This module reproduces the parts
of that library a stack file uses:

* ``${VAR}``: the value, or ``""`` when unset;
* ``${VAR:-word}``, ``${VAR:=word}``, ``${VAR=word}`` (and drone's look-alikes
  ``${VAR:?word}``, ``${VAR:+word}``, plus ``${VAR-word}``): ``word`` when ``VAR`` is
  unset **or empty**; drone maps every one of these to the same "default" function.
  ``word`` runs to the first ``}`` and may hold ``:``, ``/`` and nested ``${...}``;
* ``$$`` is a literal ``$``; outside ``${...}`` drone also turns ``\\\\`` into ``\\`` and
  ``\\/`` into ``/`` (``parse/scan.go``, ``scanEscaped``).

A bare ``$VAR`` is **not** substituted: drone only expands the braced form (its own test
``"$var01"`` stays ``"$var01"``), and nor do we. The bash string functions drone also
implements (``${#v}``, ``${v^^}``, ``${v:1:2}``, ``${v/a/b}``, ``${v%x}``...) are refused
with :class:`SubstitutionError` rather than half-implemented.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["SubstitutionError", "substitute"]

# After ``${NAME`` these introduce a default (drone acceptDefaultFunc, after ':' or '=').
_DEFAULT_OPERATORS = (":-", ":=", ":?", ":+", "=", "-")
# Characters that start drone's other bash functions (case, length, substring, trim, replace).
_BASH_FUNCTIONS = "^,#%/:"
_MAX_NESTING = 16


class SubstitutionError(ValueError):
    """A ``${...}`` expression is malformed; ``line``/``column`` are 1-based."""

    def __init__(self, problem: str, text: str, position: int) -> None:
        self.problem = problem
        self.position = position
        self.line = text.count("\n", 0, position) + 1
        self.column = position - (text.rfind("\n", 0, position) + 1) + 1
        super().__init__(f"line {self.line}, column {self.column}: {problem}")


def _is_name_char(ch: str) -> bool:
    # drone: unicode.IsLetter || unicode.IsDigit || '_'
    return ch.isalpha() or ch.isdigit() or ch == "_"


class _Parser:
    def __init__(self, text: str, env: Mapping[str, str]) -> None:
        self.text = text
        self.env = env
        self.pos = 0
        self.depth = 0

    def error(self, problem: str, position: int) -> SubstitutionError:
        return SubstitutionError(problem, self.text, position)

    def top(self) -> str:
        text = self.text
        out: list[str] = []
        while self.pos < len(text):
            ch = text[self.pos]
            pair = text[self.pos : self.pos + 2]
            if pair == "${":
                out.append(self.expression())
            elif pair in ("$$", "\\\\", "\\/"):
                out.append(pair[1])
                self.pos += 2
            else:
                out.append(ch)
                self.pos += 1
        return "".join(out)

    def expression(self) -> str:
        """Evaluate the ``${...}`` at ``self.pos``; leaves ``pos`` after its ``}``."""
        text, start = self.text, self.pos
        self.depth += 1
        if self.depth > _MAX_NESTING:  # untrusted input: bound the recursion
            raise self.error(f"more than {_MAX_NESTING} nested '${{'", start)
        self.pos += 2
        name_start = self.pos
        while self.pos < len(text) and _is_name_char(text[self.pos]):
            self.pos += 1
        name = text[name_start : self.pos]
        if self.pos >= len(text):
            raise self.error("unterminated '${': no closing '}'", start)
        ch = text[self.pos]
        operator = next((op for op in _DEFAULT_OPERATORS if text.startswith(op, self.pos)), None)
        if name and ch == "}":
            self.pos += 1
            self.depth -= 1
            return self.env.get(name, "")
        if name and operator:
            self.pos += len(operator)
            default = self.default_word(start)
            self.depth -= 1
            return self.env.get(name, "") or default
        if ch in _BASH_FUNCTIONS:
            raise self.error(
                f"unsupported substitution '${{{name}{ch}...': only ${{VAR}} and "
                "${VAR:-default} forms are supported",
                start,
            )
        if ch in "\r\n":
            raise self.error("unterminated '${': no '}' before the end of the line", start)
        if not name:
            raise self.error(f"expected a variable name after '${{', found {ch!r}", start)
        raise self.error(f"invalid character {ch!r} in '${{{name}...': expected '}}'", start)

    def default_word(self, start: int) -> str:
        """The default text up to the closing ``}``, with nested ``${...}`` expanded."""
        text = self.text
        out: list[str] = []
        while self.pos < len(text):
            if text[self.pos] == "}":
                self.pos += 1
                return "".join(out)
            if text.startswith("${", self.pos):
                out.append(self.expression())
            else:
                # drone scans default words without its escape mode: "$$" stays "$$".
                out.append(text[self.pos])
                self.pos += 1
        raise self.error("unterminated '${': no closing '}'", start)


def substitute(text: str, env: Mapping[str, str]) -> str:
    """Expand ``${VAR}`` forms in ``text`` from ``env`` the way faas-cli does.

    Example: ``substitute("image: ${REGISTRY:-localhost:5000/otp}:${TAG}", {"TAG": "1"})``
    returns ``"image: localhost:5000/otp:1"``. Raises :class:`SubstitutionError` (a
    ``ValueError``) naming the line and column of a malformed or unterminated ``${``.
    """
    return _Parser(text, env).top()
