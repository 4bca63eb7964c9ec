"""Parsers generated from options dataclasses (tracin.arguments), and the options read back from them.

Every command's parser is `command_parser(prog, description, OptionsA, OptionsB, ...)`: one option per
declared field, its default the field's, its help the field's. Usage errors are one line and exit code 2;
no option is abbreviated; every command answers --version. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import re
import sys
import typing
from typing import Any, Optional, Sequence

from tracin.arguments import Option, comma_separated, declared_options, flag_of
from tracin.errors import TracinError
from tracin.version import __version__


class _Formatter(argparse.HelpFormatter):
    """Shows a comma-separated option as `--models MODEL,...` (it also takes the old space-separated words)."""

    def _format_args(self, action, default_metavar):
        if action.nargs == "+" and isinstance(action.type, _Items):
            return self._metavar_formatter(action, default_metavar)(1)[0]
        return super()._format_args(action, default_metavar)


class _Assignments(argparse.Namespace):
    """A namespace that keeps every value argparse sets on it, by destination, in `_values`."""

    def __setattr__(self, name: str, value: Any) -> None:
        self.__dict__.setdefault("_values", {}).setdefault(name, []).append(value)
        super().__setattr__(name, value)


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr and exit code 2, like every other user error.
    Options are never abbreviated (`--overw` is not `--overwrite`), and every command has --version. An option
    given by two of its names (an old spelling, an alias) with two values (`--out X --scores Y`, `--arch A
    --model B`) is refused, not read as the last (round 38, O77; round 39, O04); one spelling given twice is read as the last, as argparse does (an alias with
    `--device cpu`, overridden by `--device cuda`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, formatter_class=_Formatter, **kwargs)
        self.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
        self.renamed: dict[str, str] = {}  # old spelling -> the option's flag
        self.aliases: set[str] = set()  # every name of an option but its flag (old spellings, `also`)

    def parse_known_args(self, args: Optional[Sequence[str]] = None, namespace=None):
        if namespace is not None or not self.aliases:
            return super().parse_known_args(args, namespace)
        args = list(sys.argv[1:] if args is None else args)
        parsed, extras = super().parse_known_args(args, _Assignments())
        values = parsed.__dict__.pop("_values", {})
        for action in self._actions:
            typed = _typed(action, args)
            spellings = {word.split(" ", 1)[0].split("=", 1)[0] for word in typed}
            two_names = len(spellings) > 1 and spellings & self.aliases
            if two_names and len({repr(v) for v in values.get(action.dest, ())}) > 1:
                self.error(f"{' and '.join(typed)} give one option twice, by two of its names: give it once")
        return argparse.Namespace(**vars(parsed)), extras

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def parse_args(self, args: Optional[Sequence[str]] = None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        for argument in args:  # a newline in a path or name would split every one-line message that shows it
            if any(ord(c) < 32 or ord(c) == 127 for c in argument):
                self.error(f"argument {argument!r} contains a control character (a newline, tab, ...)")
        for old in dict.fromkeys(a.split("=", 1)[0] for a in args if a.split("=", 1)[0] in self.renamed):
            # on stdout: stderr holds one line, a mistake's (red-team round 7, B00)
            print(f"{self.prog}: note: {old} is now {self.renamed[old]} (the old spelling still works)", flush=True)
        self.refuse_unknown_options(args)
        return super().parse_args(args, namespace)

    def refuse_unknown_options(self, args: Sequence[str], *others: Parser) -> None:
        """An error naming each `--option` of `args` (before a `--`) that neither this parser nor `others` takes,
        said before a missing required argument (round 42, N10, O16, O17: `--vers` was said to lack SCORES)."""
        words = list(args)[: list(args).index("--")] if "--" in args else args
        known = [self._option_string_actions, *(other._option_string_actions for other in others)]
        options = [
            w for w in words if w.startswith("--") and " " not in w
        ]  # with a space: a value, as argparse reads it
        unknown = [w for w in options if not any(w.split("=", 1)[0] in k for k in known)]
        if unknown:
            self.error(f"unrecognized arguments: {' '.join(unknown)}")


def _typed(action: argparse.Action, args: Sequence[str]) -> list[str]:
    """Each time `args` give `action`'s option, as typed (`--lr 0.1`, `--lr=0.1`, `--no-augment`)."""
    typed = []
    for i, word in enumerate(args):
        if word.split("=", 1)[0] in action.option_strings:
            takes = "=" not in word and action.nargs != 0 and i + 1 < len(args)
            typed.append(f"{word} {args[i + 1]}" if takes else word)
    return typed


class Registered:
    """An option's type that accepts a name of a registry, looked up only when an argument is checked (the
    registries need torch, which --help does not import)."""

    def __init__(self, module: str, registry: str, factories: bool = False):
        self.module, self.registry, self.factories = module, registry, factories
        self.__name__ = registry  # argparse names the type in its error

    def __call__(self, name: str) -> str:
        if self.factories and ":" in name:
            return name  # a MODULE:FUNCTION factory, imported only with the user's consent
        names = sorted(getattr(importlib.import_module(self.module), self.registry))
        if name not in names:
            raise argparse.ArgumentTypeError(f"invalid choice: {name!r} (choose from {', '.join(names)})")
        return name


class _Items:
    """The type of one word of a comma-separated option: its values, each checked against the choices."""

    def __init__(self, choices: Optional[Sequence[str]]):
        self.choices = choices
        self.__name__ = "list"

    def __call__(self, text: str) -> tuple[str, ...]:
        values = comma_separated(text)
        if len(values) != len(text.split(",")):  # "a,,b", "a," or "": a value left out by mistake
            raise argparse.ArgumentTypeError(f"{text!r} has an empty entry (comma-separated values: a,b,c)")
        for value in values:
            if self.choices is not None and value not in self.choices:
                raise argparse.ArgumentTypeError(
                    f"invalid choice: {value!r} (choose from {', '.join(self.choices)}; comma-separated)"
                )
        return values


def _dest(field: dataclasses.Field, declared: Option) -> str:
    return field.name if declared.positional else flag_of(field, declared)[2:].replace("-", "_")


def _value_type(annotation: Any) -> Any:
    """int of Optional[int]; the annotation itself otherwise."""
    if typing.get_origin(annotation) is typing.Union:
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        return kinds[0] if len(kinds) == 1 else str
    return annotation


def _shown_default(field: dataclasses.Field, declared: Option) -> Optional[str]:
    if declared.default_text is not None:
        return declared.default_text or None
    default = field.default
    if default is dataclasses.MISSING or default is None or isinstance(default, bool) or default == ():
        return None
    return ",".join(map(str, default)) if isinstance(default, tuple) else str(default)


def _argument(field: dataclasses.Field, declared: Option, kind: Any) -> tuple[list[str], dict[str, Any]]:
    """The names and keywords of argparse's add_argument for one declared field."""
    shown = _shown_default(field, declared)
    help_text = declared.help + (f" (default: {shown})" if shown else "")
    keywords: dict[str, Any] = {"help": help_text.replace("%", "%%"), "default": argparse.SUPPRESS}
    if declared.metavar:
        keywords["metavar"] = declared.metavar
    if declared.positional:
        keywords["default"] = None
        if field.default is not dataclasses.MISSING:
            keywords["nargs"] = "?"
        keywords.setdefault("metavar", field.name.upper())
        return [field.name], keywords
    names = [flag_of(field, declared), *declared.also, *declared.renamed]
    keywords["dest"] = _dest(field, declared)
    if field.default is dataclasses.MISSING:
        keywords["required"] = True
    if kind is bool:
        keywords["action"] = argparse.BooleanOptionalAction if field.default else "store_true"
    elif typing.get_origin(kind) is tuple:
        if declared.repeat:
            keywords["action"] = "append"
        else:
            keywords.update(type=_Items(declared.choices), nargs="+")
            keywords.setdefault("metavar", "A,B,...")
    else:
        if declared.registry:
            keywords["type"] = Registered(*declared.registry, factories=":" in (declared.metavar or ""))
        elif kind in (int, float):
            keywords["type"] = kind
        if declared.choices:
            keywords["choices"] = declared.choices
        if declared.optional_value is not None:
            keywords.update(nargs="?", const=declared.optional_value)
    return names, keywords


def add_options(parser: Parser, options: type) -> None:
    """One argument per declared field of `options`, in its group's section of the help."""
    hints = typing.get_type_hints(options)
    sections: dict[Optional[str], Any] = {
        group.title: group for group in parser._action_groups if group.title not in ("options", "positional arguments")
    }
    exclusive: dict[str, Any] = {}
    for field, declared in declared_options(options):
        names, keywords = _argument(field, declared, _value_type(hints[field.name]))
        if declared.section is not None and declared.section not in sections:
            sections[declared.section] = parser.add_argument_group(declared.section)
        target = sections.get(declared.section, parser)
        if declared.exclusive:
            if declared.exclusive not in exclusive:
                exclusive[declared.exclusive] = target.add_mutually_exclusive_group()
            target = exclusive[declared.exclusive]
        target.add_argument(*names, **keywords)
        parser.renamed.update(dict.fromkeys(declared.renamed, names[0]))
        parser.aliases.update(names[1:])


def command_parser(prog: str, description: str, *options: type, epilog: Optional[str] = None) -> Parser:
    """The parser of a command whose options are the declared fields of `options`, in that order."""
    parser = Parser(prog=prog, description=description, epilog=epilog)
    for each in options:
        add_options(parser, each)
    return parser


def options_from(options: type, arguments: argparse.Namespace, prog: str, **fixed: Any) -> Any:
    """The `options` object the parsed arguments describe: a given option's value, converted by its `item`;
    an option not given keeps the field's default (or its `default_from`). Validated by the dataclass."""
    values: dict[str, Any] = {}
    for field, declared in declared_options(options):
        dest = _dest(field, declared)
        if getattr(arguments, dest, None) is not None or (hasattr(arguments, dest) and not declared.positional):
            value = getattr(arguments, dest)
        elif declared.default_from is not None:
            value = declared.default_from()
        else:
            continue
        values[field.name] = _converted(field, declared, value, prog)
    try:
        return options(**values, **fixed)
    except TracinError as error:  # a configuration names its fields; said as the options that set them (W05)
        error.args = (_as_flags(str(error), options),)
        raise


def _as_flags(message: str, options: type) -> str:
    """`message` with each field name of `options` it starts with, or holds as a Python name (proj_dim),
    said as its flag: ScoreConfig's `proj_dim must be positive` comes from tracin-score's --proj-dim."""
    for field, declared in declared_options(options):
        if not declared.positional:
            where = "(?<![\\w\\-'\"/@.=])" if "_" in field.name else "^"  # not inside a value quoted or a path
            message = re.sub(rf"{where}{field.name}(?![\w\-'\"/@.=])", flag_of(field, declared), message)
    return message


def _converted(field: dataclasses.Field, declared: Option, value: Any, prog: str) -> Any:
    convert = declared.item or (lambda v: v)
    if isinstance(value, list):
        if not declared.repeat:
            if len(value) > 1:
                flag = flag_of(field, declared)
                print(
                    f"{prog}: note: {flag} takes comma-separated values: read "
                    f"{' '.join(map(','.join, value))!r} as {','.join(v for words in value for v in words)}",
                    flush=True,
                )  # on stdout, as every note: stderr holds one line, a mistake's
            value = [v for words in value for v in words]
            twice = [v for v in dict.fromkeys(value) if value.count(v) > 1]
            if twice:
                raise TracinError(f"{flag_of(field, declared)} names {', '.join(twice)} twice")
        return tuple(convert(v) for v in value)
    if isinstance(value, tuple):
        return tuple(convert(v) for v in value)
    blank = isinstance(value, str) and not value.strip()  # round 25, M28: '' read as the path '.', "a folder"
    if blank and declared.optional_value != "":  # one whose value may be left out takes it (round 26, SW5: --score)
        name = flag_of(field, declared) if not declared.positional else field.name.upper()
        raise TracinError(f"{name} is given an empty value")
    return convert(value) if value is not None else value


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # a table cell's own bar, even inside `code`


def options_markdown(parser: Parser) -> str:
    """A command's options as a Markdown table (docs/cli.md's generated parts), from its parser."""
    lines = ["| option | what it does |", "| --- | --- |"]
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        names = " / ".join(f"`{name}`" for name in action.option_strings if name not in parser.renamed) or (
            f"`{action.metavar or action.dest.upper()}`"
        )
        if action.metavar and action.option_strings and action.nargs != 0:
            names += f" `{action.metavar}`"
        elif action.choices and action.option_strings:
            names += f" `{'|'.join(map(str, action.choices))}`"
        text = (action.help or "").replace("%%", "%")
        lines.append(f"| {_cell(names)} | {_cell(text)} |")
    return "\n".join(lines)
