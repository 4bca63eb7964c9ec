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


def option_field(key: str, options: Mapping[str, type | str]) -> Optional[tuple[dataclasses.Field, str]]:
    """(field, flag) of the option that sets a setting's key (config.width, score.proj_dim, per_checkpoint):
    the field of options[PREFIX] (PREFIX: what the key has before its last dot, "" for none) named as its last
    name; None when no option sets it."""
    prefix, _, name = key.rpartition(".")
    kind = options.get(prefix)
    declared = declared_options(kind) if isinstance(kind, type) else ()
    found = ((field, flag_of(field, option)) for field, option in declared if field.name == name)
    return next((pair for pair in found if pair[1].startswith("--")), None)


def said_as_option(key: str, options: Mapping[str, type | str]) -> str:
    """A setting's key (config.width, score.proj_dim, per_checkpoint) as the flag that sets it (--width,
    --proj-dim, --per-checkpoint: option_field); a key `options` maps to a flag, or one under it
    (plan.conditions.student under plan.conditions: a setting the option derives), as that flag; the key
    itself when no option sets it. Round 29, SM1-SM7 and round 30, S4, T2, VV2, VV3: refusals of another
    configuration named the fields, not the options to give."""
    found = option_field(key, options)
    return derived_flag(key, options) or (found[1] if found else key)


def derived_flag(key: str, options: Mapping[str, type | str]) -> Optional[str]:
    """The flag `options` maps the key, or a key above it, to: a setting that option derives (with others,
    such as --seed); None for any other key."""
    parts = key.split(".")
    derived = (options.get(".".join(parts[:n])) for n in range(len(parts), 0, -1))
    return next((said for said in derived if isinstance(said, str)), None)


def said_value(key: str, settings: Mapping[str, Any], options: Mapping[str, type | str]) -> Any:
    """settings[key], or the default of the option that sets it where the settings leave it out (a default
    some files omit, so that older files resume: round 30, S6 showed it as None)."""
    if key in settings:
        return settings[key]
    found = option_field(key, options)
    return found[0].default if found and found[0].default is not dataclasses.MISSING else None


def said_typed(key: str, settings: Mapping[str, Any], options: Mapping[str, type | str]) -> str:
    """settings[key] (said_value) as a user types it, quoted: a list of values joined as its option takes them
    ('raw,cosine'; --group's NAME=PREFIX,... uses apart: 'head=fc stem=conv1'); a value equal to the default of
    an option whose help names that default in words, as those words (every parameter); any other as its
    repr. Round 31, OS4, OS9, OS13: lists were said as Python reprs ([('head', ('fc',))], [] for every
    parameter)."""
    value = said_value(key, settings, options)
    found = option_field(key, options)
    declared = found[0].metadata["option"] if found else None
    if declared is not None and declared.default_text and _as_lists(value) == _as_lists(found[0].default):
        return declared.default_text
    if value is None:  # an option left unset (--proj-dim outside projected mode), not Python's None (round 36, C102)
        return "unset"
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return repr(",".join(value))
    if isinstance(value, (list, tuple)) and all(_is_group(item) for item in value):
        return repr(" ".join(f"{name}={','.join(prefixes)}" for name, prefixes in value))
    return repr(value)


def _as_lists(value: Any) -> Any:
    """Tuples as lists, nested (a setting read back from a file holds lists where the option holds tuples)."""
    return [_as_lists(item) for item in value] if isinstance(value, (list, tuple)) else value


def _is_group(item: Any) -> bool:
    """Whether `item` is one --group value: (NAME, (PREFIX, ...))."""
    return (
        isinstance(item, (list, tuple))
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], (list, tuple))
        and all(isinstance(prefix, str) for prefix in item[1])
    )


def comma_separated(text: str) -> tuple[str, ...]:
    """ "a, b,,c" -> ("a", "b", "c"): the one list style of every command."""
    return tuple(part.strip() for part in text.split(",") if part.strip())
