"""Release notes from a TOML file, rendered by a Jinja2 template.

Usage: python3 report.py [RELEASES.toml]
"""

import sys
import tomllib
from pathlib import Path

import jinja2

HERE = Path(__file__).parent


def render(releases_file: Path) -> str:
    with releases_file.open("rb") as file:
        data = tomllib.load(file)
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    template = environment.get_template("notes.txt.j2")
    return template.render(project=data["project"], releases=data["releases"], jinja2_version=jinja2.__version__)


def main() -> int:
    releases_file = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "releases.toml"
    sys.stdout.write(render(releases_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
