"""Command-line options declared once, beside the fields they set (as kronfluence's `arguments.py` keeps each
argument's help beside its field).

A field of an options dataclass that a user sets on the command line carries an `Option` in its metadata:
its help, flag and section. `tracin.cli.parsing` generates every command's parser from these fields, and the
options object from the parsed arguments; the field's default is the option's default (written nowhere
else). Light to import (no torch): parsers are built and --help answered before any heavy import.

How a field's type becomes an option:
- `int`, `float`, `str` (and Optional of them): one value; `choices` or a `registry` restrict it.
- `bool`: `--flag` / `--no-flag` (argparse's BooleanOptionalAction).
- `tuple[...]`: comma-separated values (`--models teacher,student`), or with `repeat=True` one value per use
  of the flag (`--group A=x --group B=y`); `item` converts each value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional


@dataclass(frozen=True)
class Option:
    """How one field is set on the command line.

    help: what the option does, without its default (added from the field's default, or `default_text`).
    flag: the option's name (default: --field-name); `also`: other spellings, equally valid.
    renamed: old spellings still accepted, each with a note naming the current one.
    section: the title of the help section the option is listed under (None: the command's own options).
    choices: the values allowed; registry: (module, attribute) of a registry whose names are allowed,
    imported only when an argument is checked (a registry needs torch, --help does not).
    item: text -> value for each value (after argparse, inside the command's error boundary: a TracinError
    is one line); default_from: the value when the option is not given, if not the field's default (read
    when the command runs, e.g. $TRACIN_DATA), passed through `item` too.
    repeat: a tuple field takes one value per use of the flag. positional: an argument without a flag.
    optional_value: the flag may stand alone, meaning this value (tracin-sweep --score).
    exclusive: options sharing this name exclude each other.
    """

    help: str
    flag: Optional[str] = None
    also: tuple[str, ...] = ()
    renamed: tuple[str, ...] = ()
    section: Optional[str] = None
    metavar: Optional[str] = None
    choices: Optional[tuple[str, ...]] = None
    registry: Optional[tuple[str, str]] = None
    item: Optional[Callable[[str], Any]] = None
    default_from: Optional[Callable[[], Any]] = None
    default_text: Optional[str] = None
    repeat: bool = False
    positional: bool = False
    optional_value: Optional[str] = None
    exclusive: Optional[str] = None


def option(default: Any = dataclasses.MISSING, **declaration: Any) -> Any:
    """A dataclass field set by a command-line option (see `Option` for the declaration's keys)."""
    return dataclasses.field(default=default, metadata={"option": Option(**declaration)})


def declared_options(options: type) -> Iterator[tuple[dataclasses.Field, Option]]:
    """(field, Option) of every field of an options dataclass that the command line sets, in field order."""
    for field in dataclasses.fields(options):
        if "option" in field.metadata:
            yield field, field.metadata["option"]


def flag_of(field: dataclasses.Field, declared: Option) -> str:
    """The option's flag (--field-name unless declared), or its name for a positional argument."""
    if declared.positional:
        return field.name
    return declared.flag or "--" + field.name.replace("_", "-")


def said_as_option(key: str, options: Mapping[str, type]) -> str:
    """A setting's key (config.width, score.proj_dim, per_checkpoint) as the flag that sets it: the field of
    options[PREFIX] (PREFIX: what its key has before its last dot, "" for none) named as its last name (--width,
    --proj-dim, --per-checkpoint); the key itself when no option sets it. Round 29, SM1-SM7: refusals of
    another configuration named the fields, not the options to give."""
    prefix, _, name = key.rpartition(".")
    declared = declared_options(options[prefix]) if prefix in options else ()
    flags = (flag_of(field, option) for field, option in declared if field.name == name)
    return next((flag for flag in flags if flag.startswith("--")), key)


def comma_separated(text: str) -> tuple[str, ...]:
    """ "a, b,,c" -> ("a", "b", "c"): the one list style of every command."""
    return tuple(part.strip() for part in text.split(",") if part.strip())
